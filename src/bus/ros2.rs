//! The ROS 2 outputs (`[ros2] publish = true`): what the daemon publishes on zenoh,
//! mirrored as ROS 2 topics of its node, so `ros2 topic echo`, `rqt` and `ros2 bag`
//! see it. For robot `<robot>` (sanitised to `[A-Za-z0-9_]`, as is each source id):
//!
//! | zenoh key (below `<prefix>/<robot>/`) | ROS 2 topic | type |
//! |---|---|---|
//! | `labels/<modality>/<source>`, `labels/fused` | `<namespace>/<robot>/labels/…` | `std_msgs/msg/String`: the JSON, byte for byte |
//! | `events/<modality>/<source>`, `events/fused` | `<namespace>/<robot>/events/…` | `std_msgs/msg/String` |
//! | `alerts/<id>` | `<namespace>/<robot>/alerts` (one for every query) | `std_msgs/msg/String` |
//! | `embedding/<modality>/<source>`, `embedding/fused` | `<namespace>/<robot>/embedding/…` | `sensebind_msgs/msg/Embedding` |
//! | `health` | `/diagnostics` | `diagnostic_msgs/msg/DiagnosticArray` |
//!
//! Each topic gets an rmw_zenoh publisher on first use: the typed data key, an `MP`
//! graph token, and the 33-byte attachment on every sample (sequence number from 1).
//! [`Mapper`] is the pure part: a bus message → a ROS 2 message.

use super::msg::{EmbeddingMsg, FusedMsg, HealthMsg, SourceState, StreamState};
use super::{BusError, Enc, Sink};
use crate::ros2::msgs::{self, DiagnosticArray, DiagnosticStatus, Embedding, Header, KeyValue, StringMsg, Time};
use crate::ros2::node::{Endpoint, Participant};
use crate::ros2::wire::{self, Attachment, EndpointKind, KnownType};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use zenoh::qos::CongestionControl;

/// Keep-last depth declared for each publisher.
const DEPTH: u32 = 10;

/// A ROS 2 message made from a bus message.
#[derive(Debug, Clone, PartialEq)]
pub struct RosMessage {
    pub topic: String,
    pub t: KnownType,
    /// CDR with its encapsulation header.
    pub cdr: Vec<u8>,
}

/// Bus messages → ROS 2 messages.
#[derive(Debug, Clone)]
pub struct Mapper {
    /// `<prefix>/<robot>/`.
    base: String,
    /// `<namespace>/<robot>` (sanitised).
    root: String,
    robot: String,
}

/// `diagnostic_msgs/DiagnosticStatus` levels.
const OK: u8 = 0;
const WARN: u8 = 1;
const ERROR: u8 = 2;

impl Mapper {
    pub fn new(topics: &super::Topics, robot: &str, namespace: &str) -> Self {
        let ns = namespace.trim_end_matches('/');
        Mapper {
            base: format!("{}/", topics.base()),
            root: format!("{ns}/{}", wire::sanitize(robot)),
            robot: robot.to_string(),
        }
    }

