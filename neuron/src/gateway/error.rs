//! The HTTP layer's one error type: a neutral error plus the dialect to render it in.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cortex_proto::generate::{ErrorKind, GenerateError};
use cortex_proto::{anthropic, openai};

/// Which API shape a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// Bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }

    pub fn error_body(self, err: &GenerateError) -> serde_json::Value {
        match self {
            Dialect::OpenAi => openai::error_body(err),
            Dialect::Anthropic => anthropic::error_body(err),
        }
    }
}

/// Seconds a client should wait after a 429 or a 503 before trying again.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug)]
pub struct ApiError {
    pub dialect: Dialect,
    pub error: GenerateError,
}

impl ApiError {
    pub fn new(dialect: Dialect, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { dialect, error: GenerateError::new(kind, message) }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.error.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A body that could not be read: too large (413) or broken off.
    pub fn from_body(dialect: Dialect, r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(dialect, ErrorKind::PayloadTooLarge, "the request body is larger than this server accepts")
        } else {
            Self::new(dialect, ErrorKind::InvalidRequest, format!("could not read the request body: {}", r.body_text()))
        }
    }

    /// A body that is not the JSON this route expects.
    pub fn from_json(dialect: Dialect, e: serde_json::Error) -> Self {
        Self::new(dialect, ErrorKind::InvalidRequest, format!("invalid request body: {e}"))
    }
}

/// Why a request was refused, carried on the response for the access log (never the body).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: String,
    /// The model the request named, where it was read.
    pub model: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.dialect.error_body(&self.error))).into_response();
        resp.extensions_mut().insert(Refusal { reason: self.error.message.clone(), model: None });
        if matches!(self.error.kind, ErrorKind::Overloaded | ErrorKind::Unavailable) {
            resp.headers_mut().insert("retry-after", HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}
