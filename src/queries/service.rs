//! The query service without the bus: a request on `queries/<id>` (a put registers,
//! a delete removes) goes through the size bound, [`Admission`] and validation, its
//! terms are turned into vectors, and the registry (and its store) changes; what the
//! client must be told comes back as an [`Answer`]. `pipeline::stages::query_service`
//! is the zenoh loop around [`QueryService::handle`].

use super::{combine, Admission, Persisted, QueryPlan, QuerySpec, Refusal, Registry, TermSource};
use crate::config::QueriesConfig;
use crate::ident::clip;
use crate::telemetry::{names, DaemonEvent, Telemetry};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Turns one term of a query into a vector (text, media, a window of the history, a
/// raw embedding); a refusal says why, with its code.
pub type ResolveTerm = Arc<dyn Fn(&TermSource) -> Result<Vec<f32>, (Refusal, String)> + Send + Sync>;

/// Every vector of a plan: each probe's terms resolved and combined.
pub fn resolve_plan(plan: &QueryPlan, resolve: &ResolveTerm) -> Result<Vec<Vec<f32>>, (Refusal, String)> {
    plan.probes
        .iter()
        .enumerate()
        .map(|(i, terms)| {
            let parts = terms
                .iter()
                .map(|t| Ok((t.weight, resolve(&t.source)?)))
                .collect::<Result<Vec<_>, (Refusal, String)>>()?;
            combine(&parts).map_err(|e| {
                let at = if plan.probes.len() > 1 {
                    format!("`all[{i}]`: ")
                } else {
                    String::new()
                };
                (Refusal::Invalid, format!("query `{}`: {at}{e}", plan.spec.id))
            })
        })
        .collect()
}

/// A request on `queries/<id>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Register (or replace) with this body.
    Put(Vec<u8>),
    Remove,
}

/// What a client is told on `errors/queries/<id>`: a refusal, or a change that was
/// made in memory only.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    /// The key the request came on.
    pub key: String,
    pub code: Refusal,
    pub error: String,
}

/// The registry behind the bus, with the admission state of its requests.
pub struct QueryService {
    registry: Arc<Mutex<Registry>>,
    resolve: ResolveTerm,
    admission: Admission,
    cfg: QueriesConfig,
    telemetry: Arc<Telemetry>,
}

