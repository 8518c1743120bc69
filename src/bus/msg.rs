//! Every message of the bus contract, one serde type each: the daemon publishes these
//! types, the CLI ([`crate::client`]) and the tests decode them, and the JSON Schemas
//! embedded in recordings ([`schema_json`]) are generated from them. A field added
//! here is added everywhere at once.
//!
//! | key (under `<prefix>/<robot>/`) | type | encoding |
//! |---|---|---|
//! | `embedding/<modality>/<source>` | [`EmbeddingMsg`] | CBOR |
//! | `embedding/fused` | [`FusedMsg`] | CBOR |
//! | `labels/<modality>/<source>`, `labels/fused` | [`LabelsMsg`] | JSON |
//! | `events/<modality>/<source>`, `events/fused` | [`EventMsg`] | JSON |
//! | `alerts/<id>` | [`AlertMsg`] | JSON |
//! | `errors/queries/<id>` | [`QueryErrorMsg`] | JSON |
//! | `search` (reply) | [`SearchReply`], or [`SearchErrorMsg`] as an error reply | JSON |
//! | `health` | [`HealthMsg`] | JSON |
//!
//! In a recording, embeddings are JSON ([`RecordedEmbedding`]: the vector as numbers).

use crate::modality::{Modality, Target};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Encoding or decoding a message failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct MsgError {
    pub what: &'static str,
    pub reason: String,
}

fn to_cbor(v: &impl Serialize, what: &'static str) -> Result<Vec<u8>, MsgError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| MsgError {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Little-endian f32 values from a packed byte string (a trailing partial value is
/// ignored).
pub fn unpack_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian bytes of f32 values (the `embedding` byte string).
pub fn pack_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A JSON message: encode and decode.
pub trait JsonMsg: Serialize + for<'de> Deserialize<'de> {
    /// What the message is, for errors.
    const WHAT: &'static str;
    fn to_json(&self) -> Vec<u8> {
        // Plain data (strings, numbers, maps): serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn from_json(b: &[u8]) -> Result<Self, MsgError> {
        serde_json::from_slice(b).map_err(|e| MsgError {
            what: Self::WHAT,
            reason: e.to_string(),
        })
    }
}

/// `embedding/<modality>/<source>` payload (CBOR map). `embedding` is a byte string of
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
        pack_vector(v)
    }
    pub fn to_cbor(&self) -> Result<Vec<u8>, MsgError> {
        to_cbor(self, "embedding")
    }
    pub fn from_cbor(b: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(b).map_err(|e| e.to_string())
    }
}

/// `embedding/fused` payload (CBOR map): the fields of [`EmbeddingMsg`] (`source` and
/// `modality` are both `"fused"`, `scale` the members' weighted mean, `coverage` their
/// mean) plus `members` and `complete` (every expected stream is a member).
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct FusedMember {
    pub source: String,
    pub modality: Modality,
    pub weight: f32,
    pub coverage: f32,
}

impl FusedMsg {
    pub fn to_cbor(&self) -> Result<Vec<u8>, MsgError> {
        to_cbor(self, "fused embedding")
    }
    pub fn from_cbor(b: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(b).map_err(|e| e.to_string())
    }
    pub fn vector(&self) -> Vec<f32> {
        unpack_vector(&self.embedding)
    }
}

