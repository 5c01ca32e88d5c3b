//! `models.toml`: the models this node may serve (where each comes from, what it costs, how
//! long it stays) and the tier aliases. Every problem in the file is reported at once, each
//! with its line and key, before the neuron starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cortex_proto::catalogue::{self, Aliases};
use cortex_proto::eviction::KeepAlive;
use cortex_proto::generate::SamplingParams;
use toml::Spanned;

/// Where a configured model's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file or safetensors directory on this host.
    Path(PathBuf),
    /// A hub repository and, for GGUF, the file in it; fetched into the models directory.
    Hub { repo: String, file: Option<String> },
}

/// One `[models."ID"]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub id: String,
    pub source: ModelSource,
    /// Overrides the estimated memory cost.
    pub memory: Option<u64>,
    pub priority: i32,
    pub pinned: bool,
    pub keep_alive: KeepAlive,
    /// Caps this model's context (tokens), below what it was trained for.
    pub context: Option<usize>,
    /// A chat template (Jinja) replacing the file's own: the text itself, or read from a file
    /// when the value names one.
    pub chat_template: Option<String>,
    /// Sampling defaults (`temperature`, `top_p`, `top_k`, `repetition_penalty`) for requests
    /// that leave them unset.
    pub sampling: SamplingParams,
    /// Bytes of KV blocks this model's prefix cache may keep (0: none).
    pub kv_cache_bytes: Option<u64>,
}

impl ModelEntry {
    /// `id` from `source`, every other setting at its default.
    fn new(id: String, source: ModelSource) -> Self {
        Self {
            id,
            source,
            memory: None,
            priority: 0,
            pinned: false,
            keep_alive: KeepAlive::DEFAULT,
            context: None,
            chat_template: None,
            sampling: SamplingParams::default(),
            kv_cache_bytes: None,
        }
    }
}

/// The parsed file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelsFile {
    pub models: Vec<ModelEntry>,
    pub aliases: Aliases,
}

const MODEL_KEYS: &[&str] = &[
    "path",
    "hub",
    "file",
    "memory",
    "priority",
    "pinned",
    "keep_alive",
    "context",
    "chat_template",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "kv_cache_bytes",
];

type RawModels = BTreeMap<Spanned<String>, Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    aliases: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

