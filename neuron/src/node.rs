//! The local node service: the one path by which this node runs a generation or acts on one of
//! its models, whoever asked. The HTTP gateway calls it for requests it serves itself, and the
//! mesh RPC server for requests a peer forwards, so both get the same loading, tokenizing,
//! context checks, queueing and logging.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use cortex_proto::embed::{EmbedRequest, EmbedResult};
use cortex_proto::eviction::KeepAlive;
use cortex_proto::generate::{ChatMessage, ErrorKind, Event, GenerateError, GenerateRequest};
use cortex_proto::model::AdminAction;
use cortex_proto::prefix::{session_key, PrefixKey, PrefixSummary};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::embed::EmbedInputError;
use crate::engine::Loaded;
use crate::lifecycle::{Lease, Models};

/// This node's models, as a service.
pub struct Node {
    models: Arc<Models>,
    /// What this node served per model, for cache-aware routing (published in its placement),
    /// with the load it was served by: a summary outlives neither an unload nor a reload, whose
    /// cache starts empty.
    prefixes: std::sync::Mutex<HashMap<String, (Weak<Loaded>, PrefixSummary)>>,
    served: std::sync::atomic::AtomicU64,
    /// Conversations of the Responses API answered through this node, for `previous_response_id`.
    pub responses: ResponseStore,
}

/// Conversations kept for `previous_response_id`.
pub const RESPONSE_STORE_CAPACITY: usize = 1024;

/// A bounded store of finished conversations by response id; the oldest goes first. It lives in
/// memory: a restart forgets it, as the API's `store` allows (clients that must not depend on it
/// replay items with `store: false`).
#[derive(Default)]
pub struct ResponseStore {
    inner: std::sync::Mutex<Kept>,
}

/// Conversations by id, and their ids oldest first.
type Kept = (HashMap<String, Vec<ChatMessage>>, VecDeque<String>);

impl ResponseStore {
    pub fn get(&self, id: &str) -> Option<Vec<ChatMessage>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.get(id).cloned()
    }

    pub fn put(&self, id: String, conversation: Vec<ChatMessage>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(id.clone(), conversation).is_none() {
            order.push_back(id);
        }
        while order.len() > RESPONSE_STORE_CAPACITY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// A generation running on this node.
pub struct Local {
    /// `Started`, text, then one `Done` or `Error`. Dropping it cancels the generation.
    pub events: UnboundedReceiver<Event>,
    /// Keeps the model loaded until the answer ends: hold it as long as `events`.
    pub lease: Lease,
}

impl Node {
    pub fn new(models: Arc<Models>) -> Self {
        Self { models, responses: ResponseStore::default(), prefixes: Default::default(), served: Default::default() }
    }

    /// The summary of the prefixes this node served for `model` (sorted hashes, bounded).
    pub fn prefix_summary(&self, model: &str) -> Vec<u64> {
        let held = self.prefixes.lock().unwrap_or_else(|p| p.into_inner());
        held.get(model).filter(|(load, _)| load.strong_count() > 0).map(|(_, s)| s.hashes()).unwrap_or_default()
    }

    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    /// Loads `request.model` if needed, tokenizes the prompt off the async workers, checks it
    /// against the context and queues it on the model's scheduler.
    pub async fn generate(
        &self,
        request: &GenerateRequest,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Local, GenerateError> {
        let lease = self.models.acquire(&request.model, keep_alive).await?;
        let id = lease.id().to_string();
        let (model, r, i) = (lease.model.clone(), request.clone(), id.clone());
        let (prepared, key) = tokio::task::spawn_blocking(move || {
            let prepared = model.generator(&i)?.prepare(&r)?;
            Ok::<_, GenerateError>((prepared, PrefixKey::of(&r)))
        })
        .await
        .map_err(|e| GenerateError::new(ErrorKind::Internal, format!("tokenizer task failed: {e}")))??;
        tracing::info!(request = %request.id, model = %id, prompt_tokens = prepared.prompt.len(), max_tokens = prepared.max_tokens, "generating");
        let events = lease.model.generator(&id)?.submit(request, prepared)?;
        // Recorded once queued: a refused request leaves nothing in the cache to route to.
        let now = self.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = request.session.as_deref().map(session_key);
        let load = Arc::downgrade(&lease.model);
        let mut held = self.prefixes.lock().unwrap_or_else(|p| p.into_inner());
        let entry = held.entry(id).or_insert_with(|| (load.clone(), PrefixSummary::default()));
        if !Weak::ptr_eq(&entry.0, &load) {
            *entry = (load, PrefixSummary::default());
        }
        entry.1.record(&key, session, now);
        drop(held);
        Ok(Local { events, lease })
    }

    /// Loads `request.model` if needed, tokenizes the inputs off the async workers and embeds
    /// them (sharing the model's rounds with concurrent requests).
    pub async fn embed(
        &self,
        request: &EmbedRequest,
        keep_alive: Option<KeepAlive>,
    ) -> Result<EmbedResult, GenerateError> {
        let lease = self.models.acquire(&request.model, keep_alive).await?;
        let id = lease.id().to_string();
        let dims = lease.model.embedder(&id)?.dims();
        if let Some(d) = request.dimensions.filter(|&d| d != dims) {
            return Err(GenerateError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "`dimensions` = {d}: `{id}` gives {dims}-dimensional vectors and was not trained to be shortened"
                ),
            ));
        }
        let (model, r, i) = (lease.model.clone(), request.clone(), id.clone());
        let inputs = tokio::task::spawn_blocking(move || {
            model.embedder(&i)?.prepare(&r.inputs, r.truncate).map_err(|(n, e)| {
                let hint = match e {
                    EmbedInputError::TooLong(_) => " (send \"truncate\": true to cut it)",
                    _ => "",
                };
                GenerateError::new(ErrorKind::InvalidRequest, format!("`input[{n}]`: {e}{hint}"))
            })
        })
        .await
        .map_err(|e| GenerateError::new(ErrorKind::Internal, format!("tokenizer task failed: {e}")))??;
        let prompt_tokens = inputs.iter().map(Vec::len).sum::<usize>() as u32;
        tracing::info!(request = %request.id, model = %id, inputs = inputs.len(), tokens = prompt_tokens, "embedding");
        let vectors = lease
            .model
            .embedder(&id)?
            .embed(inputs)
            .await
            .map_err(|e| GenerateError::new(ErrorKind::Internal, format!("embedding failed: {e}")))?;
        Ok(EmbedResult { model: id, vectors, prompt_tokens })
    }

    /// Carries out an operator's action on one of this node's models.
    pub async fn admin(&self, action: AdminAction, model: &str) -> Result<(), GenerateError> {
        tracing::info!(action = action.as_str(), model = %model, "admin");
        match action {
            AdminAction::Load => self.models.load(model).await,
            AdminAction::Unload => self.models.unload(model),
            AdminAction::Pin => self.models.pin(model).await,
            AdminAction::Unpin => self.models.unpin(model),
        }
    }
}
