//! Query alerts: clients register a query under an id (a text, a weighted sum of
//! texts, examples and embeddings, an example, or `all` of several conditions; see
//! [`request`]); every new window of a chosen stream kind is compared with the
//! query's vector, and an alert fires when cosine ≥ threshold (for `all`: when every
//! condition has held within `within_windows` seqs), at most once per cooldown
//! (measured in sensor time). Queries and their vectors persist in
//! `<state_dir>/queries.json`, written atomically (temp file, fsync, rename), and are
//! reloaded on restart with [`Registry::restore`], which does not write the store.

use crate::bus::validate_chunk;
use crate::config::QueriesConfig;
use crate::modality::Target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query `{id}`: {reason}")]
    Invalid { id: String, reason: String },
    /// `queries.max_queries` are registered.
    #[error("query `{id}`: at most {max} queries may be registered ({count} are)")]
    Full { id: String, max: usize, count: usize },
    #[error("query store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    /// The store would grow past `queries.max_store_bytes`.
    #[error("query `{id}`: the query store would hold {bytes} bytes with it (`queries.max_store_bytes` = {max})")]
    StoreFull { id: String, bytes: usize, max: usize },
}

/// Why a request on `queries/<id>` was refused: the `code` of its
/// `errors/queries/<id>` reply, and the `reason` label of
/// `sensebind_query_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The key below `queries/` is not one valid id chunk.
    BadId,
    /// The request body is larger than `queries.max_request_bytes`, or the store
    /// would grow past `queries.max_store_bytes`.
    TooLarge,
    /// Not a valid request (JSON, text length, threshold, …).
    Invalid,
    /// Over `queries.registrations_per_s` / `registration_burst`, or the same id
    /// again within `queries.id_min_interval_s`.
    RateLimited,
    /// `queries.max_queries` are registered.
    TooMany,
    /// A delete of an id that is not registered.
    NotRegistered,
    /// The text encoder failed.
    Encoder,
    /// Registered, but the store could not be written: kept in memory only.
    Store,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::BadId,
        Refusal::TooLarge,
        Refusal::Invalid,
        Refusal::RateLimited,
        Refusal::TooMany,
        Refusal::NotRegistered,
        Refusal::Encoder,
        Refusal::Store,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadId => "bad_id",
            Refusal::TooLarge => "too_large",
            Refusal::Invalid => "invalid",
            Refusal::RateLimited => "rate_limited",
            Refusal::TooMany => "too_many",
            Refusal::NotRegistered => "not_registered",
            Refusal::Encoder => "encoder",
            Refusal::Store => "store",
        }
    }
}

impl QueryError {
    pub fn refusal(&self) -> Refusal {
        match self {
            QueryError::Invalid { .. } => Refusal::Invalid,
            QueryError::Full { .. } => Refusal::TooMany,
            QueryError::Store { .. } => Refusal::Store,
            QueryError::StoreFull { .. } => Refusal::TooLarge,
        }
    }
}

/// Admission of requests from the bus (hostile input): an overall token bucket
/// (`registrations_per_s`, `registration_burst`) and at most one request per id per
/// `id_min_interval_s`, so no client can drive the text encoder or the disk at an
/// unbounded rate. Time is passed in (tests, replays).
#[derive(Debug)]
pub struct Admission {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<std::time::Instant>,
    id_interval: std::time::Duration,
    /// Ids admitted within the last `id_interval` (at most burst + rate × interval).
    recent: BTreeMap<String, std::time::Instant>,
}

impl Admission {
    pub fn new(cfg: &QueriesConfig) -> Self {
        Admission {
            rate: cfg.registrations_per_s,
            burst: cfg.registration_burst as f64,
            tokens: cfg.registration_burst as f64,
            last: None,
            id_interval: crate::config::secs(cfg.id_min_interval_s),
            recent: BTreeMap::new(),
        }
    }

    /// Admit one request for `id` at `now`, or say why not. `put` (a registration)
    /// also counts against the id's own interval; a removal only against the
    /// overall rate.
    pub fn admit(&mut self, id: &str, put: bool, now: std::time::Instant) -> Result<(), String> {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
        let interval = self.id_interval;
        self.recent.retain(|_, t| now.saturating_duration_since(*t) < interval);
        if let Some(t) = self.recent.get(id).filter(|_| put) {
            return Err(format!(
                "query `{id}` was registered {:.2} s ago: at most one request per id every {} s (`queries.id_min_interval_s`)",
                now.saturating_duration_since(*t).as_secs_f64(),
                interval.as_secs_f64()
            ));
        }
        if self.tokens < 1.0 {
            return Err(format!(
                "too many query requests: at most {} per second, bursts of {} (`queries.registrations_per_s`, `queries.registration_burst`); try again later",
                self.rate, self.burst
            ));
        }
        self.tokens -= 1.0;
        if put {
            self.recent.insert(id.to_string(), now);
        }
        Ok(())
    }
}

