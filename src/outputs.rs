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
    pub labels: BTreeMap<Modality, LabelSet>,
    pub events: BTreeMap<Modality, EventTracker>,
}

/// A message to publish.
pub type Message = (String, Vec<u8>, Enc);

impl Outputs {
    /// Messages for one embedded window; alerts come from `queries`.
    pub fn on_embedded(&mut self, e: &Embedded, queries: &mut Registry) -> Vec<Message> {
        let mut out = Vec::new();
        let m = e.modality;
        let msg = EmbeddingMsg {
            robot: self.robot.clone(),
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
            Ok(b) => out.push((self.topics.embedding(m), b, Enc::Cbor)),
            Err(err) => {
                tracing::error!(event = "encode_failed", modality = %m, error = %err, "embedding not published")
            }
        }
        if let Some(set) = self.labels.get(&m).filter(|s| !s.is_empty()) {
            let scored = set.classify(&e.vector);
            let top: Vec<_> = scored.iter().take(self.top_k.max(1)).collect();
            let body = json!({
                "robot": self.robot, "modality": m, "seq": e.seq,
                "t_start_ns": e.t_start_ns, "t_end_ns": e.t_end_ns,
                "model": self.model, "top": top,
            });
            out.push((self.topics.labels(m), body.to_string().into_bytes(), Enc::Json));
            if let Some(tracker) = self.events.get_mut(&m) {
                for ev in tracker.update(&scored, e.seq, e.t_start_ns, e.t_end_ns) {
                    let body = json!({
                        "robot": self.robot, "modality": m, "label": ev.label, "state": ev.state,
                        "start_ns": ev.start_ns, "end_ns": ev.end_ns, "prob": ev.prob, "seq": ev.seq,
                    });
                    out.push((self.topics.events(m), body.to_string().into_bytes(), Enc::Json));
                }
            }
        }
        for a in queries.matches(m, &e.vector, e.seq, e.t_start_ns, e.t_end_ns) {
            let mut body = serde_json::to_value(&a).unwrap_or_default();
            body["robot"] = json!(self.robot);
            out.push((
                self.topics.alerts(&a.query_id),
                body.to_string().into_bytes(),
                Enc::Json,
            ));
        }
        out
    }
}
