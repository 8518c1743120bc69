//! Bus: the public contract on zenoh (documented in README, "Bus contract").
//!
//! Every key lives under `<prefix>/<robot>/`:
//! `embedding/<modality>/<source>` (CBOR), `labels/<modality>/<source>`,
//! `events/<modality>/<source>`, `alerts/<query id>`, `health` (JSON); clients
//! `put`/`delete` `queries/<id>` and `get` `queries/**`; errors about a client's
//! request are published on `errors/queries/<id>`. A running daemon holds the
//! liveliness token `alive`, so tools can tell "no daemon" from "no answer".

pub mod listen;
pub mod zenoh_bus;

use crate::modality::Modality;
use serde::{Deserialize, Serialize};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("zenoh: {0}")]
    Zenoh(String),
    #[error("encoding {what}: {reason}")]
    Encode { what: String, reason: String },
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

/// `embedding/<modality>` payload (CBOR map). `embedding` is a byte string of
/// `dim` little-endian f32, unit L2 norm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingMsg {
    pub robot: String,
    /// The source id (the user's name for the sensor).
    pub source: String,
    pub modality: Modality,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub model: String,
    pub dim: u32,
    #[serde(with = "serde_bytes")]
    pub embedding: Vec<u8>,
    /// The modality's logit scale (ImageBind multiplies the unit vector by it).
    pub scale: f32,
    /// Fraction of the window covered by sensor data.
    pub coverage: f32,
}

impl EmbeddingMsg {
    pub fn vector(&self) -> Vec<f32> {
        unpack_vector(&self.embedding)
    }
    pub fn pack_vector(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    pub fn to_cbor(&self) -> Result<Vec<u8>, BusError> {
        to_cbor(self, "embedding")
    }
    pub fn from_cbor(b: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(b).map_err(|e| e.to_string())
    }
}

/// Little-endian f32 values from a packed byte string (a trailing partial value is
/// ignored).
pub fn unpack_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn to_cbor(v: &impl Serialize, what: &str) -> Result<Vec<u8>, BusError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| BusError::Encode {
        what: what.into(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// `embedding/fused` payload (CBOR map): the fields of [`EmbeddingMsg`] (`source` and
/// `modality` are both `"fused"`, `scale` the members' weighted mean, `coverage` their
/// mean) plus `members` (`[{source, modality, weight, coverage}]`) and `complete`
/// (every expected stream is a member).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FusedMsg {
    pub robot: String,
    pub source: String,
    pub modality: String,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub model: String,
    pub dim: u32,
    #[serde(with = "serde_bytes")]
    pub embedding: Vec<u8>,
    pub scale: f32,
    pub coverage: f32,
    pub members: Vec<FusedMember>,
    pub complete: bool,
}

/// One stream in a fused window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FusedMember {
    pub source: String,
    pub modality: Modality,
    pub weight: f32,
    pub coverage: f32,
}

impl FusedMsg {
    pub fn to_cbor(&self) -> Result<Vec<u8>, BusError> {
        to_cbor(self, "fused embedding")
    }
    pub fn from_cbor(b: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(b).map_err(|e| e.to_string())
    }
    pub fn vector(&self) -> Vec<f32> {
        unpack_vector(&self.embedding)
    }
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
    fn cbor_roundtrip_with_byte_string() {
        let v = vec![0.6f32, -0.8];
        let m = EmbeddingMsg {
            robot: "r1".into(),
            source: "mic".into(),
            modality: Modality::Audio,
            seq: 7,
            t_start_ns: 0,
            t_end_ns: 2_000_000_000,
            model: "tiny".into(),
            dim: 2,
            embedding: EmbeddingMsg::pack_vector(&v),
            scale: 20.0,
            coverage: 1.0,
        };
        let b = m.to_cbor().unwrap();
        // The embedding must be a CBOR byte string (major type 2) of 8 bytes: 0x48.
        assert!(b.windows(1 + 8).any(|w| w[0] == 0x48 && w[1..] == m.embedding[..]));
        let back = EmbeddingMsg::from_cbor(&b).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.vector(), v);
    }

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
