//! From an embedded window to bus messages: the embedding itself, zero-shot labels,
//! label events and query alerts. Pure (no I/O), so it is tested without a bus.

use crate::bus::msg::{EventMsg, JsonMsg, LabelsMsg, MsgError};
use crate::bus::{EmbeddingMsg, Enc, FusedMember, FusedMsg, Topics};
use crate::engine::worker::Embedded;
use crate::fusion::Fused;
use crate::modality::{Modality, Target};
use crate::queries::Registry;
use crate::zeroshot::{EventTracker, LabelSet};
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
    /// The fused stream's label set (its scale is applied per window), if any.
    pub fused_labels: Option<LabelSet>,
    pub fused_events: Option<EventTracker>,
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
        let w = Win {
            source: src,
            label_scale: 1.0,
            target: m.into(),
            vector: &e.vector,
            seq: e.seq,
            t_start_ns: e.t_start_ns,
            t_end_ns: e.t_end_ns,
        };
        let keys = [
            self.topics.embedding(m, src),
            self.topics.labels(m, src),
            self.topics.events(m, src),
        ];
        self.window(&w, msg.to_cbor(), keys, queries)
    }

    /// Messages for one fused window: `embedding/fused`, its labels, events and the
    /// alerts of queries that target `fused`.
    pub fn on_fused(&mut self, f: &Fused, queries: &mut Registry) -> Produced {
        let weights: f32 = f.members.iter().map(|m| m.weight).sum();
        let scale = if weights > 0.0 {
            f.members
                .iter()
                .map(|m| m.weight * self.scales.get(&m.modality).copied().unwrap_or(1.0))
                .sum::<f32>()
                / weights
        } else {
            1.0
        };
        let coverage = f.members.iter().map(|m| m.coverage).sum::<f32>() / f.members.len().max(1) as f32;
        let msg = FusedMsg {
            robot: self.robot.clone(),
            source: "fused".into(),
            modality: "fused".into(),
            seq: f.seq,
            t_start_ns: f.t_start_ns,
            t_end_ns: f.t_end_ns,
            model: self.model.clone(),
            dim: f.vector.len() as u32,
            embedding: EmbeddingMsg::pack_vector(&f.vector),
            scale,
            coverage,
            members: f
                .members
                .iter()
                .map(|m| FusedMember {
                    source: m.source.clone(),
                    modality: m.modality,
                    weight: m.weight,
                    coverage: m.coverage,
                })
                .collect(),
            complete: f.complete,
        };
        let w = Win {
            source: "fused",
            label_scale: scale,
            target: Target::Fused,
            vector: &f.vector,
            seq: f.seq,
            t_start_ns: f.t_start_ns,
            t_end_ns: f.t_end_ns,
        };
        let keys = ["embedding", "labels", "events"].map(|k| self.topics.fused(k));
        self.window(&w, msg.to_cbor(), keys, queries)
    }

    /// One window of any stream: its embedding (encoded), labels, events and alerts,
    /// on `keys` = [embedding, labels, events].
    fn window(
        &mut self,
        w: &Win,
        embedding: Result<Vec<u8>, MsgError>,
        [embedding_key, labels_key, events_key]: [String; 3],
        queries: &mut Registry,
    ) -> Produced {
        let mut out = Vec::new();
        let (src, m) = (w.source, w.target);
        match embedding {
            Ok(b) => out.push((embedding_key, b, Enc::Cbor)),
            Err(err) => {
                tracing::error!(event = crate::telemetry::names::ENCODE_FAILED, modality = %m, error = %err, "embedding not published")
            }
        }
        // The stream's label set and event tracker (one per stream, made on first use).
        let (start, end, min) = self.event_params;
        let new_tracker = || EventTracker::new(start, end, min);
        let (labels, tracker) = match m {
            Target::Modality(md) => (
                self.labels.get(&md),
                self.events.entry((src.to_string(), md)).or_insert_with(new_tracker),
            ),
            Target::Fused => (
                self.fused_labels.as_ref(),
                self.fused_events.get_or_insert_with(new_tracker),
            ),
        };
        if let Some(set) = labels.filter(|s| !s.is_empty()) {
            let scored = set.classify_scaled(w.vector, w.label_scale);
            let top = scored.iter().take(self.top_k.max(1)).cloned().collect();
            let body = LabelsMsg {
                robot: self.robot.clone(),
                source: src.to_string(),
                modality: m,
                seq: w.seq,
                t_start_ns: w.t_start_ns,
                t_end_ns: w.t_end_ns,
                model: self.model.clone(),
                top,
            };
            out.push((labels_key, body.to_json(), Enc::Json));
            for ev in tracker.update(&scored, w.seq, w.t_start_ns, w.t_end_ns) {
                let body = EventMsg {
                    robot: self.robot.clone(),
                    source: src.to_string(),
                    modality: m,
                    label: ev.label,
                    state: ev.state,
                    start_ns: ev.start_ns,
                    end_ns: ev.end_ns,
                    prob: ev.prob,
                    seq: ev.seq,
                };
                out.push((events_key.clone(), body.to_json(), Enc::Json));
            }
        }
        let alerts = queries.matches(src, m, w.vector, w.seq, w.t_start_ns, w.t_end_ns);
        let n = alerts.len();
        for mut a in alerts {
            a.robot.clone_from(&self.robot);
            out.push((self.topics.alerts(&a.query_id), a.to_json(), Enc::Json));
        }
        Produced {
            messages: out,
            alerts: n,
        }
    }
}

