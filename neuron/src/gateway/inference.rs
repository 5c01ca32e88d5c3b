//! The generation routes. Each parses its dialect, translates to the neutral request, tokenizes
//! off the async workers, queues on the model's scheduler, then answers as one JSON body or as
//! SSE. Dropping the response (client gone) drops the event receiver, which stops generation.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cortex_proto::generate::{ErrorKind, Event, GenerateError, GenerateRequest};
use cortex_proto::translate::{
    self, AnthropicStream, Collected, OpenAiChatStream, OpenAiCompletionStream, ReplyShape, SseFrame,
};
use cortex_proto::{anthropic, openai, responses};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;

use super::responses::Responding;
use super::{ApiError, AppState, Dialect};
use crate::lifecycle::Lease;
use crate::metrics::Metrics;

/// A streaming renderer for one dialect.
pub(super) trait Render: Send + 'static {
    fn frames(&mut self, ev: &Event) -> Vec<SseFrame>;
    /// Every choice has ended (or an error ended the stream).
    fn finished(&self) -> bool;
}

macro_rules! render {
    ($($t:ty),*) => {$(
        impl Render for $t {
            fn frames(&mut self, ev: &Event) -> Vec<SseFrame> {
                self.on_event(ev)
            }
            fn finished(&self) -> bool {
                self.is_finished()
            }
        }
    )*};
}

render!(OpenAiChatStream, OpenAiCompletionStream, AnthropicStream);

/// Which response a generation route produces.
#[derive(Clone)]
pub(super) enum Route {
    Chat { include_usage: bool },
    Completion { include_usage: bool },
    Messages,
    Responses(Arc<Responding>),
}

impl Route {
    fn dialect(&self) -> Dialect {
        match self {
            Route::Messages => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    fn id_prefix(&self) -> &'static str {
        match self {
            Route::Chat { .. } => "chatcmpl-",
            Route::Completion { .. } => "cmpl-",
            Route::Messages => "msg_",
            Route::Responses(_) => "resp_",
        }
    }

    /// Bounded `api` metric label.
    fn label(&self) -> &'static str {
        match self {
            Route::Chat { .. } => "chat_completions",
            Route::Completion { .. } => "completions",
            Route::Messages => "messages",
            Route::Responses(_) => "responses",
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() >> 32)
}

pub(super) fn parse<T: DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    d: Dialect,
) -> Result<T, ApiError> {
    st.authorize(headers, d)?;
    let bytes = body.map_err(|r| ApiError::from_body(d, r))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::from_json(d, e))
}

/// Records one request's outcome in the metrics exactly once, and holds the model's lease for
/// as long as the response lives.
struct Observer {
    _lease: Option<Lease>,
    metrics: Metrics,
    model: String,
    api: &'static str,
    start: Instant,
    recorded: bool,
    /// Choices asked for, and still running: the request is done at the last one's `Done`.
    choices: u32,
    pending: u32,
}

impl Observer {
    fn see(&mut self, ev: &Event) {
        match ev {
            Event::Done { usage, timings, .. } => {
                let m = &self.metrics;
                let model = self.model.as_str();
                if self.pending == self.choices {
                    // The prompt is counted once however many choices share it.
                    m.prompt_tokens.with_label_values(&[model]).inc_by(usage.prompt_tokens.into());
                }
                m.completion_tokens.with_label_values(&[model]).inc_by(usage.completion_tokens.into());
                m.ttft.with_label_values(&[model]).observe(timings.ttft_ms / 1e3);
                if timings.decode_tok_s > 0.0 {
                    m.decode_rate.with_label_values(&[model]).observe(timings.decode_tok_s);
                }
                self.pending = self.pending.saturating_sub(1);
                if self.pending == 0 {
                    self.record("200");
                }
            }
            Event::Error { error } => self.record(&error.kind.http_status().to_string()),
            _ => {}
        }
    }

    fn record(&mut self, status: &str) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.metrics.requests.with_label_values(&[&self.model, self.api, status]).inc();
        self.metrics.latency.with_label_values(&[&self.model, self.api]).observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // Nothing recorded means the client left before the end (nginx's 499).
        self.record("499");
    }
}

/// Headers agent clients name their conversation with: `x-session-id`, and Claude Code's own.
const SESSION_HEADERS: [&str; 2] = ["x-session-id", "x-claude-code-session-id"];