/// A window's embedding as a recording holds it (`sensebind.Embedding`, JSON): the
/// bus message with the vector as numbers. `members` and `complete`: `embedding/fused`
/// only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(
    title = "sensebind.Embedding",
    description = "A window's embedding, as published on embedding/<modality>/<source> (there as CBOR with packed f32)."
)]
pub struct RecordedEmbedding {
    pub robot: String,
    pub source: String,
    /// A modality's name, or `fused`.
    pub modality: String,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub model: String,
    pub dim: u32,
    /// Unit-norm f32 values.
    pub embedding: Vec<f32>,
    pub scale: f32,
    pub coverage: f32,
    /// `embedding/fused` only: the streams summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<FusedMember>>,
    /// `embedding/fused` only: every expected stream is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

impl From<EmbeddingMsg> for RecordedEmbedding {
    fn from(m: EmbeddingMsg) -> Self {
        RecordedEmbedding {
            embedding: m.vector(),
            robot: m.robot,
            source: m.source,
            modality: m.modality.to_string(),
            seq: m.seq,
            t_start_ns: m.t_start_ns,
            t_end_ns: m.t_end_ns,
            model: m.model,
            dim: m.dim,
            scale: m.scale,
            coverage: m.coverage,
            members: None,
            complete: None,
        }
    }
}

impl From<FusedMsg> for RecordedEmbedding {
    fn from(m: FusedMsg) -> Self {
        RecordedEmbedding {
            embedding: m.vector(),
            robot: m.robot,
            source: m.source,
            modality: m.modality,
            seq: m.seq,
            t_start_ns: m.t_start_ns,
            t_end_ns: m.t_end_ns,
            model: m.model,
            dim: m.dim,
            scale: m.scale,
            coverage: m.coverage,
            members: Some(m.members),
            complete: Some(m.complete),
        }
    }
}

impl JsonMsg for RecordedEmbedding {
    const WHAT: &'static str = "sensebind.Embedding";
}

/// One label of a window: cosine `score` in [-1, 1] and softmax `prob` over the set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct LabelScore {
    pub label: String,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
    /// Softmax probability over the label set.
    pub prob: f32,
}

/// `labels/<modality>/<source>`: a window's top labels, best first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(title = "sensebind.Labels")]
pub struct LabelsMsg {
    pub robot: String,
    pub source: String,
    pub modality: Target,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub model: String,
    pub top: Vec<LabelScore>,
}

impl JsonMsg for LabelsMsg {
    const WHAT: &'static str = "labels";
}

/// An event's edge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Start,
    End,
}

/// `events/<modality>/<source>`: a label became (`start`) or stopped being (`end`) the
/// stream's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(title = "sensebind.Event")]
pub struct EventMsg {
    pub robot: String,
    pub source: String,
    pub modality: Target,
    pub label: String,
    pub state: EventState,
    /// Start of the event's first window.
    pub start_ns: i64,
    /// End of its last window (`end` events only).
    pub end_ns: Option<i64>,
    /// Probability in the window that triggered this message.
    pub prob: f32,
    pub seq: i64,
}

impl JsonMsg for EventMsg {
    const WHAT: &'static str = "event";
}

/// A window that matched: a search result, or the window that met one condition of
/// an `all` query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Hit {
    pub source: String,
    pub modality: Target,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub score: f32,
}

/// `alerts/<id>`: a registered query fired on a window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(title = "sensebind.Alert")]
pub struct AlertMsg {
    pub robot: String,
    pub query_id: String,
    pub text: String,
    pub source: String,
    pub modality: Target,
    pub score: f32,
    pub threshold: f32,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    /// `all` queries: the window that met each condition, in the conditions' order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Hit>>,
}

impl JsonMsg for AlertMsg {
    const WHAT: &'static str = "alert";
}

/// `errors/queries/<id>`: why a request about query `id` was refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct QueryErrorMsg {
    pub query_id: String,
    /// The key the request was put on.
    pub key: String,
    /// `invalid`, `too_large`, `rate_limited`, `store_full`, … (see README).
    pub code: String,
    pub error: String,
}

impl JsonMsg for QueryErrorMsg {
    const WHAT: &'static str = "query error";
}

/// One result of a history search: a [`Hit`] and the robot that holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SearchHit {
    pub robot: String,
    pub source: String,
    pub modality: Target,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    pub score: f32,
}

impl SearchHit {
    pub fn new(robot: &str, h: Hit) -> Self {
        SearchHit {
            robot: robot.to_string(),
            source: h.source,
            modality: h.modality,
            seq: h.seq,
            t_start_ns: h.t_start_ns,
            t_end_ns: h.t_end_ns,
            score: h.score,
        }
    }
}

/// The `search` queryable's reply: the best windows first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SearchReply {
    pub robot: String,
    pub results: Vec<SearchHit>,
    /// Windows the coarse pass looked at.
    pub scanned: u64,
    /// Candidates scored again at full precision.
    pub rescored: u64,
    pub took_ms: f64,
}

impl JsonMsg for SearchReply {
    const WHAT: &'static str = "search reply";
}

/// The `search` queryable's error reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SearchErrorMsg {
    pub robot: String,
    pub error: String,
}

impl JsonMsg for SearchErrorMsg {
    const WHAT: &'static str = "search error";
}