/// Parses a byte size: `300MiB`, `2GiB`, `1.5GB`, `512M`, or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// A `chat_template` value: Jinja text as given, or, when it reads as a path (no `{`), the
/// contents of that file (a relative path is beside models.toml).
fn template_text(value: &str, beside: Option<&Path>) -> Result<String, String> {
    if value.contains('{') {
        return Ok(value.to_string());
    }
    let path = beside.map_or_else(|| PathBuf::from(value), |dir| dir.join(value));
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read the template file {}: {e}", path.display()))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl ModelsFile {
    /// With no file: the built-in catalogue (its models are looked for in the models directory).
    pub fn builtin() -> Self {
        let models = catalogue::BUILTIN_MODELS
            .iter()
            .map(|m| {
                ModelEntry::new(
                    m.id.to_string(),
                    ModelSource::Hub { repo: m.hub_repo.into(), file: m.hub_file().map(Into::into) },
                )
            })
            .collect();
        Self { models, aliases: Aliases::builtin() }
    }

    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `text`; errors are `FILE:LINE: key: problem`, all of them.
    pub fn parse(text: &str, file: &str) -> Result<Self, Vec<String>> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            vec![format!("{file}:{line}: {}", e.message())]
        })?;
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, key: &str, msg: String| {
            errors.push(format!("{file}:{}: {key}: {msg}", line_of(text, span.start)))
        };
        let mut models = Vec::new();
        for (id, table) in &raw.models {
            let key = |k: &str| format!("models.\"{}\".{k}", id.get_ref());
            let mut entry = ModelEntry::new(id.get_ref().clone(), ModelSource::Path(PathBuf::new()));
            let (mut path, mut hub, mut file_name) = (None, None, None);
            for (k, v) in table.get_ref() {
                let span = v.span();
                let name = k.get_ref().as_str();
                let value = v.get_ref();
                match name {
                    "path" | "hub" | "file" => match value.as_str() {
                        Some(s) if !s.is_empty() => match name {
                            "path" => path = Some(PathBuf::from(s)),
                            "hub" => hub = Some(s.to_string()),
                            _ => file_name = Some(s.to_string()),
                        },
                        _ => err(span, &key(name), "expected a non-empty string".into()),
                    },
                    "memory" => {
                        match value.as_str().and_then(parse_size).or(value.as_integer().map(|i| i.max(0) as u64)) {
                            Some(n) if n > 0 => entry.memory = Some(n),
                            _ => err(span, &key(name), format!("expected a size such as \"300MiB\", got {value}")),
                        }
                    }
                    "kv_cache_bytes" => {
                        match value
                            .as_str()
                            .and_then(parse_size)
                            .or(value.as_integer().and_then(|i| u64::try_from(i).ok()))
                        {
                            Some(n) => entry.kv_cache_bytes = Some(n),
                            _ => err(
                                span,
                                &key(name),
                                format!("expected a size such as \"512MiB\" (0: no prefix cache), got {value}"),
                            ),
                        }
                    }
                    "priority" => match value.as_integer().and_then(|i| i32::try_from(i).ok()) {
                        Some(p) => entry.priority = p,
                        None => err(span, &key(name), format!("expected an integer, got {value}")),
                    },
                    "context" => match value.as_integer().and_then(|i| usize::try_from(i).ok()) {
                        Some(n) if n >= 16 => entry.context = Some(n),
                        _ => err(span, &key(name), format!("expected a number of tokens (16 or more), got {value}")),
                    },
                    "chat_template" => match value.as_str() {
                        Some(s) if !s.trim().is_empty() => match template_text(s, Path::new(file).parent()) {
                            Ok(t) => entry.chat_template = Some(t),
                            Err(e) => err(span, &key(name), e),
                        },
                        _ => err(span, &key(name), "expected a template, or the path of a file holding one".into()),
                    },
                    "temperature" | "top_p" | "repetition_penalty" => {
                        let (lo, hi) = match name {
                            "temperature" => (0.0, 2.0),
                            "top_p" => (0.0, 1.0),
                            _ => (0.5, 2.0),
                        };
                        let v = value.as_float().or(value.as_integer().map(|i| i as f64));
                        match v.filter(|v| (lo..=hi).contains(v)) {
                            Some(v) => match name {
                                "temperature" => entry.sampling.temperature = Some(v as f32),
                                "top_p" => entry.sampling.top_p = Some(v as f32),
                                _ => entry.sampling.repetition_penalty = Some(v as f32),
                            },
                            None => err(span, &key(name), format!("expected a number from {lo} to {hi}, got {value}")),
                        }
                    }
                    "top_k" => match value.as_integer().and_then(|i| u32::try_from(i).ok()) {
                        Some(k) => entry.sampling.top_k = Some(k),
                        None => err(span, &key(name), format!("expected a whole number, got {value}")),
                    },
                    "pinned" => match value.as_bool() {
                        Some(b) => entry.pinned = b,
                        None => err(span, &key(name), format!("expected true or false, got {value}")),
                    },
                    "keep_alive" => {
                        let json = match value {
                            toml::Value::String(s) => serde_json::Value::String(s.clone()),
                            toml::Value::Integer(i) => serde_json::Value::from(*i),
                            toml::Value::Float(f) => serde_json::Value::from(*f),
                            _ => serde_json::Value::Null,
                        };
                        match KeepAlive::parse(&json) {
                            Ok(k) => entry.keep_alive = k,
                            Err(e) => err(span, &key(name), e),
                        }
                    }
                    other => {
                        err(k.span(), &key(other), format!("unknown key (expected one of: {})", MODEL_KEYS.join(", ")))
                    }
                }
            }
            entry.source = match (path, hub) {
                (Some(p), None) => ModelSource::Path(p),
                (None, Some(repo)) => ModelSource::Hub { repo, file: file_name },
                (Some(_), Some(_)) => {
                    err(table.span(), &key("path"), "give either path or hub, not both".into());
                    continue;
                }
                (None, None) => match catalogue::known_model(id.get_ref()) {
                    Some(k) => ModelSource::Hub { repo: k.hub_repo.into(), file: k.hub_file().map(Into::into) },
                    None => {
                        err(
                            table.span(),
                            &format!("models.\"{}\"", id.get_ref()),
                            "needs a path or a hub repository".into(),
                        );
                        continue;
                    }
                },
            };
            models.push(entry);
        }
        let mut aliases = Aliases::default();
        for (alias, target) in &raw.aliases {
            match target.get_ref().as_str() {
                Some(t) if !t.is_empty() => {
                    if let Err(e) = aliases.insert(alias.get_ref().clone(), t) {
                        err(alias.span(), &format!("aliases.\"{}\"", alias.get_ref()), e);
                    }
                }
                _ => err(target.span(), &format!("aliases.\"{}\"", alias.get_ref()), "expected a model id".into()),
            }
        }
        for (alias, target) in aliases.all() {
            let resolved = aliases.resolve(target);
            if !models.iter().any(|m| m.id == resolved) && catalogue::known_model(resolved).is_none() {
                let span =
                    raw.aliases.iter().find(|(a, _)| a.get_ref() == alias).map(|(_, t)| t.span()).unwrap_or(0..0);
                err(span, &format!("aliases.\"{alias}\""), format!("`{resolved}` is not a model in this file"));
            }
        }
        if errors.is_empty() {
            Ok(Self { models, aliases })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_file_parses() {
        let text = r#"
[models."tiny"]
path = "/srv/tiny.gguf"
memory = "300MiB"
priority = 5
pinned = true
keep_alive = "30s"

[models."qwen"]
hub = "Qwen/Qwen3-0.6B"

[aliases]
"helexa/small" = "tiny"
"claude-*" = "helexa/small"
"#;
        let f = ModelsFile::parse(text, "models.toml").unwrap();
        assert_eq!(f.aliases.resolve("claude-sonnet-4-5-20250929"), "tiny");
        let tiny = f.models.iter().find(|m| m.id == "tiny").unwrap();
        assert_eq!(tiny.memory, Some(300 * 1024 * 1024));
        assert!(tiny.pinned);
        assert_eq!(tiny.priority, 5);
        assert_eq!(tiny.keep_alive, KeepAlive::For(std::time::Duration::from_secs(30)));
        assert_eq!(f.aliases.resolve("helexa/small"), "tiny");
        let qwen = f.models.iter().find(|m| m.id == "qwen").unwrap();
        assert_eq!(qwen.source, ModelSource::Hub { repo: "Qwen/Qwen3-0.6B".into(), file: None });
    }

    #[test]
    fn every_error_is_listed_with_its_line_and_key() {
        let text = r#"[models."a"]
path = "/x.gguf"
priority = "high"
colour = "blue"

[models."b"]
keep_alive = "soon"

[aliases]
"helexa/large" = "nowhere"
"gpt-[" = "a"
"#;
        let errs = ModelsFile::parse(text, "models.toml").unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("models.toml:3: models.\"a\".priority"), "{all}");
        assert!(all.contains("models.toml:4: models.\"a\".colour: unknown key"), "{all}");
        assert!(all.contains("models.toml:7: models.\"b\".keep_alive"), "{all}");
        assert!(all.contains("models.\"b\": needs a path or a hub repository"), "{all}");
        assert!(all.contains("models.toml:10: aliases.\"helexa/large\""), "{all}");
        assert!(all.contains("models.toml:11: aliases.\"gpt-[\": `gpt-[` is not a valid glob"), "{all}");
        assert_eq!(errs.len(), 6, "{all}");
    }

    #[test]
    fn a_model_s_context_and_chat_template_come_inline_or_from_a_file() {
        let dir = std::env::temp_dir().join(format!("cortex-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("chat.jinja"), "{{ messages[0].content }}").unwrap();
        let text = r#"[models."a"]
path = "/a.gguf"
context = 2048
chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
temperature = 0
top_k = 40
repetition_penalty = 1.1

[models."b"]
path = "/b.gguf"
chat_template = "chat.jinja"
"#;
        let f = ModelsFile::parse(text, dir.join("models.toml").to_str().unwrap()).unwrap();
        let a = f.models.iter().find(|m| m.id == "a").unwrap();
        assert_eq!(a.context, Some(2048));
        assert_eq!(a.chat_template.as_deref(), Some("{% for m in messages %}{{ m.content }}{% endfor %}"));
        let s = &a.sampling;
        assert_eq!((s.temperature, s.top_p, s.top_k, s.repetition_penalty), (Some(0.0), None, Some(40), Some(1.1)));
        let b = f.models.iter().find(|m| m.id == "b").unwrap();
        assert_eq!((b.context, b.chat_template.as_deref()), (None, Some("{{ messages[0].content }}")));
        let bad = "[models.\"c\"]\npath = \"/c.gguf\"\ncontext = \"big\"\nchat_template = \"missing.jinja\"\ntemperature = 3\n";
        let all = ModelsFile::parse(bad, dir.join("models.toml").to_str().unwrap()).unwrap_err().join("\n");
        assert!(all.contains(":3: models.\"c\".context: expected a number of tokens"), "{all}");
        assert!(all.contains(":4: models.\"c\".chat_template: cannot read the template file"), "{all}");
        assert!(all.contains(":5: models.\"c\".temperature: expected a number from 0 to 2, got 3"), "{all}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = ModelsFile::parse("[models.\"a\"]\npath = \n", "m.toml").unwrap_err();
        assert!(errs[0].starts_with("m.toml:2:"), "{errs:?}");
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../../examples/models.example.toml");
        let f = ModelsFile::parse(text, "models.example.toml").unwrap();
        assert_eq!(f.models.len(), 3);
        assert_eq!(f.aliases.resolve("helexa/large"), "local-llama");
        let smol = f.models.iter().find(|m| m.id == "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert!(smol.pinned);
        assert_eq!(smol.memory, Some(300 << 20));
        let llama = f.models.iter().find(|m| m.id == "local-llama").unwrap();
        assert_eq!(llama.kv_cache_bytes, Some(256 << 20));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("300MiB"), Some(300 << 20));
        assert_eq!(parse_size("1.5GiB"), Some(1536 << 20));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("lots"), None);
    }
}
