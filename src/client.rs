//! A typed client of sensebind daemons on the bus: what `sensebind query`, `search` and
//! `listen` are made of, and what the tests use. It speaks the contract of
//! [`crate::bus::msg`]: registrations go out as request bodies on `queries/<id>` and
//! come back as [`QuerySpec`] listings or [`QueryErrorMsg`] refusals; searches come
//! back as [`SearchReply`]s, merged across robots.
//!
//! ```no_run
//! # async fn f(cfg: sensebind::config::Config) -> Result<(), sensebind::client::ClientError> {
//! use sensebind::client::{Client, SearchQuery};
//! let client = Client::connect(&cfg, "*", false).await?;
//! let hits = client.search("*", &SearchQuery::text("a dog barking", 5)).await?;
//! for h in hits.hits {
//!     println!("{} {}/{} seq {} {:.3}", h.robot, h.modality, h.source, h.seq, h.score);
//! }
//! # Ok(()) }
//! ```

use crate::bus::listen::Lines;
use crate::bus::msg::{JsonMsg, Message, QueryErrorMsg, SearchErrorMsg, SearchHit, SearchReply};
use crate::bus::{zenoh_bus, Topics};
use crate::config::{Config, QueriesConfig, ZenohMode};
use crate::history::params::{percent_encode, WindowRef};
use crate::queries::{QueryPlan, QuerySpec};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What went wrong talking to daemons; each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("zenoh: {0}")]
    Bus(String),
    #[error("no daemon answers under {base}{at} (is `sensebind run` up, with the same bus{and_robot}?)")]
    NoDaemon {
        base: String,
        /// ` at <endpoints>`, when known.
        at: String,
        and_robot: &'static str,
    },
    #[error("the daemon rejected query `{id}`: {error}")]
    Refused { id: String, code: String, error: String },
    #[error("the daemon under {base} did not answer for query `{id}` within 5 s")]
    NoAnswer { base: String, id: String },
    #[error("query `{id}` is not registered under {base}")]
    NotRegistered { base: String, id: String },
    /// A request this client will not send (the flag or field is named).
    #[error("{0}")]
    Invalid(String),
    #[error("no daemon answered on {selector} (is `sensebind run` up, with history enabled?)")]
    NoSearchAnswer { selector: String },
    #[error("every daemon refused the search: {}", .0.join("; "))]
    SearchRefused(Vec<String>),
}

fn bus(e: impl std::fmt::Display) -> ClientError {
    ClientError::Bus(e.to_string())
}

/// A zenoh session to daemons, and the bus prefix they publish under.
pub struct Client {
    session: zenoh::Session,
    prefix: String,
}

impl Client {
    /// A client of the daemon's listen endpoints, or of what `bus.connect` names (the
    /// fleet's router); `robot` (or `*`) names whom it is for, in errors. With `wait`
    /// (listen) it keeps trying to connect instead of failing when nothing answers yet.
    pub async fn connect(cfg: &Config, robot: &str, wait: bool) -> Result<Client, ClientError> {
        let mut b = cfg.bus.clone();
        if b.connect.is_empty() {
            b.connect = b.listen.iter().map(|e| e.replace("0.0.0.0", "127.0.0.1")).collect();
        }
        b.listen.clear();
        // A client of whatever it connects to: a daemon (a peer routes for its clients)
        // or the fleet's router.
        b.mode = ZenohMode::Client;
        let mut z = zenoh_bus::zenoh_config(&b).map_err(bus)?;
        if wait {
            z.insert_json5("connect/exit_on_failure", "false").map_err(bus)?;
        }
        let session = zenoh::open(z).await.map_err(|e| ClientError::NoDaemon {
            base: format!("{}/{robot}", cfg.bus.prefix),
            at: format!(" at {} ({e})", b.connect.join(", ")),
            and_robot: "",
        })?;
        Ok(Client::new(session, &cfg.bus.prefix))
    }

