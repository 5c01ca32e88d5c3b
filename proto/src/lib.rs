//! cortex's vocabulary and pure decisions, sans-IO: wire types of the two HTTP dialects, the
//! neutral generation request and event stream, the translation between them, the model
//! catalogue, the typed words neurons use about models and peers, and the pure decisions
//! (routing, eviction) over them. Nothing here opens a socket, spawns a task or reads a clock; callers pass time
//! in as an argument.

pub mod anthropic;
pub mod catalogue;
pub mod embed;
pub mod eviction;
pub mod frame;
pub mod generate;
pub mod lark;
pub mod model;
pub mod openai;
pub mod placement;
pub mod prefix;
pub mod responses;
pub mod routing;
pub mod tools;
pub mod translate;
