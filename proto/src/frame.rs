//! Mesh RPC framing: every message on a QUIC stream is `[version u8][kind u8][len u32 BE]`
//! followed by `len` bytes of JSON. Decoding is incremental and bounded, so a garbled or
//! oversized frame is an error, never an allocation the peer chose.

use serde::{Deserialize, Serialize};

use crate::generate::{Event, GenerateRequest};
use crate::model::AdminAction;
use crate::placement::PlacementDoc;

pub const VERSION: u8 = 1;
/// Largest payload accepted (a placement document or a long prompt fits easily).
pub const MAX_PAYLOAD: usize = 16 << 20;
const HEADER: usize = 6;

/// What a mesh stream carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    /// Run a generation on the receiving node; the reply is a stream of `Event`s.
    Generate {
        request: Box<GenerateRequest>,
        keep_alive: Option<serde_json::Value>,
    },
    Event {
        event: Event,
    },
    /// load, unload, pin or unpin a model on the receiving node.
    Admin {
        action: AdminAction,
        model: String,
    },
    AdminResult {
        ok: bool,
        error: Option<crate::generate::GenerateError>,
    },
    /// Ask for the newest document the receiver holds for `node`.
    FetchPlacement {
        node: String,
    },
    Placement {
        doc: Option<PlacementDoc>,
    },
    /// The sender is shutting down on purpose (peers record a leave, not a failure); the
    /// receiver ends the stream once it has noted it. Who leaves is the connection's verified
    /// peer, so the message names nobody.
    Leaving,
    /// Ask for `(node, version)` of every document the receiver holds, to pull what is newer.
    FetchDigest,
    Digest {
        versions: Vec<(String, u64)>,
    },
    /// Embed inputs on the receiving node; the reply is one `Embedded`.
    Embed {
        request: Box<crate::embed::EmbedRequest>,
        keep_alive: Option<serde_json::Value>,
    },
    Embedded {
        result: Result<crate::embed::EmbedResult, crate::generate::GenerateError>,
    },
    /// Ask for a stored Responses conversation (`previous_response_id`) the receiver answered.
    FetchConversation {
        id: String,
    },
    /// `None` when the receiver does not hold it (never did, or evicted it).
    Conversation {
        messages: Option<Vec<crate::generate::ChatMessage>>,
    },
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Generate { .. } => 1,
            Message::Event { .. } => 2,
            Message::Admin { .. } => 3,
            Message::AdminResult { .. } => 4,
            Message::FetchPlacement { .. } => 5,
            Message::Placement { .. } => 6,
            Message::Leaving => 7,
            Message::FetchDigest => 8,
            Message::Digest { .. } => 9,
            Message::Embed { .. } => 10,
            Message::Embedded { .. } => 11,
            Message::FetchConversation { .. } => 12,
            Message::Conversation { .. } => 13,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported frame version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("frame payload is not a valid message: {0}")]
    Payload(String),
    #[error("frame kind {header} does not match its payload ({payload})")]
    Mismatch { header: u8, payload: u8 },
}

/// Encodes one message as a frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Serialising plain data to JSON cannot fail.
    let payload = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(VERSION);
    out.push(msg.kind());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the first frame in `buf`: `Ok(None)` when more bytes are needed, else the message
/// and how many bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(FrameError::Version(buf[0]));
    }
    let kind = buf[1];
    if !(1..=13).contains(&kind) {
        return Err(FrameError::Kind(kind));
    }
    let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let msg: Message =
        serde_json::from_slice(&buf[HEADER..HEADER + len]).map_err(|e| FrameError::Payload(e.to_string()))?;
    if msg.kind() != kind {
        return Err(FrameError::Mismatch { header: kind, payload: msg.kind() });
    }
    Ok(Some((msg, HEADER + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_even_when_split() {
        let a = Message::FetchPlacement { node: "n1".into() };
        let b = Message::Admin { action: AdminAction::Pin, model: "m".into() };
        let mut bytes = encode(&a);
        bytes.extend(encode(&b));
        bytes.extend(encode(&Message::Leaving));
        for cut in 0..bytes.len() {
            let first = decode(&bytes[..cut]).unwrap();
            if cut < encode(&a).len() {
                assert!(first.is_none());
            }
        }
        let (m1, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(m1, a);
        let (m2, used2) = decode(&bytes[used..]).unwrap().unwrap();
        assert_eq!(m2, b);
        let (m3, used3) = decode(&bytes[used + used2..]).unwrap().unwrap();
        assert_eq!(m3, Message::Leaving);
        assert_eq!(used + used2 + used3, bytes.len());
    }

    #[test]
    fn garbled_and_oversized_frames_are_errors() {
        assert_eq!(decode(&[9, 1, 0, 0, 0, 0]), Err(FrameError::Version(9)));
        assert_eq!(decode(&[VERSION, 77, 0, 0, 0, 0]), Err(FrameError::Kind(77)));
        assert!(matches!(decode(&[VERSION, 1, 0xff, 0xff, 0xff, 0xff]), Err(FrameError::TooLarge(_))));
        let mut bad = vec![VERSION, 5, 0, 0, 0, 3];
        bad.extend_from_slice(b"{x}");
        assert!(matches!(decode(&bad), Err(FrameError::Payload(_))));
        let mut frame = encode(&Message::FetchPlacement { node: "n".into() });
        frame[1] = 3;
        assert!(matches!(decode(&frame), Err(FrameError::Mismatch { .. })));
        // An admin action this version does not know is refused at the frame, not acted on.
        let mut unknown = encode(&Message::Admin { action: AdminAction::Unpin, model: "m".into() });
        let at = unknown.windows(5).position(|w| w == b"unpin").unwrap();
        unknown.splice(at..at + 5, b"wipe!".iter().copied());
        assert!(matches!(decode(&unknown), Err(FrameError::Payload(_))));
    }
}