pub mod request;

pub use request::{combine, ConditionSpec, QueryKind, QueryPlan, QueryRequest, QuerySpec, Term, TermSource};

/// An alert to publish on `alerts/<id>`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub query_id: String,
    pub text: String,
    pub modality: Target,
    pub score: f32,
    pub threshold: f32,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
    /// `all` queries: the window that met each condition (in the conditions' order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ConditionHit>>,
}

/// The window that met one condition of an `all` query, with its score (the shape of
/// a search hit).
pub type ConditionHit = crate::history::Hit;

struct Registered {
    spec: QuerySpec,
    /// One vector, or one per condition.
    vectors: Vec<Vec<f32>>,
    last_fired_ns: Option<i64>,
    /// `all` queries: each condition's recent matching windows, by seq (at most
    /// `MET_KEPT` each), so windows that arrive out of order still pair up.
    met: Vec<BTreeMap<i64, ConditionHit>>,
}

/// Matching windows remembered per condition of an `all` query.
const MET_KEPT: usize = 64;

impl Registered {
    fn new(spec: QuerySpec, vectors: Vec<Vec<f32>>) -> Registered {
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

/// The registered queries.
pub struct Registry {
    path: PathBuf,
    max: usize,
    /// Largest store file, in bytes (`queries.max_store_bytes`).
    max_bytes: usize,
    /// The model the vectors come from (stored with them).
    model: String,
    queries: BTreeMap<String, Registered>,
    /// The last write of the store failed (full disk, read-only state directory): the
    /// queries in memory are newer than the file. Cleared by the next good write.
    store_error: Option<String>,
    /// What was wrong with the store when it was loaded (a corrupt file kept aside).
    load_problem: Option<String>,
}

/// Whether a change reached the store.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Persisted {
    Saved,
    /// The query is registered (or removed) in memory, but the store could not be
    /// written: the change is lost at restart unless a later write succeeds.
    MemoryOnly(String),
}

/// The store: every spec with its vectors, and the model they were embedded with.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    model: String,
    queries: Vec<StoredQuery>,
}

/// One stored query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredQuery {
    #[serde(flatten)]
    pub spec: QuerySpec,
    /// One vector, or one per condition (empty in a version-1 store: text only).
    #[serde(default)]
    pub vectors: Vec<Vec<f32>>,
}