/// `make` with the session a header names as the request's routing hint (over one in the body).
pub(super) fn in_session(
    headers: &HeaderMap,
    make: impl FnOnce(String, String) -> Result<GenerateRequest, GenerateError>,
) -> impl FnOnce(String, String) -> Result<GenerateRequest, GenerateError> {
    let session = SESSION_HEADERS
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok().filter(|v| !v.is_empty()).map(str::to_string));
    move |id, model| {
        let mut request = make(id, model)?;
        if session.is_some() {
            request.session = session;
        }
        Ok(request)
    }
}

/// Runs a generation request end to end and answers in `route`'s shape; `id` is the response's.
pub(super) async fn generate(
    st: &AppState,
    route: &Route,
    id: String,
    asked: &str,
    stream: bool,
    keep_alive: Option<&serde_json::Value>,
    make: impl FnOnce(String, String) -> Result<GenerateRequest, GenerateError>,
) -> Result<Response, ApiError> {
    let d = route.dialect();
    let api_err = |error| ApiError { dialect: d, error };
    let start = Instant::now();
    let opened = super::route::open(st, asked, keep_alive, id, make).await.map_err(api_err)?;
    let (rx, id, shape) = (opened.events, opened.id, opened.shape);
    let mut obs = Observer {
        choices: shape.n,
        pending: shape.n,
        _lease: opened.lease,
        metrics: st.metrics.clone(),
        model: opened.model,
        api: route.label(),
        start,
        recorded: false,
    };
    let created = unix_now();
    if stream {
        let render: Box<dyn Render> = match route {
            Route::Chat { include_usage } => {
                Box::new(OpenAiChatStream::new(id, asked.to_string(), created, *include_usage, shape))
            }
            Route::Completion { include_usage } => {
                Box::new(OpenAiCompletionStream::new(id, asked.to_string(), created, *include_usage, shape))
            }
            Route::Messages => Box::new(AnthropicStream::new(id.clone(), asked.to_string())),
            Route::Responses(ctx) => Box::new(super::responses::Stream::new(ctx.clone(), id, created)),
        };
        return Ok(sse(render, rx, obs));
    }
    let c = collect(rx, &mut obs, shape).await;
    if let Some(error) = c.error {
        return Err(api_err(error));
    }
    Ok(match route {
        Route::Chat { .. } => Json(translate::chat_completion(&id, asked, created, &c)).into_response(),
        Route::Completion { .. } => Json(translate::completion(&id, asked, created, &c)).into_response(),
        Route::Messages => Json(translate::message(&id, asked, &c)).into_response(),
        Route::Responses(ctx) => {
            let body = responses::response_body(&id, &ctx.echo, created, &c, &ctx.style);
            if let Some(output) = body["output"].as_array() {
                ctx.keep(&id, output);
            }
            Json(body).into_response()
        }
    })
}

/// The next event; a channel that closes without a final event becomes an error event.
async fn next_event(rx: &mut UnboundedReceiver<Event>) -> Event {
    rx.recv().await.unwrap_or_else(|| Event::Error {
        error: GenerateError::new(ErrorKind::Internal, "generation ended without a result"),
    })
}

async fn collect(mut rx: UnboundedReceiver<Event>, obs: &mut Observer, shape: ReplyShape) -> Collected {
    let mut c = Collected::new(shape);
    loop {
        let ev = next_event(&mut rx).await;
        obs.see(&ev);
        c.push(ev);
        if c.is_finished() || c.error.is_some() {
            return c;
        }
    }
}

/// How long a stream may stay silent (a long prompt prefilling on a CPU) before it carries an
/// SSE comment: clients' idle watchdogs (Claude Code gives up after minutes without a byte, then
/// resends the request, which starts the prefill over) see the stream alive, and a client that
/// went away is noticed at the write.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse(render: Box<dyn Render>, rx: UnboundedReceiver<Event>, obs: Observer) -> Response {
    let body = futures::stream::unfold((rx, render, obs, false), |(mut rx, mut render, mut obs, done)| async move {
        if done {
            return None;
        }
        // `recv` is cancel-safe: an event that arrives as the timer fires waits for the next turn.
        let Ok(ev) = tokio::time::timeout(KEEP_ALIVE, next_event(&mut rx)).await else {
            return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (rx, render, obs, false)));
        };
        obs.see(&ev);
        let error = matches!(ev, Event::Error { .. });
        let text: String = render.frames(&ev).iter().map(SseFrame::to_sse_string).collect();
        let last = error || render.finished();
        Some((Ok::<_, Infallible>(Bytes::from(text)), (rx, render, obs, last)))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Counts a request that failed before generation started.