    /// The ROS 2 message for the bus message `key` (a full key) with `payload`;
    /// `None` for keys that have no ROS 2 topic (replies, queries). `now_ns` stamps
    /// the diagnostics.
    pub fn map(&self, key: &str, payload: &[u8], now_ns: i64) -> Result<Option<RosMessage>, String> {
        let Some(rel) = key.strip_prefix(&self.base) else {
            return Ok(None);
        };
        let mut parts = rel.split('/');
        let kind = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let sub = || -> Option<String> {
            match rest.as_slice() {
                ["fused"] => Some("fused".into()),
                [m, source] => Some(format!("{m}/{}", wire::sanitize(source))),
                _ => None,
            }
        };
        let string = |topic: String| -> Result<Option<RosMessage>, String> {
            let data = std::str::from_utf8(payload).map_err(|e| format!("{key}: not UTF-8: {e}"))?;
            Ok(Some(RosMessage {
                topic,
                t: KnownType::String,
                cdr: msgs::encode(&StringMsg { data }),
            }))
        };
        match kind {
            "labels" | "events" => match sub() {
                Some(s) => string(format!("{}/{kind}/{s}", self.root)),
                None => Ok(None),
            },
            "alerts" if rest.len() == 1 => string(format!("{}/alerts", self.root)),
            "embedding" => {
                let Some(s) = sub() else { return Ok(None) };
                let topic = format!("{}/embedding/{s}", self.root);
                let e = |e: ciborium::de::Error<std::io::Error>| format!("{key}: {e}");
                // A stream's message has the fused one's fields but `members`/`complete`.
                let m: FusedMsg = if s == "fused" {
                    ciborium::from_reader(payload).map_err(e)?
                } else {
                    let m: EmbeddingMsg = ciborium::from_reader(payload).map_err(e)?;
                    FusedMsg {
                        robot: m.robot,
                        source: m.source,
                        modality: m.modality.as_str().into(),
                        seq: m.seq,
                        t_start_ns: m.t_start_ns,
                        t_end_ns: m.t_end_ns,
                        model: m.model,
                        dim: m.dim,
                        embedding: m.embedding,
                        scale: m.scale,
                        coverage: m.coverage,
                        members: Vec::new(),
                        complete: true,
                    }
                };
                let cdr = msgs::encode(&Embedding {
                    header: Header {
                        stamp: Time::from_ns(m.t_start_ns),
                        frame_id: &m.source,
                    },
                    end: Time::from_ns(m.t_end_ns),
                    robot: &m.robot,
                    source: &m.source,
                    modality: &m.modality,
                    seq: m.seq.max(0) as u64,
                    model: &m.model,
                    scale: m.scale,
                    coverage: m.coverage,
                    embedding: super::msg::unpack_vector(&m.embedding),
                });
                Ok(Some(RosMessage {
                    topic,
                    t: KnownType::Embedding,
                    cdr,
                }))
            }
            "health" if rest.is_empty() => {
                let h: HealthMsg = serde_json::from_slice(payload).map_err(|e| format!("{key}: {e}"))?;
                Ok(Some(RosMessage {
                    topic: "/diagnostics".into(),
                    t: KnownType::DiagnosticArray,
                    cdr: msgs::encode(&self.diagnostics(&h, now_ns)),
                }))
            }
            _ => Ok(None),
        }
    }

    /// One status for the daemon, one per source and one per stream.
    pub fn diagnostics(&self, h: &HealthMsg, now_ns: i64) -> DiagnosticArray<'static> {
        let kv = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: v,
        };
        let status = |level: u8, name: String, message: String, values: Vec<KeyValue>| DiagnosticStatus {
            level,
            name,
            message,
            hardware_id: self.robot.clone(),
            values,
        };
        let daemon_level = match h.status {
            super::msg::HealthStatus::Ok => OK,
            super::msg::HealthStatus::Degraded => WARN,
            super::msg::HealthStatus::Failed => ERROR,
        };
        let mut out = vec![status(
            daemon_level,
            format!("sensebind/{}", self.robot),
            if h.problems.is_empty() {
                "ok".into()
            } else {
                h.problems.join("; ")
            },
            vec![
                kv("uptime_s", format!("{:.0}", h.uptime_s)),
                kv("queries", h.queries.to_string()),
                kv("alerts", h.alerts.to_string()),
                kv("bus_errors", h.bus_errors.to_string()),
            ],
        )];
        for (id, s) in &h.sources {
            let level = match s.state {
                SourceState::Running | SourceState::Ended | SourceState::Stopped => OK,
                SourceState::Starting => WARN,
                SourceState::Reconnecting => ERROR,
            };
            let mut values = vec![
                kv("type", s.kind.clone()),
                kv("description", s.description.clone()),
                kv("clock", s.clock.clone().unwrap_or_default()),
                kv("frames", s.frames.to_string()),
                kv("frames_dropped", s.frames_dropped.to_string()),
                kv("errors", s.errors.to_string()),
                kv("reconnects", s.reconnects.to_string()),
                kv("panics", s.panics.to_string()),
            ];
            if let Some(age) = s.last_frame_age_s {
                values.push(kv("last_frame_age_s", format!("{age:.3}")));
            }
            for (k, v) in &s.driver {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                values.push(kv(&format!("driver.{k}"), v));
            }
            out.push(status(
                level,
                format!("sensebind/{}/{id}", self.robot),
                s.state.as_str().into(),
                values,
            ));
            for (m, st) in &s.streams {
                let (level, message) = match st.state {
                    _ if st.wedged => (ERROR, "wedged"),
                    StreamState::Ok => (OK, "ok"),
                    StreamState::Ended => (OK, "ended"),
                    StreamState::Stopped => (OK, "stopped"),
                    StreamState::Stalled => (WARN, "stalled"),
                };
                let message = message.to_string();
                let d = &st.windows_dropped;
                out.push(status(
                    level,
                    format!("sensebind/{}/{id}/{m}", self.robot),
                    message,
                    vec![
                        kv("windows_in", st.windows_in.to_string()),
                        kv("windows_out", st.windows_out.to_string()),
                        kv("windows_dropped.coverage", d.coverage.to_string()),
                        kv("windows_dropped.backpressure", d.backpressure.to_string()),
                        kv("windows_dropped.error", d.error.to_string()),
                        kv("windows_dropped.budget", d.budget.to_string()),
                        kv("windows_dropped.stale", d.stale.to_string()),
                        kv("frames_rejected", st.frames_rejected.to_string()),
                        kv("late_frames", st.late_frames.to_string()),
                        kv(
                            "latency_ms.p50",
                            st.latency_ms.p50.map_or(String::new(), |v| format!("{v:.1}")),
                        ),
                        kv(
                            "latency_ms.p95",
                            st.latency_ms.p95.map_or(String::new(), |v| format!("{v:.1}")),
                        ),
                        kv("provider", st.provider.clone()),
                    ],
                ));
            }
        }
        DiagnosticArray {
            header: Header {
                stamp: Time::from_ns(now_ns),
                frame_id: "",
            },
            status: out,
        }
    }
}

