//! Query alerts: clients register a query under an id (a text, a weighted sum of
//! texts, examples and embeddings, an example, or `all` of several conditions; see
//! [`request`]); every new window of a chosen stream kind is compared with the
//! query's vector, and an alert fires when cosine ≥ threshold (for `all`: when every
//! condition has held within `within_windows` seqs), at most once per cooldown
//! (measured in sensor time). Queries and their vectors persist in
//! `<state_dir>/queries.json`, written atomically (temp file, fsync, rename), and are
//! reloaded on restart with [`Registry::restore`], which does not write the store.

use std::collections::BTreeMap;
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

pub mod admission;
pub mod matching;
pub mod request;
pub mod service;
pub mod store;

pub use admission::{Admission, TokenBucket};
use matching::Registered;
pub use matching::{Alert, ConditionHit};
pub use request::{combine, ConditionSpec, QueryKind, QueryPlan, QueryRequest, QuerySpec, Term, TermSource};
pub use store::{parse_store, Persisted, StoredQuery};

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

    /// Name the model the vectors come from (written to the store).
    pub fn with_model(mut self, model: &str) -> Self {
        self.model = model.to_string();
        self
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

    pub fn specs(&self) -> Vec<QuerySpec> {
        self.queries.values().map(|r| r.spec.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueriesConfig;
    use crate::modality::Modality;
    use crate::modality::Target;

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