impl QueryService {
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        resolve: ResolveTerm,
        cfg: QueriesConfig,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        QueryService {
            registry,
            resolve,
            admission: Admission::new(&cfg),
            cfg,
            telemetry,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `get queries/**` lists.
    pub fn specs(&self) -> Vec<QuerySpec> {
        self.registry().specs()
    }

    fn report(&self, r: &Registry) {
        self.telemetry.emit(DaemonEvent::QueryStore {
            error: r.store_error().map(str::to_string),
        });
        self.telemetry.emit(DaemonEvent::Queries(r.len() as u64));
    }

    /// Handle one request for query `id` (the part of `key` after `queries/`) of
    /// `size` bytes, at `now`. Blocking: a registration embeds its terms. Requests are
    /// handled one at a time, so at most one encoding runs for the bus at any moment.
    pub fn handle(&mut self, id: &str, key: &str, size: usize, request: Request, now: Instant) -> Option<Answer> {
        let refuse = |code: Refusal, error: String| {
            Some(Answer {
                id: id.to_string(),
                key: key.to_string(),
                code,
                error,
            })
        };
        if let Err(e) = crate::ident::validate_chunk(id) {
            return refuse(
                Refusal::BadId,
                format!("bad query id: {e} (one key chunk: queries/<id>)"),
            );
        }
        if size > self.cfg.max_request_bytes {
            return refuse(
                Refusal::TooLarge,
                format!(
                    "request of {size} bytes is larger than {} (`queries.max_request_bytes`)",
                    self.cfg.max_request_bytes
                ),
            );
        }
        let put = matches!(request, Request::Put(_));
        if let Err(e) = self.admission.admit(id, put, now) {
            return refuse(Refusal::RateLimited, e);
        }
        match request {
            Request::Put(body) => {
                let plan = match QueryPlan::from_request(id, &body, &self.cfg) {
                    Ok(p) => p,
                    Err(e) => return refuse(e.refusal(), e.to_string()),
                };
                let vectors = match resolve_plan(&plan, &self.resolve) {
                    Ok(v) => v,
                    Err((code, e)) => return refuse(code, e),
                };
                let spec = plan.spec;
                let result = {
                    let mut r = self.registry();
                    let res = r.insert(spec.clone(), vectors);
                    self.report(&r);
                    res
                };
                match result {
                    Ok(persisted) => {
                        tracing::info!(event = names::QUERY_REGISTERED, query_id = %id, text = %clip(&spec.text, 200), threshold = spec.threshold, "query registered");
                        match persisted {
                            Persisted::MemoryOnly(e) => refuse(
                                Refusal::Store,
                                format!("registered in memory only, it will be lost at restart unless the store can be written: {e}"),
                            ),
                            Persisted::Saved => None,
                        }
                    }
                    Err(e) => refuse(e.refusal(), e.to_string()),
                }
            }
            Request::Remove => {
                let result = {
                    let mut r = self.registry();
                    let res = r.remove(id);
                    self.report(&r);
                    res
                };
                match result {
                    Some(persisted) => {
                        tracing::info!(event = names::QUERY_REMOVED, query_id = %id, "query removed");
                        match persisted {
                            Persisted::MemoryOnly(e) => refuse(
                                Refusal::Store,
                                format!("removed in memory only, it comes back at restart unless the store can be written: {e}"),
                            ),
                            Persisted::Saved => None,
                        }
                    }
                    None => refuse(Refusal::NotRegistered, format!("query `{id}` is not registered")),
                }
            }
        }
    }

    /// A store that could not be written is retried now and then (the disk may have
    /// been freed), not only at the next change.
    pub fn retry_store(&self) {
        let mut r = self.registry();
        if r.store_error().is_some() {
            let _ = r.retry_save();
            self.report(&r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requests_are_bounded_admitted_validated_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::load(None).unwrap().queries;
        cfg.registration_burst = 3;
        cfg.registrations_per_s = 1.0;
        cfg.id_min_interval_s = 0.0;
        cfg.max_request_bytes = 200;
        let registry = Arc::new(Mutex::new(Registry::new(dir.path(), 10)));
        // Texts embed to a fixed unit vector; media are refused as an encoder would.
        let resolve: ResolveTerm = Arc::new(|t: &TermSource| match t {
            TermSource::Text(_) => Ok(vec![1.0, 0.0]),
            _ => Err((Refusal::Encoder, "no media here".into())),
        });
        let telemetry = Arc::new(Telemetry::new(Duration::from_secs(10)));
        let mut s = QueryService::new(registry.clone(), resolve, cfg, telemetry.clone());
        let t0 = Instant::now();
        let put = |b: &str| Request::Put(b.as_bytes().to_vec());
        let code = |a: Option<Answer>| a.map(|a| a.code);
        assert_eq!(
            code(s.handle("a/b", "k", 10, put(r#"{"text":"x"}"#), t0)),
            Some(Refusal::BadId)
        );
        assert_eq!(
            code(s.handle("q", "k", 201, put(r#"{"text":"x"}"#), t0)),
            Some(Refusal::TooLarge)
        );
        assert_eq!(s.handle("q1", "k", 13, put(r#"{"text":"x"}"#), t0), None);
        assert_eq!(
            code(s.handle("q2", "k", 9, put("{not json"), t0)),
            Some(Refusal::Invalid)
        );
        // Three tokens (a bad id or size costs none; an invalid body does): the
        // fourth request is refused until a second has passed.
        assert_eq!(s.handle("q3", "k", 13, put(r#"{"text":"y"}"#), t0), None);
        assert_eq!(
            code(s.handle("q4", "k", 13, put(r#"{"text":"z"}"#), t0)),
            Some(Refusal::RateLimited)
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.handle("q4", "k", 13, put(r#"{"text":"z"}"#), t1), None);
        assert_eq!(s.specs().len(), 3);
        assert_eq!(telemetry.snapshot("r", 0)["queries"], 3);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(s.handle("q1", "k", 0, Request::Remove, t2), None);
        let t3 = t2 + Duration::from_secs(1);
        let a = s.handle("q1", "queries/q1", 0, Request::Remove, t3).unwrap();
        assert_eq!((a.code, a.key.as_str()), (Refusal::NotRegistered, "queries/q1"));
        let ids: Vec<String> = s.specs().into_iter().map(|q| q.id).collect();
        assert_eq!(ids, ["q3", "q4"]);
    }
}
