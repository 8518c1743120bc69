//! Bus: the public contract on zenoh (documented in README, "Bus contract").
//!
//! Every key lives under `<prefix>/<robot>/`:
//! `embedding/<modality>/<source>` (CBOR), `labels/<modality>/<source>`,
//! `events/<modality>/<source>`, `alerts/<query id>`, `health` (JSON); clients
//! `put`/`delete` `queries/<id>` and `get` `queries/**`; errors about a client's
//! request are published on `errors/queries/<id>`. A running daemon holds the
//! liveliness token `alive`, so tools can tell "no daemon" from "no answer".

pub mod listen;
pub mod msg;
pub mod ros2;
pub mod zenoh_bus;

pub use msg::{pack_vector, unpack_vector, EmbeddingMsg, FusedMember, FusedMsg, JsonMsg};

use crate::modality::Modality;
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("zenoh: {0}")]
    Zenoh(String),
    #[error("encoding {0}")]
    Encode(#[from] msg::MsgError),
}

pub use crate::ident::validate_chunk;

/// Key names under `<prefix>/<robot>`.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, robot: &str) -> Self {
        Topics {
            base: format!("{}/{}", prefix.trim_end_matches('/'), robot),
        }
    }
    pub fn base(&self) -> &str {
        &self.base
    }
    pub fn embedding(&self, m: Modality, source: &str) -> String {
        format!("{}/embedding/{m}/{source}", self.base)
    }
    pub fn labels(&self, m: Modality, source: &str) -> String {
        format!("{}/labels/{m}/{source}", self.base)
    }
    pub fn events(&self, m: Modality, source: &str) -> String {
        format!("{}/events/{m}/{source}", self.base)
    }
    /// `embedding/fused`, `labels/fused`, `events/fused`: the fused stream.
    pub fn fused(&self, kind: &str) -> String {
        format!("{}/{kind}/fused", self.base)
    }
    /// What the daemon's `search` queryable answers.
    pub fn search(&self) -> String {
        format!("{}/search", self.base)
    }
    pub fn alerts(&self, id: &str) -> String {
        format!("{}/alerts/{id}", self.base)
    }
    pub fn health(&self) -> String {
        format!("{}/health", self.base)
    }
    /// The liveliness token a running daemon declares.
    pub fn alive(&self) -> String {
        format!("{}/alive", self.base)
    }
    pub fn query(&self, id: &str) -> String {
        format!("{}/queries/{id}", self.base)
    }
    /// What the daemon subscribes to for registrations (every key below, so a put on
    /// a key that is not a valid id still gets an error reply).
    pub fn queries_sub(&self) -> String {
        format!("{}/queries/**", self.base)
    }
    /// What the daemon's queryable answers.
    pub fn queries_all(&self) -> String {
        format!("{}/queries/**", self.base)
    }
    pub fn query_error(&self, id: &str) -> String {
        format!("{}/errors/queries/{id}", self.base)
    }
    /// What follows `queries/` in a key (a valid id has one chunk; see `validate_chunk`).
    pub fn query_id<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.base)?.strip_prefix("/queries/")
    }
}

/// Payload encodings used on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    Cbor,
    Json,
}

/// Publishes payloads; implemented by zenoh and, in tests, by memory.
pub trait Sink: Send + Sync + 'static {
    fn put(&self, key: String, payload: Vec<u8>, enc: Enc) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// A sink that records what was published (tests, `--dry-run` style tools).
#[derive(Default)]
pub struct MemorySink(pub std::sync::Mutex<Vec<(String, Vec<u8>, Enc)>>);

impl Sink for MemorySink {
    #[allow(clippy::manual_async_fn)]
    fn put(&self, key: String, payload: Vec<u8>, enc: Enc) -> impl Future<Output = Result<(), BusError>> + Send {
        async move {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((key, payload, enc));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let t = Topics::new("sensebind", "bot");
        assert_eq!(t.embedding(Modality::Imu, "rs0"), "sensebind/bot/embedding/imu/rs0");
        assert_eq!(t.labels(Modality::Vision, "front"), "sensebind/bot/labels/vision/front");
        assert_eq!(t.query_id("sensebind/bot/queries/q1"), Some("q1"));
        assert_eq!(t.query_id("sensebind/bot/queries/q1/x"), Some("q1/x"));
        assert_eq!(t.query_id("sensebind/bot/health"), None);
    }
}