/// One ROS 2 publisher.
struct Publisher {
    publisher: zenoh::pubsub::Publisher<'static>,
    seq: i64,
    endpoint: Endpoint,
}

/// Publishes the mapped messages through the daemon's ROS 2 node.
pub struct Ros2Sink {
    mapper: Mapper,
    node: Arc<Participant>,
    congestion: CongestionControl,
    publishers: tokio::sync::Mutex<HashMap<String, Publisher>>,
}

impl Ros2Sink {
    pub fn new(mapper: Mapper, node: Arc<Participant>, congestion: CongestionControl) -> Self {
        Ros2Sink {
            mapper,
            node,
            congestion,
            publishers: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The ROS 2 message for a bus message, made before the payload moves on.
    pub fn map(&self, key: &str, payload: &[u8]) -> Result<Option<RosMessage>, BusError> {
        self.mapper
            .map(key, payload, crate::clock::realtime_ns())
            .map_err(|e| BusError::Zenoh(format!("ROS 2: {e}")))
    }

    /// Publish `m` (its publisher declared on first use).
    pub async fn publish(&self, m: RosMessage) -> Result<(), BusError> {
        let err = |e: String| BusError::Zenoh(format!("ROS 2 {}: {e}", m.topic));
        let mut pubs = self.publishers.lock().await;
        if !pubs.contains_key(&m.topic) {
            let key = wire::data_key(
                self.node.domain(),
                &m.topic,
                &m.t.dds_name(),
                m.t.hash_chunk(self.node.distro()),
            );
            // Alerts are never dropped, as on zenoh.
            let congestion = if m.topic.ends_with("/alerts") {
                CongestionControl::Block
            } else {
                self.congestion
            };
            let publisher = self
                .node
                .session()
                .declare_publisher(key)
                .congestion_control(congestion)
                .await
                .map_err(|e| err(e.to_string()))?;
            let node = self.node.clone();
            let (topic, t) = (m.topic.clone(), m.t);
            let endpoint =
                tokio::task::spawn_blocking(move || node.endpoint(EndpointKind::Publisher, &topic, t, DEPTH))
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .map_err(err)?;
            pubs.insert(
                m.topic.clone(),
                Publisher {
                    publisher,
                    seq: 0,
                    endpoint,
                },
            );
        }
        let Some(p) = pubs.get_mut(&m.topic) else {
            return Ok(());
        };
        p.seq += 1;
        let att = Attachment {
            seq: p.seq,
            timestamp_ns: crate::clock::realtime_ns(),
            gid: p.endpoint.gid,
        };
        p.publisher
            .put(m.cdr)
            .attachment(att.encode().to_vec())
            .await
            .map_err(|e| err(e.to_string()))
    }
}

/// The daemon's sink: zenoh, and ROS 2 when `[ros2] publish` is on.
pub struct BusSink {
    pub zenoh: super::zenoh_bus::ZenohSink,
    pub ros2: Option<Ros2Sink>,
}

impl Sink for BusSink {
    #[allow(clippy::manual_async_fn)]
    fn put(&self, key: String, payload: Vec<u8>, enc: Enc) -> impl Future<Output = Result<(), BusError>> + Send {
        async move {
            let ros = match &self.ros2 {
                Some(r) => r.map(&key, &payload),
                None => Ok(None),
            };
            let zenoh = self.zenoh.put(key, payload, enc).await;
            let ros = match (ros, &self.ros2) {
                (Ok(Some(m)), Some(r)) => r.publish(m).await,
                (Err(e), _) => Err(e),
                _ => Ok(()),
            };
            zenoh.and(ros)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Topics;
    use crate::modality::Modality;

    fn mapper() -> Mapper {
        Mapper::new(&Topics::new("sensebind", "lab-7"), "lab-7", "/sensebind")
    }

    #[test]
    fn bus_keys_become_ros_topics() {
        let m = mapper();
        let json = br#"{"robot":"lab-7","top":[]}"#;
        for (key, topic) in [
            (
                "sensebind/lab-7/labels/vision/front-cam",
                "/sensebind/lab_7/labels/vision/front_cam",
            ),
            ("sensebind/lab-7/labels/fused", "/sensebind/lab_7/labels/fused"),
            ("sensebind/lab-7/events/audio/mic", "/sensebind/lab_7/events/audio/mic"),
            ("sensebind/lab-7/alerts/dog", "/sensebind/lab_7/alerts"),
        ] {
            let r = m.map(key, json, 0).unwrap().unwrap();
            assert_eq!((r.topic.as_str(), r.t), (topic, KnownType::String), "{key}");
            let s: StringMsg = msgs::decode("String", &r.cdr).unwrap();
            assert_eq!(s.data.as_bytes(), json, "the JSON, byte for byte");
        }
        for key in [
            "sensebind/lab-7/queries/q1",
            "sensebind/lab-7/search",
            "other/lab-7/labels/vision/x",
        ] {
            assert_eq!(m.map(key, json, 0).unwrap(), None, "{key}");
        }
        assert!(m.map("sensebind/lab-7/labels/vision/x", b"\xff", 0).is_err());
    }

    #[test]
    fn embeddings_keep_every_field() {
        let v = [0.6f32, 0.8];
        let e = EmbeddingMsg {
            robot: "lab-7".into(),
            source: "front".into(),
            modality: Modality::Vision,
            seq: 42,
            t_start_ns: 4_000_000_001,
            t_end_ns: 6_000_000_001,
            model: "minibind".into(),
            dim: 2,
            embedding: EmbeddingMsg::pack_vector(&v),
            scale: 20.0,
            coverage: 0.9,
        };
        let mut cbor = Vec::new();
        ciborium::into_writer(&e, &mut cbor).unwrap();
        let r = mapper()
            .map("sensebind/lab-7/embedding/vision/front", &cbor, 0)
            .unwrap()
            .unwrap();
        assert_eq!(r.topic, "/sensebind/lab_7/embedding/vision/front");
        let d: Embedding = msgs::decode("Embedding", &r.cdr).unwrap();
        assert_eq!(d.header.stamp, Time { sec: 4, nanosec: 1 });
        assert_eq!(d.header.frame_id, "front");
        assert_eq!(d.end, Time { sec: 6, nanosec: 1 });
        assert_eq!(
            (d.robot, d.source, d.modality, d.seq, d.model),
            ("lab-7", "front", "vision", 42, "minibind")
        );
        assert_eq!((d.scale, d.coverage, d.embedding), (20.0, 0.9, v.to_vec()));
    }
}
