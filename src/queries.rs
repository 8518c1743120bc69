//! Text-query alerts: clients register `{text, threshold, modalities, cooldown_s}`
//! under an id; every new window of a chosen modality is compared with the text's
//! embedding, and an alert fires when cosine ≥ threshold, at most once per cooldown
//! (measured in sensor time). Queries persist in `<state_dir>/queries.json`, written
//! atomically (temp file, fsync, rename), and are reloaded on restart with
//! [`Registry::restore`], which does not write the store.

use crate::bus::validate_chunk;
use crate::config::QueriesConfig;
use crate::modality::Modality;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query `{id}`: {reason}")]
    Invalid { id: String, reason: String },
    #[error("query store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
}

/// What a client puts on `queries/<id>` (JSON).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub text: String,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub modalities: Option<Vec<Modality>>,
    /// Source ids to match (default: every source).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub cooldown_s: Option<f64>,
}

/// A registered query (what `get queries/**` returns and what is stored).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct QuerySpec {
    pub id: String,
    pub text: String,
    pub threshold: f32,
    pub modalities: Vec<Modality>,
    /// Source ids to match; empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    pub cooldown_s: f64,
}

pub const MAX_TEXT_CHARS: usize = 1000;

impl QuerySpec {
    /// Parse and validate a request body, filling defaults.
    pub fn from_request(id: &str, body: &[u8], defaults: &QueriesConfig) -> Result<QuerySpec, QueryError> {
        let inv = |reason: String| QueryError::Invalid {
            id: id.to_string(),
            reason,
        };
        validate_chunk(id).map_err(|e| inv(format!("bad id: {e}")))?;
        let req: QueryRequest = serde_json::from_slice(body).map_err(|e| {
            inv(format!(
                "expected JSON {{\"text\": string, \"threshold\"?: number in [-1,1], \"modalities\"?: [\"vision\"|\"audio\"|\"depth\"|\"thermal\"|\"imu\"], \"sources\"?: [source id], \"cooldown_s\"?: number >= 0}}: {e}"
            ))
        })?;
        let text = req.text.trim().to_string();
        if text.is_empty() {
            return Err(inv("`text` is empty".into()));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(inv(format!("`text` is longer than {MAX_TEXT_CHARS} characters")));
        }
        let threshold = req.threshold.unwrap_or(defaults.default_threshold);
        if !(threshold.is_finite() && (-1.0..=1.0).contains(&threshold)) {
            return Err(inv(format!("`threshold` must be a cosine in [-1, 1], got {threshold}")));
        }
        let modalities = req.modalities.unwrap_or_else(|| Modality::SENSED.to_vec());
        if modalities.is_empty() {
            return Err(inv("`modalities` is empty".into()));
        }
        if modalities.contains(&Modality::Text) {
            return Err(inv(
                "`modalities` cannot contain `text`: queries match sensed modalities".into(),
            ));
        }
        let sources = req.sources.unwrap_or_default();
        for src in &sources {
            validate_chunk(src).map_err(|e| inv(format!("`sources`: {e}")))?;
        }
        let cooldown_s = req.cooldown_s.unwrap_or(defaults.default_cooldown_s);
        if !(cooldown_s.is_finite() && cooldown_s >= 0.0) {
            return Err(inv(format!("`cooldown_s` must be >= 0, got {cooldown_s}")));
        }
        Ok(QuerySpec {
            id: id.to_string(),
            text,
            threshold,
            modalities,
            sources,
            cooldown_s,
        })
    }
}

/// An alert to publish on `alerts/<id>`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub query_id: String,
    pub text: String,
    pub modality: Modality,
    pub score: f32,
    pub threshold: f32,
    pub seq: i64,
    pub t_start_ns: i64,
    pub t_end_ns: i64,
}

struct Registered {
    spec: QuerySpec,
    embedding: Vec<f32>,
    last_fired_ns: Option<i64>,
}

/// The registered queries.
pub struct Registry {
    path: PathBuf,
    max: usize,
    queries: BTreeMap<String, Registered>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    queries: Vec<QuerySpec>,
}