pub(super) fn finish(st: &AppState, route: &Route, asked: &str, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| refused(st, route.label(), asked, e))
}

/// Answers and counts a request refused before generation started; `api` is the route's label.
pub(super) fn refused(st: &AppState, api: &str, asked: &str, e: ApiError) -> Response {
    let model = st.models.resolve(asked).map(|s| s.id.clone()).unwrap_or_else(|| "unknown".into());
    st.metrics.requests.with_label_values(&[&model, api, e.status().as_str()]).inc();
    with_model(e.into_response(), asked)
}

/// Names the model a refused request asked for, for the access log.
pub(super) fn with_model(mut resp: Response, asked: &str) -> Response {
    if let Some(r) = resp.extensions_mut().get_mut::<super::error::Refusal>() {
        r.model = (!asked.is_empty()).then(|| asked.to_string());
    }
    resp
}

pub async fn chat_completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = Route::Chat { include_usage: false };
    let req: openai::ChatCompletionRequest = match parse(&st, &headers, body, route.dialect()) {
        Ok(r) => r,
        Err(e) => return finish(&st, &route, "", Err(e)),
    };
    let route = Route::Chat { include_usage: req.sampling.include_usage() };
    let res = generate(
        &st,
        &route,
        new_id(route.id_prefix()),
        &req.model,
        req.sampling.is_stream(),
        req.sampling.keep_alive.as_ref(),
        in_session(&headers, |id, model| translate::chat_request(&req, id, model)),
    )
    .await;
    finish(&st, &route, &req.model, res)
}

pub async fn completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = Route::Completion { include_usage: false };
    let req: openai::CompletionRequest = match parse(&st, &headers, body, route.dialect()) {
        Ok(r) => r,
        Err(e) => return finish(&st, &route, "", Err(e)),
    };
    let route = Route::Completion { include_usage: req.sampling.include_usage() };
    let res = generate(
        &st,
        &route,
        new_id(route.id_prefix()),
        &req.model,
        req.sampling.is_stream(),
        req.sampling.keep_alive.as_ref(),
        in_session(&headers, |id, model| translate::completion_request(&req, id, model)),
    )
    .await;
    finish(&st, &route, &req.model, res)
}

pub async fn messages(State(st): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let route = Route::Messages;
    let req: anthropic::MessagesRequest = match parse(&st, &headers, body, route.dialect()) {
        Ok(r) => r,
        Err(e) => return finish(&st, &route, "", Err(e)),
    };
    let res = generate(
        &st,
        &route,
        new_id(route.id_prefix()),
        &req.model,
        req.is_stream(),
        req.keep_alive.as_ref(),
        in_session(&headers, |id, model| translate::messages_request(&req, id, model)),
    )
    .await;
    finish(&st, &route, &req.model, res)
}

pub async fn count_tokens(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let d = Dialect::Anthropic;
    let mut asked = String::new();
    let res = async {
        let req: anthropic::CountTokensRequest = parse(&st, &headers, body, d)?;
        asked.clone_from(&req.model);
        let api_err = |error| ApiError { dialect: d, error };
        let request = translate::count_tokens_request(&req, String::new(), req.model.clone()).map_err(api_err)?;
        let lease = st.models.acquire(&req.model, None).await.map_err(api_err)?;
        let id = lease.id().to_string();
        let n = tokio::task::spawn_blocking(move || lease.model.generator(&id)?.tokenize(&request))
            .await
            .map_err(|e| ApiError::new(d, ErrorKind::Internal, format!("tokenizer task failed: {e}")))?
            .map_err(api_err)?
            .len();
        Ok::<_, ApiError>(Json(anthropic::CountTokensResponse { input_tokens: n as u32 }).into_response())
    }
    .await;
    res.unwrap_or_else(|e| with_model(e.into_response(), &asked))
}