// ------------------------------------------------------------------------ health

/// `health`: the daemon's state, published every `health.interval_s`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct HealthMsg {
    pub robot: String,
    pub t_ns: i64,
    pub uptime_s: f64,
    pub status: HealthStatus,
    pub problems: Vec<String>,
    pub failed_stages: Vec<FailedStage>,
    pub sources: BTreeMap<String, SourceHealth>,
    /// Registered queries.
    pub queries: u64,
    /// Alerts published.
    pub alerts: u64,
    pub bus_errors: u64,
    /// Refused query requests, by code.
    pub queries_refused: BTreeMap<String, u64>,
    pub query_store: QueryStoreHealth,
    pub fused: FusedHealth,
    pub history: HistoryHealth,
    /// History searches answered.
    pub searches: u64,
}

impl JsonMsg for HealthMsg {
    const WHAT: &'static str = "health";
}

/// The daemon as a whole (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// Running, with something an operator should look at (see `problems`).
    Degraded,
    /// A stage failed; the daemon is exiting (see `failed_stages`).
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct FailedStage {
    pub stage: String,
    pub reason: String,
}

/// One source (`sources.<id>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SourceHealth {
    /// The driver (`type` of its config).
    #[serde(rename = "type")]
    pub kind: String,
    pub state: SourceState,
    pub description: String,
    /// What the driver reports (granted formats, device counters).
    pub driver: serde_json::Map<String, serde_json::Value>,
    /// `realtime`, `replay`, … (`None` before the first frame).
    pub clock: Option<String>,
    pub frames: u64,
    pub frames_dropped: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub panics: u64,
    pub last_frame_ns: i64,
    pub last_frame_age_s: Option<f64>,
    /// One per modality the source produces.
    pub streams: BTreeMap<String, StreamHealth>,
}

/// What a source's driver is doing (`sources.<id>.state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Configured, not opened yet.
    #[default]
    Starting,
    /// Opened and delivering frames.
    Running,
    /// An open or a read failed: the driver is reopened with back-off.
    Reconnecting,
    /// The source has no more data (a file, a replay, `max_seconds`).
    Ended,
    /// Stopped by the daemon's shutdown.
    Stopped,
}