impl Registry {
    pub fn new(state_dir: &Path, max: usize) -> Self {
        Registry {
            path: state_dir.join("queries.json"),
            max,
            max_bytes: usize::MAX,
            model: String::new(),
            queries: BTreeMap::new(),
            store_error: None,
            load_problem: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name the model the vectors come from (written to the store).
    pub fn with_model(mut self, model: &str) -> Self {
        self.model = model.to_string();
        self
    }

    /// The last store write error, while the store is behind memory.
    pub fn store_error(&self) -> Option<&str> {
        self.store_error.as_deref()
    }

    /// What was wrong with the store at load, if anything.
    pub fn load_problem(&self) -> Option<&str> {
        self.load_problem.as_deref()
    }

    /// Read the stored specs (the caller embeds and re-adds them). A store that is
    /// not JSON, of another version, or holding bad entries does not stop the daemon:
    /// its bytes are kept aside as `queries.json.bad-<unix time>`, every entry that
    /// still parses is returned, and the problem is kept for health
    /// ([`Registry::load_problem`]). Only an unreadable file is an error.
    pub fn load_specs(&mut self) -> Result<Vec<QuerySpec>, QueryError> {
        Ok(self.load()?.1.into_iter().map(|q| q.spec).collect())
    }

    /// As [`Registry::load_specs`], with each query's stored vectors and the model
    /// they were embedded with (empty for a version-1 store).
    pub fn load(&mut self) -> Result<(String, Vec<StoredQuery>), QueryError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), Vec::new())),
            Err(e) => {
                return Err(QueryError::Store {
                    path: self.path.clone(),
                    reason: format!("cannot read: {e}"),
                })
            }
        };
        let (model, specs, problem) = parse_store(&bytes);
        if let Some(problem) = problem {
            let kept = self.keep_bad_copy(&bytes);
            let msg = format!(
                "{} was damaged ({problem}); {} of its queries were recovered; {kept}",
                self.path.display(),
                specs.len()
            );
            tracing::error!(event = crate::telemetry::names::QUERY_STORE_CORRUPT, path = %self.path.display(), recovered = specs.len(), problem = %crate::ident::clip(&problem, 300), "query store damaged; starting with what could be recovered");
            self.load_problem = Some(msg);
        }
        Ok((model, specs))
    }

    /// Note a problem found while reloading (shown in health like a damaged store).
    pub fn add_load_problem(&mut self, p: String) {
        self.load_problem = Some(match self.load_problem.take() {
            Some(old) => format!("{old}; {p}"),
            None => p,
        });
    }

    /// Write `bytes` next to the store as `queries.json.bad-<unix time>`.
    fn keep_bad_copy(&self, bytes: &[u8]) -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let copy = self.path.with_extension(format!("json.bad-{secs}"));
        match std::fs::write(&copy, bytes) {
            Ok(()) => format!("the damaged file is kept as {}", copy.display()),
            Err(e) => format!("a copy could not be kept ({}: {e})", copy.display()),
        }
    }

    /// Re-add a query read back from the store by [`Registry::load_specs`], with its
    /// embedding, **without writing the store**: the file already holds it, and a
    /// rewrite per query at start-up would leave a partial store behind if the process
    /// were killed mid-way. Use this (not [`Registry::insert`]) when reloading at start.
    ///
    /// Never fails and never drops a query: when the store holds more queries than
    /// `queries.max_queries` (the limit was lowered since they were registered), all are
    /// kept and a `queries_over_limit` warning is logged; [`Registry::insert`] then
    /// refuses new ids until removals bring the count under the limit (replacing an
    /// existing id still works).
    pub fn restore(&mut self, spec: QuerySpec, vectors: Vec<Vec<f32>>) {
        let id = spec.id.clone();
        self.queries.insert(id.clone(), Registered::new(spec, vectors));
        if self.queries.len() > self.max {
            tracing::warn!(
                event = crate::telemetry::names::QUERIES_OVER_LIMIT,
                query = %id,
                count = self.queries.len(),
                max_queries = self.max,
                path = %self.path.display(),
                "more stored queries than queries.max_queries: all are kept, new registrations are refused until some are removed"
            );
        }
    }

    /// Add or replace a query, then write the store. A new id is refused while
    /// `max_queries` or more are registered (also when restored queries exceed it).
    /// When the store cannot be written the query stays registered in memory
    /// ([`Persisted::MemoryOnly`]); the next successful write catches the file up.
    pub fn insert(&mut self, spec: QuerySpec, vectors: Vec<Vec<f32>>) -> Result<Persisted, QueryError> {
        if !self.queries.contains_key(&spec.id) && self.queries.len() >= self.max {
            return Err(QueryError::Full {
                id: spec.id,
                max: self.max,
                count: self.queries.len(),
            });
        }
        if vectors.len() != spec.vectors() {
            return Err(QueryError::Invalid {
                id: spec.id.clone(),
                reason: format!("{} vectors for a query that needs {}", vectors.len(), spec.vectors()),
            });
        }
        let id = spec.id.clone();
        let old = self.queries.insert(id.clone(), Registered::new(spec, vectors));
        let body = self.body();
        let bytes = body.as_ref().map_or(0, Vec::len);
        if bytes > self.max_bytes {
            match old {
                Some(o) => self.queries.insert(id.clone(), o),
                None => self.queries.remove(&id),
            };
            return Err(QueryError::StoreFull {
                id,
                bytes,
                max: self.max_bytes,
            });
        }
        Ok(self.persist_body(body))
    }

    /// Bound the store file's size (`queries.max_store_bytes`).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Remove a query and write the store; `None` if it was not registered.
    pub fn remove(&mut self, id: &str) -> Option<Persisted> {
        self.queries.remove(id)?;
        Some(self.persist())
    }

    /// Write the store now if the last write failed; `true` once it is in step.
    pub fn retry_save(&mut self) -> bool {
        self.store_error.is_none() || self.persist() == Persisted::Saved
    }

    fn persist(&mut self) -> Persisted {
        let body = self.body();
        self.persist_body(body)
    }

    fn persist_body(&mut self, body: Result<Vec<u8>, String>) -> Persisted {
        match self.save(body) {
            Ok(()) => {
                if self.store_error.take().is_some() {
                    tracing::info!(event = crate::telemetry::names::QUERY_STORE_RECOVERED, path = %self.path.display(), "query store written again; it holds every registered query");
                }
                Persisted::Saved
            }
            Err(e) => {
                let msg = e.to_string();
                if self.store_error.is_none() {
                    tracing::error!(event = crate::telemetry::names::QUERY_STORE_FAILED, error = %msg, "cannot write the query store; queries are kept in memory only");
                }
                self.store_error = Some(msg.clone());
                Persisted::MemoryOnly(msg)
            }
        }
    }

    pub fn specs(&self) -> Vec<QuerySpec> {
        self.queries.values().map(|r| r.spec.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

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

    /// The store file's bytes for the queries registered now.
    fn body(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec_pretty(&Stored {
            version: 2,
            model: self.model.clone(),
            queries: self
                .queries
                .values()
                .map(|r| StoredQuery {
                    spec: r.spec.clone(),
                    vectors: r.vectors.clone(),
                })
                .collect(),
        })
        .map_err(|e| e.to_string())
    }

    fn save(&self, body: Result<Vec<u8>, String>) -> Result<(), QueryError> {
        let serr = |reason: String| QueryError::Store {
            path: self.path.clone(),
            reason,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| serr(format!("cannot create directory: {e}")))?;
        let body = body.map_err(serr)?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| serr(e.to_string()))
    }
}

