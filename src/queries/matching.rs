//! Matching windows against the registered queries: a window of a chosen stream kind
//! fires a query when its cosine reaches the threshold (`all` queries: when every
//! condition has held within `within_windows` seqs), at most once per cooldown of
//! sensor time.

use super::{QuerySpec, Registry};
use crate::modality::Target;
use std::collections::BTreeMap;

/// An alert to publish on `alerts/<id>`: the bus message itself. The registry fills
/// every field but `robot`, which the outputs stage (that knows it) sets.
pub type Alert = crate::bus::msg::AlertMsg;

/// The window that met one condition of an `all` query, with its score (the shape of
/// a search hit).
pub type ConditionHit = crate::history::Hit;

pub(super) struct Registered {
    pub(super) spec: QuerySpec,
    /// One vector, or one per condition.
    pub(super) vectors: Vec<Vec<f32>>,
    pub(super) last_fired_ns: Option<i64>,
    /// `all` queries: each condition's recent matching windows, by seq (at most
    /// `MET_KEPT` each), so windows that arrive out of order still pair up.
    pub(super) met: Vec<BTreeMap<i64, ConditionHit>>,
}

/// Matching windows remembered per condition of an `all` query.
const MET_KEPT: usize = 64;

impl Registered {
    pub(super) fn new(spec: QuerySpec, vectors: Vec<Vec<f32>>) -> Registered {
        let met = vec![BTreeMap::new(); spec.conditions.len()];
        Registered {
            spec,
            vectors,
            last_fired_ns: None,
            met,
        }
    }
}

fn applies(modalities: &[Target], sources: &[String], source: &str, t: Target) -> bool {
    modalities.contains(&t) && (sources.is_empty() || sources.iter().any(|s| s == source))
}

fn dot(a: &[f32], b: &[f32]) -> Option<f32> {
    (a.len() == b.len()).then(|| a.iter().zip(b).map(|(x, y)| x * y).sum())
}

impl Registry {
    /// Cosine of every query that applies to this stream, with its threshold (the
    /// live view plots them over time); no cooldown, nothing fires. For an `all`
    /// query: its best condition that applies.
    pub fn scores(&self, source: &str, modality: Target, emb: &[f32]) -> Vec<(String, f32, f32)> {
        let mut out = Vec::new();
        for r in self.queries.values() {
            if r.spec.conditions.is_empty() {
                if applies(&r.spec.modalities, &r.spec.sources, source, modality) {
                    if let Some(s) = dot(&r.vectors[0], emb) {
                        out.push((r.spec.id.clone(), s, r.spec.threshold));
                    }
                }
                continue;
            }
            let best = r
                .spec
                .conditions
                .iter()
                .zip(&r.vectors)
                .filter(|(c, _)| applies(&c.modalities, &c.sources, source, modality))
                .filter_map(|(c, v)| Some((dot(v, emb)?, c.threshold)))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((s, t)) = best {
                out.push((r.spec.id.clone(), s, t));
            }
        }
        out
    }

    /// Match one window's embedding; returns the alerts that fire.
    pub fn matches(
        &mut self,
        source: &str,
        modality: Target,
        emb: &[f32],
        seq: i64,
        t_start_ns: i64,
        t_end_ns: i64,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for r in self.queries.values_mut() {
            let cool_ns = crate::config::secs_ns(r.spec.cooldown_s);
            // Cooled once `cooldown_s` of sensor time passed since the last alert, or
            // when sensor time went back before it (a replay started again).
            let cooled = |last: Option<i64>| last.is_none_or(|l| t_end_ns < l || t_end_ns.saturating_sub(l) >= cool_ns);
            if r.spec.conditions.is_empty() {
                if !applies(&r.spec.modalities, &r.spec.sources, source, modality) {
                    continue;
                }
                let Some(score) = dot(&r.vectors[0], emb) else { continue };
                if score < r.spec.threshold || !cooled(r.last_fired_ns) {
                    continue;
                }
                r.last_fired_ns = Some(t_end_ns);
                out.push(Alert {
                    robot: String::new(),
                    source: source.to_string(),
                    query_id: r.spec.id.clone(),
                    text: r.spec.text.clone(),
                    modality,
                    score,
                    threshold: r.spec.threshold,
                    seq,
                    t_start_ns,
                    t_end_ns,
                    conditions: None,
                });
                continue;
            }
            // `all`: note each condition this window meets; fire when, for one of
            // them, every other condition was met within `within_windows` seqs.
            let within = r.spec.within_windows as i64;
            let mut fired = None;
            for i in 0..r.spec.conditions.len() {
                let c = &r.spec.conditions[i];
                if !applies(&c.modalities, &c.sources, source, modality) {
                    continue;
                }
                let Some(score) = dot(&r.vectors[i], emb) else { continue };
                if score < c.threshold {
                    continue;
                }
                let hit = ConditionHit {
                    source: source.to_string(),
                    modality,
                    seq,
                    t_start_ns,
                    t_end_ns,
                    score,
                };
                let m = &mut r.met[i];
                if m.get(&seq).is_none_or(|h| h.score < score) {
                    m.insert(seq, hit.clone());
                }
                while m.len() > MET_KEPT {
                    m.pop_first();
                }
                if fired.is_some() {
                    continue;
                }
                // The best hit of every other condition within reach of this seq.
                let others: Option<Vec<ConditionHit>> = (0..r.met.len())
                    .map(|j| {
                        if j == i {
                            return Some(hit.clone());
                        }
                        r.met[j]
                            .range(seq - within..=seq + within)
                            .map(|(_, h)| h)
                            .max_by(|a, b| a.score.total_cmp(&b.score))
                            .cloned()
                    })
                    .collect();
                fired = others;
            }
            let Some(hits) = fired else { continue };
            if !cooled(r.last_fired_ns) {
                continue;
            }
            r.last_fired_ns = Some(t_end_ns);
            let (score, threshold) = hits
                .iter()
                .zip(&r.spec.conditions)
                .map(|(h, c)| (h.score, c.threshold))
                .min_by(|a, b| (a.0 - a.1).total_cmp(&(b.0 - b.1)))
                .unwrap_or((0.0, 0.0));
            out.push(Alert {
                robot: String::new(),
                source: source.to_string(),
                query_id: r.spec.id.clone(),
                text: r.spec.text.clone(),
                modality,
                score,
                threshold,
                seq,
                t_start_ns: hits.iter().map(|h| h.t_start_ns).min().unwrap_or(t_start_ns),
                t_end_ns: hits.iter().map(|h| h.t_end_ns).max().unwrap_or(t_end_ns),
                conditions: Some(hits),
            });
        }
        out
    }
}