/// One window of a stream, as the labels, events and alerts see it.
struct Win<'a> {
    source: &'a str,
    /// Multiplies the label set's logits (the fused stream's scale; else 1).
    label_scale: f32,
    target: Target,
    vector: &'a [f32],
    seq: i64,
    t_start_ns: i64,
    t_end_ns: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueriesConfig;
    use crate::queries::QueryPlan;

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
            fused_labels: None,
            fused_events: None,
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
            QueryPlan::from_request("q", br#"{"text":"x","threshold":0.9}"#, &d)
                .unwrap()
                .spec,
            vec![vec![1.0, 0.0]],
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

    #[test]
    fn a_fused_window_gives_its_embedding_labels_and_the_alerts_of_fused_queries() {
        let set = LabelSet::from_embeddings(
            Modality::Text,
            vec!["a".into(), "b".into()],
            vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            2.0,
        );
        let mut o = Outputs {
            topics: Topics::new("sensebind", "r1"),
            robot: "r1".into(),
            model: "tiny".into(),
            top_k: 2,
            scales: [(Modality::Audio, 20.0), (Modality::Vision, 1.0)].into_iter().collect(),
            labels: BTreeMap::new(),
            event_params: (0.5, 0.3, 1),
            events: BTreeMap::new(),
            fused_labels: Some(set),
            fused_events: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::new(dir.path(), 4);
        let d = crate::config::Config::load_with_env(None, Vec::new()).unwrap().queries;
        for (id, body) in [
            ("fq", &br#"{"text":"x","threshold":0.5,"modalities":["fused"]}"#[..]),
            ("aq", br#"{"text":"x","threshold":0.5,"modalities":["audio"]}"#),
        ] {
            let spec = QueryPlan::from_request(id, body, &d).unwrap().spec;
            assert_eq!(
                reg.insert(spec, vec![vec![1.0, 0.0]]).unwrap(),
                crate::queries::Persisted::Saved
            );
        }
        let member = |m: Modality, weight: f32| crate::fusion::Member {
            source: m.to_string(),
            modality: m,
            weight,
            coverage: 1.0,
        };
        let f = Fused {
            seq: 4,
            t_start_ns: 8_000_000_000,
            t_end_ns: 10_000_000_000,
            vector: vec![0.8, 0.6],
            members: vec![member(Modality::Vision, 3.0), member(Modality::Audio, 1.0)],
            complete: true,
        };
        let p = o.on_fused(&f, &mut reg);
        let keys: Vec<&str> = p.messages.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sensebind/r1/embedding/fused",
                "sensebind/r1/labels/fused",
                "sensebind/r1/events/fused",
                "sensebind/r1/alerts/fq"
            ]
        );
        let msg = FusedMsg::from_cbor(&p.messages[0].1).unwrap();
        assert_eq!(
            (msg.modality.as_str(), msg.source.as_str(), msg.seq),
            ("fused", "fused", 4)
        );
        assert_eq!(msg.vector(), vec![0.8, 0.6]);
        // Scale: the members' weighted mean, (3·1 + 1·20) / 4.
        assert_eq!(msg.scale, 5.75);
        assert_eq!(msg.members.len(), 2);
        let labels: serde_json::Value = serde_json::from_slice(&p.messages[1].1).unwrap();
        assert_eq!(labels["modality"], "fused");
        // softmax(2 · 5.75 · [0.8, 0.6]) for "a"
        let pa = 1.0 / (1.0 + (-(2.0 * 5.75 * 0.2f64)).exp());
        assert!(
            (labels["top"][0]["prob"].as_f64().unwrap() - pa).abs() < 1e-5,
            "{labels}"
        );
        let alert: serde_json::Value = serde_json::from_slice(&p.messages[3].1).unwrap();
        assert_eq!(
            (alert["modality"].as_str(), alert["source"].as_str()),
            (Some("fused"), Some("fused"))
        );
    }
}