impl SourceState {
    /// Ended or stopped: no more frames will come, and nothing is wrong.
    pub fn is_done(self) -> bool {
        matches!(self, SourceState::Ended | SourceState::Stopped)
    }
    /// Running, ended or stopped: nothing for an operator to look at.
    pub fn is_healthy(self) -> bool {
        self == SourceState::Running || self.is_done()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::Reconnecting => "reconnecting",
            SourceState::Ended => "ended",
            SourceState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for SourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stream is doing (`sources.<id>.streams.<m>.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Publishing windows.
    Ok,
    /// Its source runs but no window was published for `health.stall_s`.
    Stalled,
    /// Its source ended.
    Ended,
    /// Its source was stopped.
    Stopped,
}

/// One stream: one modality of one source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct StreamHealth {
    pub state: StreamState,
    /// Windows wait and none has been handled for `daemon.watchdog_stall_s`, or the
    /// windower has stopped polling (the reason is in `problems`).
    #[serde(default)]
    pub wedged: bool,
    pub windows_in: u64,
    pub windows_out: u64,
    pub windows_dropped: WindowsDropped,
    pub late_frames: u64,
    pub frames_rejected: u64,
    pub time_jumps: u64,
    pub batch_max: u64,
    pub latency_ms: LatencyMs,
    pub provider: String,
    pub provider_nodes: BTreeMap<String, u64>,
    pub clock: Option<String>,
}

/// Windows closed but not published, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct WindowsDropped {
    pub coverage: u64,
    pub backpressure: u64,
    pub error: u64,
    pub shutdown: u64,
    pub budget: u64,
    pub stale: u64,
}

impl WindowsDropped {
    pub fn total(&self) -> u64 {
        self.coverage + self.backpressure + self.error + self.shutdown + self.budget + self.stale
    }
}

/// Window latency (window end → published), over the last 200 windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct LatencyMs {
    pub last: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct QueryStoreHealth {
    pub ok: bool,
    pub error: Option<String>,
    pub damaged_at_start: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct FusedHealth {
    pub windows: u64,
    pub incomplete: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct HistoryHealth {
    pub windows: u64,
    pub bytes: u64,
    pub oldest_ns: Option<i64>,
    pub write_errors: u64,
    pub read_errors: u64,
    pub corrupt: u64,
    pub dropped: u64,
    pub error: Option<String>,
}

/// Any message of the contract, decoded by its key.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Embedding(EmbeddingMsg),
    Fused(FusedMsg),
    Labels(LabelsMsg),
    Event(EventMsg),
    Alert(AlertMsg),
    QueryError(QueryErrorMsg),
    Health(HealthMsg),
    /// A key that carries none of these (queries, liveliness).
    Other,
}

impl Message {
    /// Decode `body` by what its key (absolute, or relative to `<prefix>/<robot>/`) is.
    pub fn decode(key: &str, body: &[u8]) -> Result<Message, MsgError> {
        let k = format!("/{}", key.trim_start_matches('/'));
        fn cbor<T>(r: Result<T, String>, what: &'static str) -> Result<T, MsgError> {
            r.map_err(|reason| MsgError { what, reason })
        }
        Ok(if k.ends_with("/embedding/fused") {
            Message::Fused(cbor(FusedMsg::from_cbor(body), "fused embedding")?)
        } else if k.contains("/embedding/") {
            Message::Embedding(cbor(EmbeddingMsg::from_cbor(body), "embedding")?)
        } else if k.contains("/labels/") {
            Message::Labels(LabelsMsg::from_json(body)?)
        } else if k.contains("/events/") {
            Message::Event(EventMsg::from_json(body)?)
        } else if k.contains("/alerts/") {
            Message::Alert(AlertMsg::from_json(body)?)
        } else if k.contains("/errors/queries/") {
            Message::QueryError(QueryErrorMsg::from_json(body)?)
        } else if k.ends_with("/health") {
            Message::Health(HealthMsg::from_json(body)?)
        } else {
            Message::Other
        })
    }

    /// As JSON (embeddings as [`RecordedEmbedding`]: the vector as numbers).
    pub fn to_json_value(&self) -> serde_json::Value {
        let v = match self {
            Message::Embedding(m) => serde_json::to_value(RecordedEmbedding::from(m.clone())),
            Message::Fused(m) => serde_json::to_value(RecordedEmbedding::from(m.clone())),
            Message::Labels(m) => serde_json::to_value(m),
            Message::Event(m) => serde_json::to_value(m),
            Message::Alert(m) => serde_json::to_value(m),
            Message::QueryError(m) => serde_json::to_value(m),
            Message::Health(m) => serde_json::to_value(m),
            Message::Other => Ok(serde_json::Value::Null),
        };
        v.unwrap_or_default()
    }
}

/// The JSON Schema of a message type, as text (what recordings embed).
pub fn schema_json<T: JsonSchema>() -> String {
    serde_json::to_string(&schemars::schema_for!(T)).unwrap_or_default()
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
    fn json_messages_keep_the_documented_field_names() {
        let a = AlertMsg {
            robot: "r".into(),
            query_id: "q".into(),
            text: "a dog".into(),
            source: "cam".into(),
            modality: Target::Fused,
            score: 0.5,
            threshold: 0.25,
            seq: 3,
            t_start_ns: 1,
            t_end_ns: 2,
            conditions: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(v["modality"], "fused");
        assert!(v.get("conditions").is_none(), "absent unless an `all` query");
        assert_eq!(AlertMsg::from_json(&a.to_json()).unwrap(), a);
        let e = EventMsg::from_json(br#"{"robot":"r","source":"s","modality":"audio","label":"x","state":"end","start_ns":1,"end_ns":null,"prob":0.5,"seq":2}"#).unwrap();
        assert_eq!(
            (e.state, e.modality),
            (EventState::End, Target::Modality(Modality::Audio))
        );
        let bad = LabelsMsg::from_json(br#"{"robot":"r"}"#).unwrap_err();
        assert!(bad.to_string().starts_with("labels: missing field"), "{bad}");
        // The schemas name the fields and the modality's values.
        let s = schema_json::<AlertMsg>();
        assert!(
            s.contains("\"query_id\"") && s.contains("\"fused\"") && s.contains("sensebind.Alert"),
            "{s}"
        );
    }
}
