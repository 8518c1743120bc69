//! Zero-shot labels and label events.
//!
//! Each label's prompts are embedded once with the text encoder, averaged (each
//! normalised) and renormalised — CLIP-style prompt ensembling. A window's label
//! probabilities are `softmax(s_m · s_t · cos(e_m, e_label))` over the set, with `s_m`
//! and `s_t` the modality's and text's logit scales from the pack manifest: exactly
//! official ImageBind's `softmax(emb_m @ emb_text.T)`, whose embeddings carry those
//! scales. Events add hysteresis on top of the probabilities.

use crate::bus::msg::EventState;
use crate::engine::{l2_normalise, Encoder, EngineError};
use crate::modality::Modality;
use crate::preprocess::text::TextPrep;
use serde::Serialize;
use std::collections::BTreeMap;

/// A label with its score and probability (the `top` entries of a labels message).
pub use crate::bus::msg::LabelScore as Scored;

pub struct LabelSet {
    pub modality: Modality,
    labels: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    /// s_m · s_t
    scale: f32,
}

impl LabelSet {
    /// Embed every label's prompts (one batched text-encoder call).
    pub fn build(
        modality: Modality,
        set: &BTreeMap<String, Vec<String>>,
        text: &dyn Encoder,
        tok: &TextPrep,
        modality_scale: f32,
    ) -> Result<LabelSet, EngineError> {
        let prompts: Vec<_> = set.values().flatten().map(|p| tok.input(p)).collect();
        let vecs = text.encode(&prompts)?;
        let mut it = vecs.into_iter();
        let mut labels = Vec::new();
        let mut embeddings = Vec::new();
        for (label, ps) in set {
            let mut acc = vec![0.0f32; text.dim()];
            for v in it.by_ref().take(ps.len()) {
                acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
            }
            acc.iter_mut().for_each(|a| *a /= ps.len() as f32);
            l2_normalise(&mut acc);
            labels.push(label.clone());
            embeddings.push(acc);
        }
        Ok(LabelSet {
            modality,
            labels,
            embeddings,
            scale: modality_scale * text.logit_scale(),
        })
    }

    /// Build from precomputed label embeddings (tests, caches).
    pub fn from_embeddings(modality: Modality, labels: Vec<String>, embeddings: Vec<Vec<f32>>, scale: f32) -> Self {
        LabelSet {
            modality,
            labels,
            embeddings,
            scale,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Every label scored, best first. `emb` must be unit-normalised.
    pub fn classify(&self, emb: &[f32]) -> Vec<Scored> {
        self.classify_scaled(emb, 1.0)
    }

    /// As [`LabelSet::classify`], with the logits also multiplied by `scale` (the
    /// fused stream's scale, which depends on its members).
    pub fn classify_scaled(&self, emb: &[f32], scale: f32) -> Vec<Scored> {
        let cos: Vec<f32> = self
            .embeddings
            .iter()
            .map(|t| t.iter().zip(emb).map(|(a, b)| a * b).sum())
            .collect();
        let logits: Vec<f64> = cos.iter().map(|c| (*c * self.scale * scale) as f64).collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let mut out: Vec<Scored> = self
            .labels
            .iter()
            .zip(cos.iter().zip(&exps))
            .map(|(l, (c, e))| Scored {
                label: l.clone(),
                score: *c,
                prob: (e / sum) as f32,
            })
            .collect();
        out.sort_by(|a, b| b.prob.total_cmp(&a.prob));
        out
    }
}

/// A label event: a label became (`start`) or stopped being (`end`) the state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub label: String,
    pub state: EventState,
    /// Start of the first window of the event.
    pub start_ns: i64,
    /// End of the last window of the event (`end` events only).
    pub end_ns: Option<i64>,
    /// Probability in the window that triggered this message.
    pub prob: f32,
    pub seq: i64,
}

#[derive(Debug, Default, Clone)]
struct LabelState {
    active: bool,
    run: u32,
    run_start_ns: i64,
    last_end_ns: i64,
}

/// Hysteresis per label: start after `min_windows` consecutive windows with
/// prob ≥ `start_prob`; end at the first window with prob < `end_prob`.
pub struct EventTracker {
    start_prob: f32,
    end_prob: f32,
    min_windows: u32,
    state: BTreeMap<String, LabelState>,
}

impl EventTracker {
    pub fn new(start_prob: f32, end_prob: f32, min_windows: u32) -> Self {
        EventTracker {
            start_prob,
            end_prob,
            min_windows: min_windows.max(1),
            state: BTreeMap::new(),
        }
    }

    pub fn update(&mut self, scored: &[Scored], seq: i64, t_start_ns: i64, t_end_ns: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for s in scored {
            let st = self.state.entry(s.label.clone()).or_default();
            if st.active {
                if s.prob < self.end_prob {
                    st.active = false;
                    st.run = 0;
                    out.push(Event {
                        label: s.label.clone(),
                        state: EventState::End,
                        start_ns: st.run_start_ns,
                        end_ns: Some(st.last_end_ns),
                        prob: s.prob,
                        seq,
                    });
                } else {
                    st.last_end_ns = t_end_ns;
                }
            } else if s.prob >= self.start_prob {
                if st.run == 0 {
                    st.run_start_ns = t_start_ns;
                }
                st.run += 1;
                st.last_end_ns = t_end_ns;
                if st.run >= self.min_windows {
                    st.active = true;
                    out.push(Event {
                        label: s.label.clone(),
                        state: EventState::Start,
                        start_ns: st.run_start_ns,
                        end_ns: None,
                        prob: s.prob,
                        seq,
                    });
                }
            } else {
                st.run = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> LabelSet {
        LabelSet::from_embeddings(
            Modality::Audio,
            vec!["a".into(), "b".into()],
            vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            20.0 * 100.0 / 100.0,
        )
    }

    #[test]
    fn probabilities_are_scaled_softmax() {
        let s = set().classify(&[0.8, 0.6]);
        assert_eq!(s[0].label, "a");
        let expect = 1.0 / (1.0 + (20.0f64 * (0.6 - 0.8)).exp());
        assert!((s[0].prob as f64 - expect).abs() < 1e-6);
        assert!((s[0].score - 0.8).abs() < 1e-6);
        assert!((s.iter().map(|x| x.prob).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn hysteresis() {
        let mut t = EventTracker::new(0.6, 0.4, 2);
        let sc = |p: f32| {
            vec![Scored {
                label: "x".into(),
                score: 0.0,
                prob: p,
            }]
        };
        assert!(t.update(&sc(0.7), 0, 0, 2).is_empty());
        let e = t.update(&sc(0.65), 1, 2, 4);
        assert_eq!(e[0].state, EventState::Start);
        assert_eq!(e[0].start_ns, 0);
        assert!(t.update(&sc(0.5), 2, 4, 6).is_empty(), "between thresholds: stays on");
        let e = t.update(&sc(0.1), 3, 6, 8);
        assert_eq!((e[0].state, e[0].end_ns), (EventState::End, Some(6)));
        assert!(t.update(&sc(0.7), 4, 8, 10).is_empty());
        assert!(t.update(&sc(0.3), 5, 10, 12).is_empty(), "a run below start resets");
        assert!(t.update(&sc(0.7), 6, 12, 14).is_empty());
    }
}
