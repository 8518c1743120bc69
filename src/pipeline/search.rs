//! The history's two tasks: the writer thread (embeddings → disk, after the outputs
//! stage) and the `search` queryable (`get <prefix>/<robot>/search?…`, see
//! [`crate::history::params`]), which answers with one JSON reply:
//! `{robot, results: [{robot, source, modality, seq, t_start_ns, t_end_ns, score}],
//! scanned, rescored, took_ms}`, best first; a refused search gets an error reply
//! `{error}`.

use crate::bus::msg::{JsonMsg, SearchErrorMsg, SearchHit, SearchReply};
use crate::bus::Topics;
use crate::edge::{Receiver, Recv};
use crate::history::params::{SearchLimits, SearchParams};
use crate::history::{History, Record, SearchRequest};
use crate::ident::clip;
use crate::queries::TokenBucket;
use crate::telemetry::{names, DaemonEvent, LogLimiter, Telemetry};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The history, shared by its writer and the searches.
pub type SharedHistory = Arc<RwLock<History>>;

/// The history's figures for health.
pub(crate) fn report(h: &History, telemetry: &Telemetry) {
    telemetry.emit(DaemonEvent::History {
        windows: h.len() as u64,
        bytes: h.bytes(),
        oldest_ns: h.oldest_ns(),
        corrupt: h.corrupt(),
    });
}

/// Append every record to the history; fdatasync every `sync`; a final sync when the
/// outputs stage ends. A write error is logged (rate limited), counted and shown in
/// health; the daemon goes on.
pub fn history_stage(rx: Receiver<Record>, history: SharedHistory, telemetry: Arc<Telemetry>, sync: Duration) {
    let mut limiter = LogLimiter::new(Duration::from_secs(30));
    let mut last_report = Instant::now();
    loop {
        let item = rx.recv_timeout(sync.min(Duration::from_millis(500)));
        let mut h = history.write().unwrap_or_else(|p| p.into_inner());
        match item {
            Recv::Item(r) => {
                match h.append(&r, Instant::now()) {
                    Err(crate::history::HistoryError::Changed(e)) => {
                        // Written, but the file had been changed by someone else.
                        telemetry.emit(DaemonEvent::HistoryReadFailed(e.clone()));
                        tracing::error!(event = names::HISTORY_DAMAGED, error = %e, "history file changed outside the daemon");
                    }
                    Err(e) => {
                        telemetry.emit(DaemonEvent::HistoryWriteFailed(e.to_string()));
                        if let Some(suppressed) = limiter.allow() {
                            tracing::error!(event = names::HISTORY_WRITE_FAILED, error = %e, suppressed, "embedding not kept in the history");
                        }
                    }
                    Ok(()) => {
                        telemetry.emit(DaemonEvent::HistoryWritten);
                        if last_report.elapsed() >= Duration::from_secs(1) {
                            report(&h, &telemetry);
                            last_report = Instant::now();
                        }
                    }
                }
            }
            Recv::Timeout => {
                h.maybe_sync(Instant::now());
                report(&h, &telemetry);
            }
            Recv::Closed => {
                h.sync();
                report(&h, &telemetry);
                return;
            }
        }
    }
}

/// What the search service needs to embed a search's text.
pub type EmbedText = super::stages::EmbedText;

/// Run one search: embed the text (or fetch the example window), then search.
pub fn run_search(
    p: &SearchParams,
    history: &SharedHistory,
    embed: &EmbedText,
) -> Result<crate::history::SearchResult, String> {
    let vector = match (&p.text, &p.example) {
        (Some(t), _) => embed(t.clone())?,
        (None, Some(w)) => {
            let h = history.read().unwrap_or_else(|p| p.into_inner());
            h.get(&w.source, w.modality, w.seq)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("`example={w}`: no such window in the history"))?
                .vector
        }
        (None, None) => return Err("nothing to search for".into()),
    };
    let req = SearchRequest {
        vector,
        ..p.search.clone()
    };
    let h = history.read().unwrap_or_else(|p| p.into_inner());
    h.search(&req).map_err(|e| e.to_string())
}

/// What the `search` queryable works with.
pub struct SearchService {
    pub session: zenoh::Session,
    pub topics: Topics,
    pub robot: String,
    pub history: SharedHistory,
    /// Embeds a search's text.
    pub embed: EmbedText,
    pub limits: SearchLimits,
    /// Searches per second and burst (`history.searches_per_s`, `history.search_burst`).
    pub rate: f64,
    pub burst: u32,
    pub telemetry: Arc<Telemetry>,
}

/// The `search` queryable. Searches run one at a time, off the async threads.
pub async fn search_service(ctx: SearchService) {
    let SearchService {
        session,
        topics,
        robot,
        history,
        embed,
        limits,
        rate,
        burst,
        telemetry,
    } = ctx;
    let queryable = match session.declare_queryable(topics.search()).await {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(event = names::BUS_ERROR, error = %e, "cannot declare the search queryable");
            return;
        }
    };
    let mut bucket = TokenBucket::new(rate, burst);
    let mut limiter = LogLimiter::new(Duration::from_secs(10));
    while let Ok(query) = queryable.recv_async().await {
        let t0 = Instant::now();
        let params = query.parameters().as_str().to_string();
        let answer: Result<SearchReply, String> = if !bucket.take(t0) {
            Err(format!(
                "too many searches: at most {rate} per second, bursts of {burst} (`history.searches_per_s`, `history.search_burst`)"
            ))
        } else {
            match SearchParams::parse(&params, limits, crate::clock::realtime_ns()) {
                Err(e) => Err(e),
                Ok(p) => {
                    let (h, e) = (history.clone(), embed.clone());
                    match tokio::task::spawn_blocking(move || run_search(&p, &h, &e)).await {
                        Ok(Ok(r)) => {
                            if let Some(f) = r.faults.first() {
                                telemetry.emit(DaemonEvent::HistoryReadFailed(f.to_string()));
                                tracing::error!(event = names::HISTORY_DAMAGED, error = %f, skipped = r.faults.len(), "history records could not be read back; skipped");
                            }
                            Ok(SearchReply {
                                robot: robot.to_string(),
                                results: r.hits.into_iter().map(|hit| SearchHit::new(&robot, hit)).collect(),
                                scanned: r.scanned as u64,
                                rescored: r.rescored as u64,
                                took_ms: t0.elapsed().as_secs_f64() * 1e3,
                            })
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err("the search failed".into()),
                    }
                }
            }
        };
        match answer {
            Ok(body) => {
                telemetry.emit(DaemonEvent::Searched);
                let _ = query
                    .reply(topics.search(), body.to_json())
                    .encoding(zenoh::bytes::Encoding::APPLICATION_JSON)
                    .await;
            }
            Err(e) => {
                if let Some(suppressed) = limiter.allow() {
                    tracing::warn!(event = names::SEARCH_REFUSED, params = %clip(&params, 200), error = %clip(&e, 300), suppressed, "search refused");
                }
                let body = SearchErrorMsg {
                    robot: robot.to_string(),
                    error: e,
                }
                .to_json();
                let _ = query
                    .reply_err(body)
                    .encoding(zenoh::bytes::Encoding::APPLICATION_JSON)
                    .await;
            }
        }
    }
}