    /// A client on an open session (tests, embedding applications).
    pub fn new(session: zenoh::Session, prefix: &str) -> Client {
        Client {
            session,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn session(&self) -> &zenoh::Session {
        &self.session
    }

    /// The keys of one robot's daemon.
    pub fn topics(&self, robot: &str) -> Topics {
        Topics::new(&self.prefix, robot)
    }

    /// Whether a daemon holds its liveliness token for `robot`.
    pub async fn alive(&self, robot: &str) -> Result<bool, ClientError> {
        let key = self.topics(robot).alive();
        let replies = self
            .session
            .liveliness()
            .get(&key)
            .timeout(Duration::from_secs(2))
            .await
            .map_err(|e| bus(format!("liveliness get {key}: {e}")))?;
        while let Ok(r) = replies.recv_async().await {
            if r.result().is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Succeeds once `robot`'s daemon is seen (through a router a new session learns
    /// its routes within about a second: this asks for up to 3 s).
    pub async fn require_daemon(&self, robot: &str) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            if self.alive(robot).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::NoDaemon {
                    base: self.topics(robot).base().to_string(),
                    at: String::new(),
                    and_robot: " and robot id",
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The queries `robot`'s daemon has registered (`id`: that one only).
    pub async fn list(&self, robot: &str, id: Option<&str>) -> Result<Vec<QuerySpec>, ClientError> {
        Ok(self
            .list_raw(robot, id)
            .await?
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect())
    }

    /// The listings as sent (JSON), for printing.
    pub async fn list_raw(&self, robot: &str, id: Option<&str>) -> Result<Vec<Vec<u8>>, ClientError> {
        let t = self.topics(robot);
        let selector = id.map_or_else(|| t.queries_all(), |id| t.query(id));
        let replies = self
            .session
            .get(&selector)
            .timeout(Duration::from_secs(2))
            .await
            .map_err(|e| bus(format!("get {selector}: {e}")))?;
        let mut out = Vec::new();
        while let Ok(r) = replies.recv_async().await {
            if let Ok(s) = r.result() {
                out.push(s.payload().to_bytes().to_vec());
            }
        }
        Ok(out)
    }

    /// Register (or replace) query `id` with a request body (README, "Queries"). The
    /// body is validated here first, so a bad request is reported without a round
    /// trip; then the daemon's refusal, or its listing of what was asked, is awaited.
    pub async fn register(
        &self,
        robot: &str,
        id: &str,
        body: &Value,
        limits: &QueriesConfig,
    ) -> Result<QuerySpec, ClientError> {
        crate::bus::validate_chunk(id).map_err(|e| ClientError::Invalid(format!("query id: {e}")))?;
        let text = body.to_string();
        let plan =
            QueryPlan::from_request(id, text.as_bytes(), limits).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let t = self.topics(robot);
        let errors = self.session.declare_subscriber(t.query_error(id)).await.map_err(bus)?;
        self.session.put(t.query(id), text).await.map_err(bus)?;
        // Registered means: the daemon lists this id with what was asked for (its own
        // defaults may differ from this client's config, so those are not compared).
        let asked = |k: &str| body.get(k);
        let same = |q: &QuerySpec| {
            q.text == plan.spec.text
                && q.kind == plan.spec.kind
                && asked("threshold").is_none_or(|t| t.as_f64().map(|x| x as f32) == Some(q.threshold))
                && asked("modalities").is_none_or(|m| *m == json!(q.modalities))
                && asked("sources").is_none_or(|s| *s == json!(q.sources))
                && asked("cooldown_s").is_none_or(|c| c.as_f64() == Some(q.cooldown_s))
        };
        let listed = self
            .await_answer(robot, id, &errors, |l| l.iter().find(|q| same(q)).cloned())
            .await?;
        Ok(listed)
    }

    /// Remove query `id`.
    pub async fn remove(&self, robot: &str, id: &str) -> Result<(), ClientError> {
        let t = self.topics(robot);
        if self.list(robot, Some(id)).await?.is_empty() {
            return Err(ClientError::NotRegistered {
                base: t.base().to_string(),
                id: id.to_string(),
            });
        }
        let errors = self.session.declare_subscriber(t.query_error(id)).await.map_err(bus)?;
        self.session.delete(t.query(id)).await.map_err(bus)?;
        self.await_answer(robot, id, &errors, |l| l.is_empty().then_some(()))
            .await
    }

    /// The daemon's answer to a put or delete on `queries/<id>`: a refusal on
    /// `errors/queries/<id>`, or the listing reaching the state asked for.
    async fn await_answer<T>(
        &self,
        robot: &str,
        id: &str,
        errors: &zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
        done: impl Fn(&[QuerySpec]) -> Option<T>,
    ) -> Result<T, ClientError> {
        for _ in 0..50 {
            if let Ok(Some(s)) = errors.try_recv() {
                let body = s.payload().to_bytes();
                return Err(match QueryErrorMsg::from_json(&body) {
                    Ok(e) => ClientError::Refused {
                        id: id.to_string(),
                        code: e.code,
                        error: e.error,
                    },
                    Err(_) => ClientError::Refused {
                        id: id.to_string(),
                        code: String::new(),
                        error: String::from_utf8_lossy(&body).into_owned(),
                    },
                });
            }
            if let Some(v) = done(&self.list(robot, Some(id)).await?) {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClientError::NoAnswer {
            base: self.topics(robot).base().to_string(),
            id: id.to_string(),
        })
    }

    /// Ask one robot's (or, with `*`, every robot's) `search` queryable and merge the
    /// answers, best first; ties (the same scene on two robots) by robot, then newest.
    pub async fn search(&self, robot: &str, q: &SearchQuery) -> Result<SearchOutcome, ClientError> {
        let params = q.params()?;
        if robot != "*" {
            crate::bus::validate_chunk(robot).map_err(|e| ClientError::Invalid(format!("--robot: {e}")))?;
            self.require_daemon(robot).await?;
        }
        let selector = format!("{}/{robot}/search?{params}", self.prefix);
        let replies = self
            .session
            .get(&selector)
            .target(zenoh::query::QueryTarget::All)
            .consolidation(zenoh::query::ConsolidationMode::None)
            .timeout(Duration::from_secs(15))
            .await
            .map_err(|e| bus(format!("get {selector}: {e}")))?;
        let mut out = SearchOutcome::default();
        while let Ok(r) = replies.recv_async().await {
            match r.result() {
                Ok(s) => {
                    let reply = SearchReply::from_json(&s.payload().to_bytes())
                        .map_err(|e| ClientError::Bus(format!("a search answer from {selector}: {e}")))?;
                    out.answered += 1;
                    out.hits.extend(reply.results);
                }
                Err(e) => {
                    let body = e.payload().to_bytes();
                    out.refusals
                        .push(SearchErrorMsg::from_json(&body).unwrap_or_else(|_| SearchErrorMsg {
                            robot: "?".into(),
                            error: String::from_utf8_lossy(&body).into_owned(),
                        }));
                }
            }
        }
        if out.answered == 0 {
            return Err(if out.refusals.is_empty() {
                ClientError::NoSearchAnswer { selector }
            } else {
                ClientError::SearchRefused(
                    out.refusals
                        .iter()
                        .map(|r| format!("{}: {}", r.robot, r.error))
                        .collect(),
                )
            });
        }
        out.hits.sort_by(|x, y| {
            y.score
                .total_cmp(&x.score)
                .then_with(|| x.robot.cmp(&y.robot))
                .then_with(|| y.t_end_ns.cmp(&x.t_end_ns))
        });
        out.hits.truncate(q.k);
        Ok(out)
    }
}

/// What `listen` prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenOptions {
    /// Also a line per embedding.
    pub embeddings: bool,
    /// The raw messages, one JSON object per line: `{"key", "message"}`.
    pub json: bool,
    /// Stop after this many seconds (0: never).
    pub seconds: f64,
}

/// A subscription to one robot's (or, with `*`, every robot's) messages, as lines.
pub struct Listener {
    sub: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    base: String,
    opts: ListenOptions,
    deadline: Option<tokio::time::Instant>,
    lines: Lines,
}

impl Client {
    /// Listen to `robot`'s labels, events, alerts and errors (and embeddings).
    pub async fn listen(&self, robot: &str, opts: ListenOptions) -> Result<Listener, ClientError> {
        let base = self.topics(robot).base().to_string();
        let sub = self
            .session
            .declare_subscriber(format!("{base}/**"))
            .await
            .map_err(bus)?;
        let deadline =
            (opts.seconds > 0.0).then(|| tokio::time::Instant::now() + crate::config::secs(opts.seconds.min(1e9)));
        Ok(Listener {
            sub,
            base,
            opts,
            deadline,
            lines: Lines::new(),
        })
    }
}

impl Listener {
    /// What is listened to, and how the lines read.
    pub fn banner(&self) -> String {
        format!(
            "listening on {}/** (labels, events, alerts, errors{}){}",
            self.base,
            if self.opts.embeddings { ", embeddings" } else { "" },
            if self.opts.json {
                ""
            } else {
                "; one line per window: time (UTC), modality/source, top labels, ▶ event start, ■ event end, ! query alert"
            }
        )
    }

    /// The next lines to print; `None` when the time is up or the session closed.
    pub async fn next(&mut self) -> Option<Vec<String>> {
        loop {
            // A window's line waits briefly for its events and alerts.
            let quiet = tokio::time::Instant::now() + Duration::from_millis(300);
            let until = match (self.deadline, self.lines.has_pending()) {
                (Some(d), true) => Some(d.min(quiet)),
                (Some(d), false) => Some(d),
                (None, true) => Some(quiet),
                (None, false) => None,
            };
            let next = match until {
                Some(u) => match tokio::time::timeout_at(u, self.sub.recv_async()).await {
                    Ok(s) => s,
                    Err(_) => {
                        let held: Vec<String> = self.lines.flush().into_iter().collect();
                        if self.deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            return (!held.is_empty()).then_some(held);
                        }
                        if held.is_empty() {
                            continue;
                        }
                        return Some(held);
                    }
                },
                None => self.sub.recv_async().await,
            };
            let Ok(sample) = next else {
                let held: Vec<String> = self.lines.flush().into_iter().collect();
                return (!held.is_empty()).then_some(held);
            };
            let out = self.lines_of(sample.key_expr().as_str(), &sample.payload().to_bytes());
            if !out.is_empty() {
                return Some(out);
            }
        }
    }

    /// The lines one sample gives (none, while its window's line waits for marks).
    pub fn lines_of(&mut self, key: &str, body: &[u8]) -> Vec<String> {
        let is_embedding = key.contains("/embedding/");
        if is_embedding && !self.opts.embeddings {
            return Vec::new();
        }
        if self.opts.json {
            let message = match Message::decode(key, body) {
                Ok(Message::Health(_) | Message::Other) => return Vec::new(),
                Ok(m) => m.to_json_value(),
                Err(e) => json!({ "undecodable": e.to_string() }),
            };
            return vec![json!({ "key": key, "message": message }).to_string()];
        }
        if !is_embedding {
            return self.lines.push(key, body);
        }
        vec![match Message::decode(key, body) {
            Ok(Message::Embedding(m)) => format!(
                "{key} seq={} t=[{}, {}] dim={} coverage={:.2}",
                m.seq, m.t_start_ns, m.t_end_ns, m.dim, m.coverage
            ),
            Ok(Message::Fused(m)) => format!(
                "{key} seq={} t=[{}, {}] dim={} coverage={:.2} members={}",
                m.seq,
                m.t_start_ns,
                m.t_end_ns,
                m.dim,
                m.coverage,
                m.members.len()
            ),
            Ok(_) => return Vec::new(),
            Err(e) => format!("{key} undecodable: {e}"),
        }]
    }
}

/// What to search for (the `search` queryable's parameters; README, "History").
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: Option<String>,
    /// A past window, `<modality>/<source>/<seq>` or `fused/<seq>`.
    pub example: Option<String>,
    pub k: usize,
    /// Only windows that end after this: `90s`, `15m`, `1h`, `2d` back from now, or Unix ns.
    pub since: Option<String>,
    /// Only windows that start before this (same forms).
    pub until: Option<String>,
    /// Comma-separated stream kinds.
    pub modalities: Option<String>,
    /// Comma-separated source ids.
    pub sources: Option<String>,
}

impl SearchQuery {
    pub fn text(text: &str, k: usize) -> Self {
        SearchQuery {
            text: Some(text.to_string()),
            k,
            ..Default::default()
        }
    }

    /// The selector parameters (`text=…;k=…`), checked.
    pub fn params(&self) -> Result<String, ClientError> {
        let mut params = Vec::new();
        match (&self.text, &self.example) {
            (Some(t), None) => params.push(format!("text={}", percent_encode(t))),
            (None, Some(e)) => {
                WindowRef::parse(e).map_err(|e| ClientError::Invalid(format!("--example: {e}")))?;
                params.push(format!("example={}", percent_encode(e)));
            }
            (Some(_), Some(_)) => return Err(ClientError::Invalid("give a TEXT or --example, not both".into())),
            (None, None) => return Err(ClientError::Invalid(
                "nothing to search for: give a TEXT (e.g. \"a dog barking\") or --example <modality>/<source>/<seq>"
                    .into(),
            )),
        }
        if self.k == 0 {
            return Err(ClientError::Invalid("--k must be at least 1".into()));
        }
        params.push(format!("k={}", self.k));
        for (name, v) in [
            ("since", &self.since),
            ("until", &self.until),
            ("modalities", &self.modalities),
            ("sources", &self.sources),
        ] {
            if let Some(v) = v {
                params.push(format!("{name}={}", percent_encode(v)));
            }
        }
        Ok(params.join(";"))
    }
}

/// Merged search answers.
#[derive(Debug, Clone, Default)]
pub struct SearchOutcome {
    /// Best first, at most `k`.
    pub hits: Vec<SearchHit>,
    /// Daemons that answered.
    pub answered: usize,
    /// Daemons that refused, with their reasons.
    pub refusals: Vec<SearchErrorMsg>,
}

// ------------------------------------------------------------ request bodies

/// What a query looks for, term by term (the `query add` flags).
#[derive(Debug, Clone, Default)]
pub struct Terms {
    pub text: Vec<String>,
    /// WAV files.
    pub audio: Vec<PathBuf>,
    /// PNG or JPEG files.
    pub image: Vec<PathBuf>,
    /// Past windows, `<modality>/<source>/<seq>` or `fused/<seq>`.
    pub window: Vec<String>,
}

impl Terms {
    /// The request's terms: `{"text"}` or `{"example": …}` objects, in this order
    /// (media files are read and sent inline).
    pub fn to_json(&self) -> Result<Vec<Value>, ClientError> {
        use base64::Engine as _;
        let media = |p: &Path, mime: &str| -> Result<Value, ClientError> {
            let bytes = std::fs::read(p).map_err(|e| ClientError::Invalid(format!("reading {}: {e}", p.display())))?;
            Ok(json!({"example": {"media": base64::engine::general_purpose::STANDARD.encode(bytes), "mime": mime}}))
        };
        let mut out: Vec<Value> = self.text.iter().map(|t| json!({ "text": t })).collect();
        for p in &self.audio {
            out.push(media(p, "audio/wav")?);
        }
        for p in &self.image {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let mime = if ext == "jpg" || ext == "jpeg" {
                "image/jpeg"
            } else {
                "image/png"
            };
            out.push(media(p, mime)?);
        }
        for w in &self.window {
            let w = WindowRef::parse(w).map_err(|e| ClientError::Invalid(format!("--window: {e}")))?;
            out.push(json!({"example": {"window": w}}));
        }
        Ok(out)
    }
}

/// One term is the body itself; several are `terms`.
fn put_terms(body: &mut Map<String, Value>, terms: Vec<Value>) {
    if terms.len() == 1 {
        if let Some(Value::Object(o)) = terms.into_iter().next() {
            body.extend(o);
        }
    } else {
        body.insert("terms".into(), Value::Array(terms));
    }
}

/// A request body from terms, or from `all` conditions (`--all` specs, see
/// [`all_condition`]) held in windows at most `within` seqs apart.
pub fn request_body(terms: &Terms, all: &[String], within: Option<u32>) -> Result<Map<String, Value>, ClientError> {
    let terms = terms.to_json()?;
    let mut body = Map::new();
    if !all.is_empty() {
        if !terms.is_empty() {
            return Err(ClientError::Invalid(
                "--all replaces --text/--audio/--image/--window: put them in its conditions".into(),
            ));
        }
        let conds = all.iter().map(|c| all_condition(c)).collect::<Result<Vec<_>, _>>()?;
        body.insert("all".into(), json!(conds));
        if let Some(w) = within {
            body.insert("within_windows".into(), json!(w));
        }
        return Ok(body);
    }
    if terms.is_empty() {
        return Err(ClientError::Invalid(
            "nothing to look for: give --text, --audio, --image, --window, --all or --request".into(),
        ));
    }
    put_terms(&mut body, terms);
    Ok(body)
}

/// One `--all` condition: `text=…;audio=F;image=F;window=…;modalities=a,b;sources=a,b;threshold=x`.
pub fn all_condition(spec: &str) -> Result<Value, ClientError> {
    let bad = |why: String| ClientError::Invalid(format!("--all `{spec}`: {why}"));
    let mut terms = Terms::default();
    let mut cond = Map::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad("expected key=value pairs separated by `;`".into()))?;
        let list = |v: &str| v.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>();
        match k.trim() {
            "text" => terms.text.push(v.to_string()),
            "audio" => terms.audio.push(PathBuf::from(v)),
            "image" => terms.image.push(PathBuf::from(v)),
            "window" => terms.window.push(v.to_string()),
            "modalities" => {
                cond.insert("modalities".into(), json!(list(v)));
            }
            "sources" => {
                cond.insert("sources".into(), json!(list(v)));
            }
            "threshold" => {
                let t: f32 = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("threshold `{v}` is not a number")))?;
                cond.insert("threshold".into(), json!(t));
            }
            other => {
                return Err(bad(format!(
                    "unknown key `{other}` (text, audio, image, window, modalities, sources, threshold)"
                )))
            }
        }
    }
    let terms = terms.to_json()?;
    if terms.is_empty() {
        return Err(bad("give text=…, audio=…, image=… or window=…".into()));
    }
    put_terms(&mut cond, terms);
    Ok(Value::Object(cond))
}

