//! `cortex embed`: vectors for texts, from the arguments or one text per line of stdin, as JSON
//! lines (`{"index", "text", "embedding"}`) for shell pipelines.

use std::io::{BufRead, IsTerminal};

use serde_json::json;

use crate::client::EndpointArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// Embedding model (see `cortex models`, kind embedder)
    pub model: String,
    /// Texts to embed; without any, one text per line of standard input
    pub texts: Vec<String>,
    /// Cut texts longer than the model reads instead of failing
    #[arg(long)]
    pub truncate: bool,
    /// Texts per request (the neuron batches them; at most 2048)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=2048))]
    pub batch: u16,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

pub async fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let texts = if args.texts.is_empty() {
        if std::io::stdin().is_terminal() {
            return crate::error::user("give texts as arguments, or pipe one text per line into `cortex embed MODEL`");
        }
        std::io::stdin().lock().lines().collect::<Result<Vec<_>, _>>()?.into_iter().filter(|l| !l.is_empty()).collect()
    } else {
        args.texts.clone()
    };
    if texts.is_empty() {
        return crate::error::user("standard input held no text to embed");
    }
    let client = args.endpoint.connect().await?;
    let mut out = String::new();
    for (n, chunk) in texts.chunks(args.batch as usize).enumerate() {
        let body = json!({"model": args.model, "input": chunk, "encoding_format": "float", "truncate": args.truncate});
        let resp = client.post_json("/v1/embeddings", &body).await?;
        let data = resp["data"].as_array().cloned().unwrap_or_default();
        if data.len() != chunk.len() {
            anyhow::bail!("the neuron answered {} vectors for {} texts", data.len(), chunk.len());
        }
        for (i, (text, d)) in chunk.iter().zip(data).enumerate() {
            let line = json!({"index": n * args.batch as usize + i, "text": text, "embedding": d["embedding"]});
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    crate::printer::emit(&out)
}
