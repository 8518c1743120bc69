//! The query store, `<state_dir>/queries.json`: every registered query with its
//! vectors and the model they come from, written atomically (temp file, fsync,
//! rename); a damaged file is kept aside as `queries.json.bad-<time>` and what parses
//! is recovered.

use super::{QueryError, QuerySpec, Registry};
use crate::bus::validate_chunk;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

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

impl Registry {
    pub fn path(&self) -> &Path {
        &self.path
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

    /// Write the store now if the last write failed; `true` once it is in step.
    pub fn retry_save(&mut self) -> bool {
        self.store_error.is_none() || self.persist() == Persisted::Saved
    }

    /// Write `bytes` next to the store as `queries.json.bad-<unix time>`.
    pub(super) fn keep_bad_copy(&self, bytes: &[u8]) -> String {
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

    pub(super) fn persist(&mut self) -> Persisted {
        let body = self.body();
        self.persist_body(body)
    }

    pub(super) fn persist_body(&mut self, body: Result<Vec<u8>, String>) -> Persisted {
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

    /// The store file's bytes for the queries registered now.
    pub(super) fn body(&self) -> Result<Vec<u8>, String> {
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

    pub(super) fn save(&self, body: Result<Vec<u8>, String>) -> Result<(), QueryError> {
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