impl Registry {
    pub fn new(state_dir: &Path, max: usize) -> Self {
        Registry {
            path: state_dir.join("queries.json"),
            max,
            queries: BTreeMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the stored specs (the caller embeds and re-adds them).
    pub fn load_specs(&self) -> Result<Vec<QuerySpec>, QueryError> {
        let serr = |reason: String| QueryError::Store {
            path: self.path.clone(),
            reason,
        };
        match std::fs::read(&self.path) {
            Ok(b) => {
                let s: Stored =
                    serde_json::from_slice(&b).map_err(|e| serr(format!("not a sensebind query store: {e}")))?;
                if s.version != 1 {
                    return Err(serr(format!("store version {} (expected 1)", s.version)));
                }
                Ok(s.queries)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(serr(e.to_string())),
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
    pub fn restore(&mut self, spec: QuerySpec, embedding: Vec<f32>) {
        let id = spec.id.clone();
        self.queries.insert(
            id.clone(),
            Registered {
                spec,
                embedding,
                last_fired_ns: None,
            },
        );
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

    /// Add or replace a query. Persists before returning. A new id is refused while
    /// `max_queries` or more are registered (also when restored queries exceed it).
    pub fn insert(&mut self, spec: QuerySpec, embedding: Vec<f32>) -> Result<(), QueryError> {
        if !self.queries.contains_key(&spec.id) && self.queries.len() >= self.max {
            return Err(QueryError::Invalid {
                id: spec.id,
                reason: format!(
                    "at most {} queries may be registered ({} are)",
                    self.max,
                    self.queries.len()
                ),
            });
        }
        let id = spec.id.clone();
        let prev = self.queries.insert(
            id.clone(),
            Registered {
                spec,
                embedding,
                last_fired_ns: None,
            },
        );
        if let Err(e) = self.save() {
            // Keep memory and disk in step.
            match prev {
                Some(p) => self.queries.insert(id, p),
                None => self.queries.remove(&id),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Remove a query. Returns whether it existed.
    pub fn remove(&mut self, id: &str) -> Result<bool, QueryError> {
        let Some(prev) = self.queries.remove(id) else {
            return Ok(false);
        };
        if let Err(e) = self.save() {
            self.queries.insert(id.to_string(), prev);
            return Err(e);
        }
        Ok(true)
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

    /// Match one window's embedding; returns the alerts that fire.
    /// Cosine of every query that applies to this stream, with its threshold (the
    /// live view plots them over time); no cooldown, nothing fires.
    pub fn scores(&self, source: &str, modality: Modality, emb: &[f32]) -> Vec<(String, f32, f32)> {
        self.queries
            .values()
            .filter(|r| r.spec.modalities.contains(&modality) && r.embedding.len() == emb.len())
            .filter(|r| r.spec.sources.is_empty() || r.spec.sources.iter().any(|s| s == source))
            .map(|r| {
                let score: f32 = r.embedding.iter().zip(emb).map(|(a, b)| a * b).sum();
                (r.spec.id.clone(), score, r.spec.threshold)
            })
            .collect()
    }

    pub fn matches(
        &mut self,
        source: &str,
        modality: Modality,
        emb: &[f32],
        seq: i64,
        t_start_ns: i64,
        t_end_ns: i64,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for r in self.queries.values_mut() {
            if !r.spec.modalities.contains(&modality) || r.embedding.len() != emb.len() {
                continue;
            }
            if !r.spec.sources.is_empty() && !r.spec.sources.iter().any(|s| s == source) {
                continue;
            }
            let score: f32 = r.embedding.iter().zip(emb).map(|(a, b)| a * b).sum();
            if score < r.spec.threshold {
                continue;
            }
            let cool_ns = (r.spec.cooldown_s * 1e9) as i64;
            if let Some(last) = r.last_fired_ns {
                if t_end_ns - last < cool_ns {
                    continue;
                }
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
            });
        }
        out
    }

    fn save(&self) -> Result<(), QueryError> {
        let serr = |reason: String| QueryError::Store {
            path: self.path.clone(),
            reason,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| serr(format!("cannot create directory: {e}")))?;
        let body = serde_json::to_vec_pretty(&Stored {
            version: 1,
            queries: self.specs(),
        })
        .map_err(|e| serr(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> QueriesConfig {
        QueriesConfig {
            default_threshold: 0.3,
            default_cooldown_s: 10.0,
            max_queries: 2,
            presets: Default::default(),
        }
    }

    #[test]
    fn validation_messages() {
        let d = defaults();
        let ok = QuerySpec::from_request("dog", br#"{"text":" a dog "}"#, &d).unwrap();
        assert_eq!((ok.text.as_str(), ok.threshold, ok.modalities.len()), ("a dog", 0.3, 5));
        for (body, needle) in [
            (&b"not json"[..], "expected JSON"),
            (br#"{"text":""}"#, "`text` is empty"),
            (br#"{"text":"x","threshold":3}"#, "`threshold`"),
            (br#"{"text":"x","modalities":["text"]}"#, "cannot contain `text`"),
            (br#"{"text":"x","modalities":["smell"]}"#, "expected JSON"),
            (br#"{"text":"x","cooldown_s":-1}"#, "`cooldown_s`"),
            (br#"{"text":"x","colour":1}"#, "unknown field"),
        ] {
            let e = QuerySpec::from_request("q1", body, &d).unwrap_err().to_string();
            assert!(e.contains("query `q1`") && e.contains(needle), "{e}");
        }
        assert!(QuerySpec::from_request("a/b", br#"{"text":"x"}"#, &d).is_err());
    }

    #[test]
    fn cooldown_persistence_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let d = defaults();
        let mut r = Registry::new(dir.path(), d.max_queries);
        let spec = QuerySpec::from_request(
            "q",
            br#"{"text":"x","threshold":0.5,"cooldown_s":3,"modalities":["audio"]}"#,
            &d,
        )
        .unwrap();
        r.insert(spec.clone(), vec![1.0, 0.0]).unwrap();
        assert!(r
            .matches("mic", Modality::Vision, &[1.0, 0.0], 0, 0, 2_000_000_000)
            .is_empty());
        assert!(r
            .matches("mic", Modality::Audio, &[0.0, 1.0], 0, 0, 2_000_000_000)
            .is_empty());
        assert_eq!(
            r.matches("mic", Modality::Audio, &[1.0, 0.0], 1, 0, 2_000_000_000)
                .len(),
            1
        );
        assert!(r
            .matches("mic", Modality::Audio, &[1.0, 0.0], 2, 2_000_000_000, 4_000_000_000)
            .is_empty());
        assert_eq!(
            r.matches("mic", Modality::Audio, &[1.0, 0.0], 3, 4_000_000_000, 6_000_000_000)
                .len(),
            1
        );
        let again = Registry::new(dir.path(), 2).load_specs().unwrap();
        assert_eq!(again, vec![spec]);
        r.insert(
            QuerySpec::from_request("q2", br#"{"text":"y"}"#, &d).unwrap(),
            vec![0.0, 1.0],
        )
        .unwrap();
        let e = r
            .insert(
                QuerySpec::from_request("q3", br#"{"text":"z"}"#, &d).unwrap(),
                vec![0.0, 1.0],
            )
            .unwrap_err();
        assert!(e.to_string().contains("at most 2"));
        assert!(r.remove("q").unwrap());
        assert!(!r.remove("q").unwrap());
        assert_eq!(Registry::new(dir.path(), 2).load_specs().unwrap().len(), 1);
    }

    /// A store of `n` queries q0.. written through `insert`; returns the file's bytes.
    fn store_with(dir: &Path, n: usize) -> Vec<u8> {
        let d = defaults();
        let mut r = Registry::new(dir, n);
        for i in 0..n {
            let body = format!(r#"{{"text":"thing {i}","threshold":0.5}}"#);
            r.insert(
                QuerySpec::from_request(&format!("q{i}"), body.as_bytes(), &d).unwrap(),
                vec![1.0, 0.0],
            )
            .unwrap();
        }
        std::fs::read(dir.join("queries.json")).unwrap()
    }

    /// What the daemon does at start: load the specs and restore each.
    fn reload(dir: &Path, max: usize) -> Registry {
        let mut r = Registry::new(dir, max);
        for spec in r.load_specs().unwrap() {
            r.restore(spec, vec![1.0, 0.0]);
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
        assert_eq!(r.matches("mic", Modality::Vision, &[1.0, 0.0], 0, 0, 1).len(), 5);
        // With the store unreadable for writing, restore still succeeds (no I/O at all).
        let mut r2 = Registry::new(&dir.path().join("missing/deeper"), 1);
        r2.restore(r.specs().remove(0), vec![1.0]);
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
            .insert(
                QuerySpec::from_request("new", br#"{"text":"new"}"#, &d).unwrap(),
                vec![0.0, 1.0],
            )
            .unwrap_err();
        assert!(e.to_string().contains("at most 2"), "{e}");
        assert_eq!(r.len(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // Replacing an existing id is allowed and keeps all the others on disk.
        let replaced = QuerySpec::from_request("q1", br#"{"text":"other"}"#, &d).unwrap();
        r.insert(replaced.clone(), vec![0.0, 1.0]).unwrap();
        let stored = Registry::new(dir.path(), 2).load_specs().unwrap();
        assert_eq!(stored.len(), 4);
        assert!(stored.contains(&replaced));
        // Removing one works and persists; still at the limit (3 > 2), so still refused.
        assert!(r.remove("q0").unwrap());
        let stored = Registry::new(dir.path(), 2).load_specs().unwrap();
        assert_eq!(
            stored.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["q1", "q2", "q3"]
        );
        assert!(r
            .insert(
                QuerySpec::from_request("new", br#"{"text":"new"}"#, &d).unwrap(),
                vec![0.0, 1.0],
            )
            .is_err());
        // Back under the limit, registration works again.
        assert!(r.remove("q2").unwrap());
        assert!(r.remove("q3").unwrap());
        r.insert(
            QuerySpec::from_request("new", br#"{"text":"new"}"#, &d).unwrap(),
            vec![0.0, 1.0],
        )
        .unwrap();
        let ids: Vec<String> = Registry::new(dir.path(), 2)
            .load_specs()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["new", "q1"]);
    }
}