/// Parse a store's bytes: the model, every entry that parses, and what was wrong, if
/// anything. Version 1 (text queries, no vectors) and 2 are read.
pub fn parse_store(bytes: &[u8]) -> (String, Vec<StoredQuery>, Option<String>) {
    let v: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return (String::new(), Vec::new(), Some(format!("not JSON: {e}"))),
    };
    match v.get("version").and_then(|x| x.as_u64()) {
        Some(1 | 2) => {}
        other => {
            return (
                String::new(),
                Vec::new(),
                Some(format!("store version {other:?}, expected 1 or 2")),
            )
        }
    }
    let model = v.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    let Some(items) = v.get("queries").and_then(|q| q.as_array()) else {
        return (model, Vec::new(), Some("no `queries` list".into()));
    };
    let mut specs: Vec<StoredQuery> = Vec::new();
    let mut bad = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match serde_json::from_value::<StoredQuery>(item.clone()) {
            Ok(s) if validate_chunk(&s.spec.id).is_ok() && !specs.iter().any(|o| o.spec.id == s.spec.id) => {
                specs.push(s)
            }
            Ok(s) => bad.push(format!(
                "entry {i}: bad or repeated id `{}`",
                crate::ident::clip(&s.spec.id, 40)
            )),
            Err(e) => bad.push(format!("entry {i}: {e}")),
        }
    }
    let problem = (!bad.is_empty()).then(|| format!("{} bad entries: {}", bad.len(), bad.join("; ")));
    (model, specs, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modality::Modality;

    fn spec_of(id: &str, body: &[u8], d: &QueriesConfig) -> Result<QuerySpec, QueryError> {
        QueryPlan::from_request(id, body, d).map(|p| p.spec)
    }

    fn defaults() -> QueriesConfig {
        QueriesConfig {
            default_threshold: 0.3,
            default_cooldown_s: 10.0,
            max_queries: 2,
            presets: Default::default(),
            ..crate::config::Config::load_with_env(None, Vec::new()).unwrap().queries
        }
    }

    #[test]
    fn validation_messages() {
        let d = defaults();
        let ok = spec_of("dog", br#"{"text":" a dog "}"#, &d).unwrap();
        assert_eq!((ok.text.as_str(), ok.threshold, ok.modalities.len()), ("a dog", 0.3, 5));
        for (body, needle) in [
            (&b"not json"[..], "expected JSON"),
            (br#"{"text":""}"#, "`text` is empty"),
            (br#"{"text":"x","threshold":3}"#, "`threshold`"),
            (br#"{"text":"x","modalities":["text"]}"#, "not a stream"),
            (br#"{"text":"x","modalities":["smell"]}"#, "expected JSON"),
            (br#"{"text":"x","cooldown_s":-1}"#, "`cooldown_s`"),
            (br#"{"text":"x","colour":1}"#, "unknown field"),
        ] {
            let e = spec_of("q1", body, &d).unwrap_err().to_string();
            assert!(e.contains("query `q1`") && e.contains(needle), "{e}");
        }
        assert!(spec_of("a/b", br#"{"text":"x"}"#, &d).is_err());
    }

    #[test]
    fn repeated_targets_are_kept_once_and_the_store_is_bounded() {
        let d = defaults();
        // 150 000 × "audio" (and a source 150 000 times) is one of each.
        let body = format!(
            r#"{{"text":"x","modalities":[{}"fused"],"sources":[{}"mic"]}}"#,
            "\"audio\",".repeat(150_000),
            "\"mic\",".repeat(150_000)
        );
        let spec = spec_of("q", body.as_bytes(), &d).unwrap();
        assert_eq!(spec.modalities, vec![Modality::Audio.into(), Target::Fused]);
        assert_eq!(spec.sources, vec!["mic".to_string()]);
        let many: Vec<String> = (0..65).map(|i| format!("\"s{i}\"")).collect();
        let e = spec_of(
            "q",
            format!(r#"{{"text":"x","sources":[{}]}}"#, many.join(",")).as_bytes(),
            &d,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 64"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::new(dir.path(), 100).with_max_bytes(64 << 10);
        let v = vec![vec![0.5f32; 1024]];
        let mut n = 0;
        let refused = loop {
            match r.insert(spec_of(&format!("q{n}"), br#"{"text":"x"}"#, &d).unwrap(), v.clone()) {
                Ok(p) => assert_eq!(p, Persisted::Saved),
                Err(e) => break e,
            }
            n += 1;
        };
        assert_eq!(refused.refusal(), Refusal::TooLarge);
        assert!(refused.to_string().contains("queries.max_store_bytes"), "{refused}");
        assert!(n >= 2, "{n} queries fit");
        let size = std::fs::metadata(r.path()).unwrap().len() as usize;
        assert!(size <= 64 << 10, "{size}");
        assert_eq!(r.len(), n, "the refused query is not registered");
        // Replacing a query with one of the same size still works; a removal frees room.
        assert_eq!(
            r.insert(spec_of("q0", br#"{"text":"y"}"#, &d).unwrap(), v.clone())
                .unwrap(),
            Persisted::Saved
        );
        assert_eq!(r.remove("q1"), Some(Persisted::Saved));
        assert_eq!(
            r.insert(spec_of(&format!("q{n}"), br#"{"text":"x"}"#, &d).unwrap(), v)
                .unwrap(),
            Persisted::Saved
        );
    }

    #[test]
    fn a_score_equal_to_the_threshold_fires_and_one_just_below_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = defaults();
        // Unit vectors whose dot is exactly 0.5 in f32.
        let v = vec![0.5f32, 0.5, 0.5, 0.5];
        let e = [0.5f32, 0.5, 0.5, -0.5];
        let fires = |threshold: f32| {
            let mut r = Registry::new(dir.path(), 4);
            let mut spec = spec_of("q", br#"{"text":"x","cooldown_s":0}"#, &d).unwrap();
            spec.threshold = threshold;
            assert_eq!(r.insert(spec, vec![v.clone()]).unwrap(), Persisted::Saved);
            !r.matches("mic", Modality::Audio.into(), &e, 0, 0, 2_000_000_000)
                .is_empty()
        };
        assert!(fires(0.5), "score = threshold fires");
        assert!(
            !fires(f32::from_bits(0.5f32.to_bits() + 1)),
            "threshold one ulp above the score does not"
        );
        assert!(fires(f32::from_bits(0.5f32.to_bits() - 1)));
    }

    #[test]
    fn the_cooldown_ends_at_its_exact_boundary_and_when_sensor_time_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = defaults();
        let mut r = Registry::new(dir.path(), 4);
        let spec = spec_of("q", br#"{"text":"x","threshold":0.0,"cooldown_s":2}"#, &d).unwrap();
        assert_eq!(r.insert(spec, vec![vec![1.0, 0.0]]).unwrap(), Persisted::Saved);
        let mut at = |seq: i64, t_end: i64| {
            !r.matches(
                "mic",
                Modality::Audio.into(),
                &[1.0, 0.0],
                seq,
                t_end - 2_000_000_000,
                t_end,
            )
            .is_empty()
        };
        assert!(at(0, 10_000_000_000));
        assert!(!at(1, 11_999_999_999), "1 ns short of the cooldown");
        assert!(at(2, 12_000_000_000), "exactly the cooldown later");
        // A replay starts again: sensor time goes back; the cooldown does not hold it.
        assert!(at(0, 2_000_000_000), "time went back");
        assert!(!at(1, 3_000_000_000));
        assert!(at(2, 4_000_000_000));
    }

    #[test]
    fn cooldown_persistence_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let d = defaults();
        let mut r = Registry::new(dir.path(), d.max_queries);
        let spec = spec_of(
            "q",
            br#"{"text":"x","threshold":0.5,"cooldown_s":3,"modalities":["audio"]}"#,
            &d,
        )
        .unwrap();
        assert_eq!(r.insert(spec.clone(), vec![vec![1.0, 0.0]]).unwrap(), Persisted::Saved);
        assert!(r
            .matches("mic", Modality::Vision.into(), &[1.0, 0.0], 0, 0, 2_000_000_000)
            .is_empty());
        assert!(r
            .matches("mic", Modality::Audio.into(), &[0.0, 1.0], 0, 0, 2_000_000_000)
            .is_empty());
        assert_eq!(
            r.matches("mic", Modality::Audio.into(), &[1.0, 0.0], 1, 0, 2_000_000_000)
                .len(),
            1
        );
        assert!(r
            .matches(
                "mic",
                Modality::Audio.into(),
                &[1.0, 0.0],
                2,
                2_000_000_000,
                4_000_000_000
            )
            .is_empty());
        assert_eq!(
            r.matches(
                "mic",
                Modality::Audio.into(),
                &[1.0, 0.0],
                3,
                4_000_000_000,
                6_000_000_000
            )
            .len(),
            1
        );
        let again = Registry::new(dir.path(), 2).load_specs().unwrap();
        assert_eq!(again, vec![spec]);
        let p = r.insert(spec_of("q2", br#"{"text":"y"}"#, &d).unwrap(), vec![vec![0.0, 1.0]]);
        assert_eq!(p.unwrap(), Persisted::Saved);
        let e = r
            .insert(spec_of("q3", br#"{"text":"z"}"#, &d).unwrap(), vec![vec![0.0, 1.0]])
            .unwrap_err();
        assert!(e.to_string().contains("at most 2"));
        assert_eq!(r.remove("q"), Some(Persisted::Saved));
        assert_eq!(r.remove("q"), None);
        assert_eq!(Registry::new(dir.path(), 2).load_specs().unwrap().len(), 1);
    }

    /// A store of `n` queries q0.. written through `insert`; returns the file's bytes.
    fn store_with(dir: &Path, n: usize) -> Vec<u8> {
        let d = defaults();
        let mut r = Registry::new(dir, n);
        for i in 0..n {
            let body = format!(r#"{{"text":"thing {i}","threshold":0.5}}"#);
            let p = r.insert(
                spec_of(&format!("q{i}"), body.as_bytes(), &d).unwrap(),
                vec![vec![1.0, 0.0]],
            );
            assert_eq!(p.unwrap(), Persisted::Saved);
        }
        std::fs::read(dir.join("queries.json")).unwrap()
    }

    /// What the daemon does at start: load the specs and restore each.
    fn reload(dir: &Path, max: usize) -> Registry {
        let mut r = Registry::new(dir, max);
        for spec in r.load_specs().unwrap() {
            r.restore(spec, vec![vec![1.0, 0.0]]);
        }
        r
    }

    fn dir_listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn restore_does_not_write_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let before = store_with(dir.path(), 5);
        let path = dir.path().join("queries.json");
        // Make any rewrite visible even if it produced the same bytes.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut r = reload(dir.path(), 5);
        assert_eq!(r.len(), 5);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert_eq!(dir_listing(dir.path()), vec!["queries.json".to_string()]);
        // Restored queries match like inserted ones.
        assert_eq!(r.matches("mic", Modality::Vision.into(), &[1.0, 0.0], 0, 0, 1).len(), 5);
        // With the store unreadable for writing, restore still succeeds (no I/O at all).
        let mut r2 = Registry::new(&dir.path().join("missing/deeper"), 1);
        r2.restore(r.specs().remove(0), vec![vec![1.0]]);
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn restore_over_the_limit_keeps_every_query() {
        let dir = tempfile::tempdir().unwrap();
        let before = store_with(dir.path(), 4);
        let path = dir.path().join("queries.json");
        // max_queries lowered from 4 to 2 since the queries were registered.
        let mut r = reload(dir.path(), 2);
        assert_eq!(r.len(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // New ids are refused while over the limit, and the store is left alone.
        let d = defaults();
        let e = r
            .insert(spec_of("new", br#"{"text":"new"}"#, &d).unwrap(), vec![vec![0.0, 1.0]])
            .unwrap_err();
        assert!(e.to_string().contains("at most 2"), "{e}");
        assert_eq!(r.len(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // Replacing an existing id is allowed and keeps all the others on disk.
        let replaced = spec_of("q1", br#"{"text":"other"}"#, &d).unwrap();
        assert_eq!(
            r.insert(replaced.clone(), vec![vec![0.0, 1.0]]).unwrap(),
            Persisted::Saved
        );
        let stored = Registry::new(dir.path(), 2).load_specs().unwrap();
        assert_eq!(stored.len(), 4);
        assert!(stored.contains(&replaced));
        // Removing one works and persists; still at the limit (3 > 2), so still refused.
        assert_eq!(r.remove("q0"), Some(Persisted::Saved));
        let stored = Registry::new(dir.path(), 2).load_specs().unwrap();
        assert_eq!(
            stored.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["q1", "q2", "q3"]
        );
        assert!(r
            .insert(spec_of("new", br#"{"text":"new"}"#, &d).unwrap(), vec![vec![0.0, 1.0]],)
            .is_err());
        // Back under the limit, registration works again.
        assert_eq!(r.remove("q2"), Some(Persisted::Saved));
        assert_eq!(r.remove("q3"), Some(Persisted::Saved));
        let p = r.insert(spec_of("new", br#"{"text":"new"}"#, &d).unwrap(), vec![vec![0.0, 1.0]]);
        assert_eq!(p.unwrap(), Persisted::Saved);
        let ids: Vec<String> = Registry::new(dir.path(), 2)
            .load_specs()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["new", "q1"]);
    }

    #[test]
    fn admission_bounds_the_overall_rate_and_each_id() {
        let cfg = QueriesConfig {
            registrations_per_s: 2.0,
            registration_burst: 3,
            id_min_interval_s: 1.0,
            ..defaults()
        };
        let mut a = Admission::new(&cfg);
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        // A burst of 3 distinct ids passes, the 4th is refused.
        for id in ["a", "b", "c"] {
            a.admit(id, true, at(0)).unwrap();
        }
        assert!(a.admit("d", true, at(0)).unwrap_err().contains("registrations_per_s"));
        // Tokens come back at 2/s.
        a.admit("d", true, at(500)).unwrap();
        assert!(a.admit("e", true, at(500)).is_err());
        // The same id again within 1 s is refused whatever the tokens.
        assert!(a.admit("d", true, at(1400)).unwrap_err().contains("id_min_interval_s"));
        a.admit("d", true, at(1600)).unwrap();
        // A removal right after is only bound by the overall rate.
        a.admit("d", false, at(2600)).unwrap();
        // A flood of thousands admits no more than burst + rate × time.
        let mut a = Admission::new(&cfg);
        let admitted = (0..5000u64)
            .filter(|i| a.admit(&format!("q{i}"), true, at(i / 5)).is_ok())
            .count();
        assert!(admitted <= 3 + 2 + 1, "{admitted} admitted in 1 s");
        assert!(a.recent.len() <= 6, "per-id memory stays bounded");
    }

    #[test]
    fn request_size_and_text_length_are_bounded_by_config() {
        let d = QueriesConfig {
            max_text_chars: 10,
            max_request_bytes: 100,
            ..defaults()
        };
        let e = spec_of("q", br#"{"text":"eleven char"}"#, &d).unwrap_err();
        assert!(e.to_string().contains("max_text_chars"), "{e}");
        let big = format!(r#"{{"text":"x","sources":[{}]}}"#, vec!["\"s\""; 50].join(","));
        let e = spec_of("q", big.as_bytes(), &d).unwrap_err();
        assert!(e.to_string().contains("max_request_bytes"), "{e}");
        assert_eq!(e.refusal(), Refusal::Invalid);
    }

    #[test]
    fn a_damaged_store_is_kept_aside_and_what_parses_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queries.json");
        // Truncated mid-write: nothing parses.
        let good = store_with(dir.path(), 3);
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let mut r = Registry::new(dir.path(), 8);
        assert!(r.load_specs().unwrap().is_empty());
        let problem = r.load_problem().unwrap().to_string();
        assert!(problem.contains("not JSON") && problem.contains("kept as"), "{problem}");
        let copies: Vec<String> = dir_listing(dir.path())
            .into_iter()
            .filter(|n| n.starts_with("queries.json.bad-"))
            .collect();
        assert_eq!(copies.len(), 1);
        assert_eq!(
            std::fs::read(dir.path().join(&copies[0])).unwrap(),
            &good[..good.len() / 2]
        );
        // One bad entry among good ones: the good ones come back.
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["queries"][1] = serde_json::json!({"id": "q1", "text": 42});
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let mut r = Registry::new(dir.path(), 8);
        let ids: Vec<String> = r.load_specs().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["q0", "q2"]);
        assert!(r.load_problem().unwrap().contains("entry 1"), "{:?}", r.load_problem());
    }

    #[test]
    fn an_unwritable_store_keeps_queries_in_memory_and_catches_up_later() {
        let dir = tempfile::tempdir().unwrap();
        // The state "directory" is a file: every write fails, as on a read-only or
        // full file system.
        let blocked = dir.path().join("state");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let d = defaults();
        let mut r = Registry::new(&blocked, 4);
        let spec = spec_of("q", br#"{"text":"x"}"#, &d).unwrap();
        let p = r.insert(spec.clone(), vec![vec![1.0, 0.0]]).unwrap();
        assert!(
            matches!(p, Persisted::MemoryOnly(ref e) if e.contains("state")),
            "{p:?}"
        );
        assert_eq!(r.len(), 1, "kept in memory");
        assert!(r.store_error().is_some());
        assert_eq!(r.matches("mic", Modality::Audio.into(), &[1.0, 0.0], 0, 0, 1).len(), 1);
        assert!(!r.retry_save());
        // A full disk: every write fails with ENOSPC (the temp file is /dev/full).
        let full_dir = dir.path().join("full");
        std::fs::create_dir(&full_dir).unwrap();
        std::os::unix::fs::symlink("/dev/full", full_dir.join("queries.json.tmp")).unwrap();
        let mut full = Registry::new(&full_dir, 4);
        let p = full.insert(spec.clone(), vec![vec![1.0, 0.0]]).unwrap();
        assert!(
            matches!(p, Persisted::MemoryOnly(ref e) if e.contains("No space left")),
            "{p:?}"
        );
        assert_eq!(full.len(), 1);
        // The disk comes back: the next write holds every query.
        std::fs::remove_file(&blocked).unwrap();
        assert!(r.retry_save());
        assert!(r.store_error().is_none());
        assert_eq!(Registry::new(&blocked, 4).load_specs().unwrap(), vec![spec]);
    }

    #[test]
    fn an_all_query_fires_only_when_every_condition_holds_within_its_windows() {
        let dir = tempfile::tempdir().unwrap();
        let d = defaults();
        let mut r = Registry::new(dir.path(), 4).with_model("m");
        let plan = QueryPlan::from_request(
            "both",
            br#"{"all":[{"text":"three","modalities":["thermal"],"threshold":0.5},{"text":"three","modalities":["audio"],"sources":["mic"],"threshold":0.5}],"within_windows":1,"cooldown_s":0}"#,
            &d,
        )
        .unwrap();
        let (thermal, audio) = (Target::Modality(Modality::Thermal), Target::Modality(Modality::Audio));
        assert_eq!(
            r.insert(plan.spec.clone(), vec![vec![1.0, 0.0], vec![0.0, 1.0]])
                .unwrap(),
            Persisted::Saved
        );
        let t = |seq: i64| (seq * 2_000_000_000, seq * 2_000_000_000 + 2_000_000_000);
        let mut at = |src: &str, m: Target, v: [f32; 2], seq: i64| {
            let (a, b) = t(seq);
            r.matches(src, m, &v, seq, a, b)
        };
        // Thermal alone: nothing. Audio on another source: nothing.
        assert!(at("cam", thermal, [1.0, 0.0], 10).is_empty());
        assert!(at("other", audio, [0.0, 1.0], 10).is_empty());
        // Audio on mic three windows later: too far apart.
        assert!(at("mic", audio, [0.0, 1.0], 13).is_empty());
        // Thermal again next to it: both hold within one window → fires.
        let a = at("cam", thermal, [0.9, 0.1], 14);
        assert_eq!(a.len(), 1);
        let hits = a[0].conditions.as_ref().unwrap();
        assert_eq!((hits[0].seq, hits[1].seq, hits[1].source.as_str()), (14, 13, "mic"));
        assert_eq!((a[0].t_start_ns, a[0].t_end_ns), (t(13).0, t(14).1));
        assert!((a[0].score - 0.9).abs() < 1e-6, "the weakest condition's score");
        // A window meeting no condition never fires, even with both met before.
        assert!(at("cam", thermal, [0.0, 1.0], 15).is_empty());
        // Out of order (a fast replay: one stream's windows all come first): thermal
        // meets at 20 and 30, then audio at 20 pairs with thermal 20.
        assert!(at("cam", thermal, [1.0, 0.0], 20).is_empty());
        assert!(at("cam", thermal, [1.0, 0.0], 30).is_empty());
        let a = at("mic", audio, [0.0, 1.0], 20);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].conditions.as_ref().unwrap()[0].seq, 20);
        // The store keeps the vectors and the model; version 1 stores still load.
        let (model, stored) = Registry::new(dir.path(), 4).load().unwrap();
        assert_eq!((model.as_str(), stored.len()), ("m", 1));
        assert_eq!(stored[0].vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(stored[0].spec, plan.spec);
        std::fs::write(
            dir.path().join("queries.json"),
            br#"{"version":1,"queries":[{"id":"q","text":"x","threshold":0.3,"modalities":["audio"],"cooldown_s":1}]}"#,
        )
        .unwrap();
        let (model, stored) = Registry::new(dir.path(), 4).load().unwrap();
        assert_eq!(
            (model.as_str(), stored[0].spec.kind, stored[0].vectors.len()),
            ("", QueryKind::Text, 0)
        );
    }
}