/// `2026-11-30 14:02:06.0 UTC` from Unix ns.
pub fn utc(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    format!(
        "{}.{} UTC",
        t.format("%Y-%m-%d %H:%M:%S"),
        ns.rem_euclid(1_000_000_000) / 100_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_request_bodies() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.0 UTC");
        assert_eq!(utc(1_764_511_326_987_654_321), "2025-11-30 14:02:06.9 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59.9 UTC");
        // Leap day.
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00.0 UTC");

        let one = request_body(
            &Terms {
                text: vec!["a dog".into()],
                ..Default::default()
            },
            &[],
            None,
        )
        .unwrap();
        assert_eq!(Value::Object(one), json!({"text": "a dog"}));
        let two = request_body(
            &Terms {
                text: vec!["a dog".into()],
                window: vec!["audio/mic/7".into()],
                ..Default::default()
            },
            &[],
            None,
        )
        .unwrap();
        assert_eq!(two["terms"][1]["example"]["window"]["seq"], 7);
        let all = request_body(
            &Terms::default(),
            &[
                "text=a siren;modalities=audio;threshold=0.3".into(),
                "text=smoke".into(),
            ],
            Some(3),
        )
        .unwrap();
        assert_eq!(all["all"][0]["modalities"], json!(["audio"]));
        assert_eq!(all["all"][0]["threshold"].as_f64().unwrap() as f32, 0.3);
        assert_eq!(all["within_windows"], 3);
        let e = all_condition("colour=red").unwrap_err().to_string();
        assert!(e.contains("unknown key `colour`"), "{e}");
        assert!(request_body(&Terms::default(), &[], None).is_err());
        let q = SearchQuery {
            since: Some("15m".into()),
            ..SearchQuery::text("a dog; barking", 3)
        };
        assert_eq!(q.params().unwrap(), "text=a%20dog%3B%20barking;k=3;since=15m");
        assert!(SearchQuery::text("x", 0).params().is_err());
    }
}
