//! From an embedded window to bus messages: the embedding itself, zero-shot labels,
//! label events and query alerts. Pure (no I/O), so it is tested without a bus.

use crate::bus::{EmbeddingMsg, Enc, Topics};
use crate::engine::worker::Embedded;
use crate::modality::Modality;
use crate::queries::Registry;
use crate::zeroshot::{EventTracker, LabelSet};
use serde_json::json;
use std::collections::BTreeMap;

pub struct Outputs {
    pub topics: Topics,
    pub robot: String,
    pub model: String,
    pub top_k: usize,
    pub scales: BTreeMap<Modality, f32>,
    /// Label sets per modality (shared by every source of that modality).
    pub labels: BTreeMap<Modality, LabelSet>,
    /// `events` hysteresis settings; one tracker per stream, made on first use.
    pub event_params: (f32, f32, u32),
    pub events: BTreeMap<(String, Modality), EventTracker>,
}

/// A message to publish.
pub type Message = (String, Vec<u8>, Enc);

/// A published message as seen on the results tap (recorders, live views): `topic`
/// is the bus key below `<prefix>/<robot>/` (`labels/audio/mic`, `alerts/q1`).
#[derive(Debug, Clone)]
pub struct Published {
    pub topic: String,
    pub payload: Vec<u8>,
    pub enc: Enc,
}

/// What one embedded window produces.
#[derive(Debug, Default)]
pub struct Produced {
    pub messages: Vec<Message>,
    /// How many of `messages` are query alerts.
    pub alerts: usize,
}

impl Outputs {
    /// Messages for one embedded window; alerts come from `queries`.
    pub fn on_embedded(&mut self, e: &Embedded, queries: &mut Registry) -> Produced {
        let mut out = Vec::new();
        let m = e.modality;
        let src: &str = &e.source;
        let msg = EmbeddingMsg {
            robot: self.robot.clone(),
            source: src.to_string(),
            modality: m,
            seq: e.seq,
            t_start_ns: e.t_start_ns,
            t_end_ns: e.t_end_ns,
            model: self.model.clone(),
            dim: e.vector.len() as u32,
            embedding: EmbeddingMsg::pack_vector(&e.vector),
            scale: self.scales.get(&m).copied().unwrap_or(1.0),
            coverage: e.coverage as f32,
        };
        match msg.to_cbor() {
            Ok(b) => out.push((self.topics.embedding(m, src), b, Enc::Cbor)),
            Err(err) => {
                tracing::error!(event = crate::telemetry::names::ENCODE_FAILED, modality = %m, error = %err, "embedding not published")
            }
        }
        if let Some(set) = self.labels.get(&m).filter(|s| !s.is_empty()) {
            let scored = set.classify(&e.vector);
            let top: Vec<_> = scored.iter().take(self.top_k.max(1)).collect();
            let body = json!({
                "robot": self.robot, "source": src, "modality": m, "seq": e.seq,
                "t_start_ns": e.t_start_ns, "t_end_ns": e.t_end_ns,
                "model": self.model, "top": top,
            });
            out.push((self.topics.labels(m, src), body.to_string().into_bytes(), Enc::Json));
            let (start, end, min) = self.event_params;
            let tracker = self
                .events
                .entry((src.to_string(), m))
                .or_insert_with(|| EventTracker::new(start, end, min));
            for ev in tracker.update(&scored, e.seq, e.t_start_ns, e.t_end_ns) {
                let body = json!({
                    "robot": self.robot, "source": src, "modality": m, "label": ev.label, "state": ev.state,
                    "start_ns": ev.start_ns, "end_ns": ev.end_ns, "prob": ev.prob, "seq": ev.seq,
                });
                out.push((self.topics.events(m, src), body.to_string().into_bytes(), Enc::Json));
            }
        }
        let alerts = queries.matches(src, m, &e.vector, e.seq, e.t_start_ns, e.t_end_ns);
        let n_alerts = alerts.len();
        for a in alerts {
            let mut body = serde_json::to_value(&a).unwrap_or_default();
            body["robot"] = json!(self.robot);
            body["source"] = json!(src);
            out.push((
                self.topics.alerts(&a.query_id),
                body.to_string().into_bytes(),
                Enc::Json,
            ));
        }
        Produced {
            messages: out,
            alerts: n_alerts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueriesConfig;
    use crate::queries::QuerySpec;

    #[test]
    fn one_window_gives_embedding_labels_event_and_alert() {
        let mut o = Outputs {
            topics: Topics::new("sensebind", "r1"),
            robot: "r1".into(),
            model: "tiny".into(),
            top_k: 1,
            scales: [(Modality::Audio, 20.0)].into_iter().collect(),
            labels: [(
                Modality::Audio,
                LabelSet::from_embeddings(
                    Modality::Audio,
                    vec!["a".into(), "b".into()],
                    vec![vec![1.0, 0.0], vec![0.0, 1.0]],
                    20.0,
                ),
            )]
            .into_iter()
            .collect(),
            event_params: (0.5, 0.3, 1),
            events: BTreeMap::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::new(dir.path(), 4);
        let d = QueriesConfig {
            default_threshold: 0.3,
            default_cooldown_s: 0.0,
            max_queries: 4,
            ..crate::config::Config::load_with_env(None, Vec::new()).unwrap().queries
        };
        let saved = reg.insert(
            QuerySpec::from_request("q", br#"{"text":"x","threshold":0.9}"#, &d).unwrap(),
            vec![1.0, 0.0],
        );
        assert_eq!(saved.unwrap(), crate::queries::Persisted::Saved);
        let e = Embedded {
            source: "mic".into(),
            modality: Modality::Audio,
            seq: 3,
            t_start_ns: 6_000_000_000,
            t_end_ns: 8_000_000_000,
            coverage: 1.0,
            vector: vec![1.0, 0.0],
            latency: std::time::Duration::ZERO,
            batch_size: 1,
        };
        let p = o.on_embedded(&e, &mut reg);
        let keys: Vec<&str> = p.messages.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sensebind/r1/embedding/audio/mic",
                "sensebind/r1/labels/audio/mic",
                "sensebind/r1/events/audio/mic",
                "sensebind/r1/alerts/q"
            ]
        );
        assert_eq!(p.alerts, 1);
        let emb = EmbeddingMsg::from_cbor(&p.messages[0].1).unwrap();
        assert_eq!((emb.seq, emb.scale, emb.vector()), (3, 20.0, vec![1.0, 0.0]));
        assert_eq!(emb.source, "mic");
        let labels: serde_json::Value = serde_json::from_slice(&p.messages[1].1).unwrap();
        assert_eq!(labels["source"], "mic");
        let alert: serde_json::Value = serde_json::from_slice(&p.messages[3].1).unwrap();
        assert_eq!(
            (alert["source"].as_str(), alert["query_id"].as_str()),
            (Some("mic"), Some("q"))
        );
        assert_eq!(labels["top"][0]["label"], "a");
        assert_eq!(labels["top"].as_array().unwrap().len(), 1);
    }
}
