//! Every metric, once: one row of [`METRICS`] gives its Prometheus name, kind and help,
//! where it lives in the health JSON, and how to read it. `/metrics` is rendered from
//! the same [`HealthMsg`] snapshot that is published on `health` ([`render`]), so the
//! two cannot disagree; only the latency histogram, which health summarises as
//! percentiles, is read from its own buckets ([`Histograms`]).

use crate::bus::msg::{HealthMsg, SourceHealth, SourceState, StreamHealth};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// How a metric's samples are read from a health snapshot, and which labels they get:
/// `source`+`type` per source, `source`+`modality` per stream, plus the one named here.
pub enum Read {
    Daemon(fn(&HealthMsg) -> f64),
    /// One sample per value of the named label.
    DaemonBy(&'static str, fn(&HealthMsg) -> Vec<(String, f64)>),
    Source(fn(&SourceHealth) -> f64),
    Stream(fn(&StreamHealth) -> f64),
    /// One sample per value of the named label.
    StreamBy(&'static str, fn(&StreamHealth) -> Vec<(&'static str, f64)>),
    /// The stream's latency buckets (health only has percentiles).
    StreamLatency,
}

/// One metric: a row of [`METRICS`].
pub struct Metric {
    /// `sensebind_<noun>_<unit>[_total]`, as `/metrics` serves it.
    pub name: &'static str,
    /// Where the health JSON has it (`<id>`, `<m>`: a source id, a modality).
    pub health: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub read: Read,
}

const fn row(name: &'static str, health: &'static str, kind: Kind, help: &'static str, read: Read) -> Metric {
    Metric {
        name,
        health,
        kind,
        help,
        read,
    }
}

fn n(v: u64) -> f64 {
    v as f64
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric the daemon keeps, in the order `/metrics` lists them.
pub const METRICS: &[Metric] = &[
    row("sensebind_uptime_seconds", "uptime_s", Gauge, "seconds since the daemon started", Read::Daemon(|h| h.uptime_s)),
    row(
        "sensebind_source_up",
        "sources.<id>.state",
        Gauge,
        "1 while the source's driver is running, 0 while it is starting, reconnecting, ended or stopped",
        Read::Source(|s| f64::from(u8::from(s.state == SourceState::Running))),
    ),
    row("sensebind_source_frames_total", "sources.<id>.frames", Counter, "frames the driver delivered", Read::Source(|s| n(s.frames))),
    row(
        "sensebind_source_frames_dropped_total",
        "sources.<id>.frames_dropped",
        Counter,
        "frames discarded by the source to windower queue policy",
        Read::Source(|s| n(s.frames_dropped)),
    ),
    row(
        "sensebind_source_errors_total",
        "sources.<id>.errors",
        Counter,
        "open failures, read failures and bad frames",
        Read::Source(|s| n(s.errors)),
    ),
    row(
        "sensebind_source_reconnects_total",
        "sources.<id>.reconnects",
        Counter,
        "times the driver was reopened after a failure",
        Read::Source(|s| n(s.reconnects)),
    ),
    row(
        "sensebind_source_panics_total",
        "sources.<id>.panics",
        Counter,
        "driver panics (each one restarts the driver)",
        Read::Source(|s| n(s.panics)),
    ),
    row(
        "sensebind_stream_frames_rejected_total",
        "sources.<id>.streams.<m>.frames_rejected",
        Counter,
        "frames refused by the windower (limits, bad formats, NaN, wild timestamps, byte budget)",
        Read::Stream(|s| n(s.frames_rejected)),
    ),
    row(
        "sensebind_stream_late_frames_total",
        "sources.<id>.streams.<m>.late_frames",
        Counter,
        "frames that arrived after their window closed",
        Read::Stream(|s| n(s.late_frames)),
    ),
    row(
        "sensebind_stream_time_jumps_total",
        "sources.<id>.streams.<m>.time_jumps",
        Counter,
        "times the stream's clock jumped and windowing restarted",
        Read::Stream(|s| n(s.time_jumps)),
    ),
    row(
        "sensebind_stream_windows_total",
        "sources.<id>.streams.<m>.windows_in",
        Counter,
        "windows closed by the windower (= published + dropped + pending)",
        Read::Stream(|s| n(s.windows_in)),
    ),
    row(
        "sensebind_stream_windows_published_total",
        "sources.<id>.streams.<m>.windows_out",
        Counter,
        "windows embedded and published",
        Read::Stream(|s| n(s.windows_out)),
    ),
    row(
        "sensebind_stream_windows_dropped_total",
        "sources.<id>.streams.<m>.windows_dropped.<reason>",
        Counter,
        "windows dropped after closing, by reason (coverage, backpressure, error, shutdown, budget, stale)",
        Read::StreamBy("reason", |s| {
            let d = &s.windows_dropped;
            vec![
                ("coverage", n(d.coverage)),
                ("backpressure", n(d.backpressure)),
                ("error", n(d.error)),
                ("shutdown", n(d.shutdown)),
                ("budget", n(d.budget)),
                ("stale", n(d.stale)),
            ]
        }),
    ),
    row(
        "sensebind_stream_windows_pending",
        "sources.<id>.streams.<m>.windows_in - windows_out - windows_dropped.*",
        Gauge,
        "windows closed and not yet published or dropped (queued, encoding, publishing)",
        Read::Stream(|s| n(s.windows_in.saturating_sub(s.windows_out + s.windows_dropped.total()))),
    ),
    row(
        "sensebind_stream_wedged",
        "sources.<id>.streams.<m>.wedged",
        Gauge,
        "1 while the stream's windows wait unhandled for daemon.watchdog_stall_s",
        Read::Stream(|s| f64::from(u8::from(s.wedged))),
    ),
    row(
        "sensebind_stream_latency_seconds",
        "sources.<id>.streams.<m>.latency_ms (percentiles)",
        Histogram,
        "window queued to embedding ready: queue, preprocessing, inference",
        Read::StreamLatency,
    ),
    row("sensebind_queries_registered", "queries", Gauge, "registered text queries", Read::Daemon(|h| n(h.queries))),
    row(
        "sensebind_query_refusals_total",
        "queries_refused.<code>",
        Counter,
        "requests on queries/<id> refused, by reason (bad_id, too_large, invalid, rate_limited, too_many, not_registered, encoder, store)",
        Read::DaemonBy("reason", |h| h.queries_refused.iter().map(|(k, v)| (k.clone(), n(*v))).collect()),
    ),
    row(
        "sensebind_query_store_ok",
        "query_store.ok",
        Gauge,
        "1 while the query store holds every registered query, 0 while they are in memory only",
        Read::Daemon(|h| f64::from(u8::from(h.query_store.ok))),
    ),
    row("sensebind_alerts_total", "alerts", Counter, "alerts published", Read::Daemon(|h| n(h.alerts))),
    row(
        "sensebind_fused_windows_total",
        "fused.windows, fused.incomplete",
        Counter,
        "fused windows published, by whether every expected stream was a member",
        Read::DaemonBy("complete", |h| {
            vec![
                ("true".into(), n(h.fused.windows.saturating_sub(h.fused.incomplete))),
                ("false".into(), n(h.fused.incomplete)),
            ]
        }),
    ),
    row(
        "sensebind_history_windows",
        "history.windows",
        Gauge,
        "embeddings kept in the history (every stream and fused)",
        Read::Daemon(|h| n(h.history.windows)),
    ),
    row("sensebind_history_bytes", "history.bytes", Gauge, "disk used by the history", Read::Daemon(|h| n(h.history.bytes))),
    row(
        "sensebind_history_write_errors_total",
        "history.write_errors",
        Counter,
        "embeddings that could not be written to the history (disk full, I/O error)",
        Read::Daemon(|h| n(h.history.write_errors)),
    ),
    row(
        "sensebind_history_read_errors_total",
        "history.read_errors",
        Counter,
        "history records that could not be read back (damaged, cut short, I/O error)",
        Read::Daemon(|h| n(h.history.read_errors)),
    ),
    row(
        "sensebind_history_corrupt_total",
        "history.corrupt",
        Counter,
        "history records found damaged (CRC) at load or when read, skipped",
        Read::Daemon(|h| n(h.history.corrupt)),
    ),
    row(
        "sensebind_history_dropped_total",
        "history.dropped",
        Counter,
        "embeddings lost before reaching the history (its queue was full, or it was gone)",
        Read::Daemon(|h| n(h.history.dropped)),
    ),
    row("sensebind_searches_total", "searches", Counter, "searches answered on `search`", Read::Daemon(|h| n(h.searches))),
    row("sensebind_publish_errors_total", "bus_errors", Counter, "bus publish failures", Read::Daemon(|h| n(h.bus_errors))),
    row(
        "sensebind_stage_failures_total",
        "failed_stages",
        Counter,
        "pipeline stages that failed (the daemon then exits)",
        Read::Daemon(|h| h.failed_stages.len() as f64),
    ),
];

/// Upper bounds (seconds) of the window latency histogram.
pub const LATENCY_BUCKETS_S: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One stream's latency histogram: counts per [`LATENCY_BUCKETS_S`] bound (not
/// cumulative; the last is over every bound) and the sum of seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BUCKETS_S.len() + 1],
    pub sum_s: f64,
}

impl Latency {
    pub fn observe(&mut self, s: f64) {
        let b = LATENCY_BUCKETS_S
            .iter()
            .position(|ub| s <= *ub)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[b] += 1;
        self.sum_s += s;
    }
}

/// Latency histograms by (source id, modality name), as health names them.
pub type Histograms = BTreeMap<(String, String), Latency>;

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4) of `health`: every row of
/// [`METRICS`], with its HELP and TYPE lines.
pub fn render(health: &HealthMsg, latency: &Histograms) -> String {
    let mut out = String::new();
    for m in METRICS {
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {}", m.name, m.kind.as_str());
        for (suffix, labels, v) in samples(m, health, latency) {
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{}{suffix}{labels} {v}", m.name);
        }
    }
    out
}

/// One metric's samples: (name suffix, labels, value).
fn samples(m: &Metric, h: &HealthMsg, latency: &Histograms) -> Vec<(&'static str, String, f64)> {
    let mut out = Vec::new();
    let sources = || h.sources.iter();
    let streams = || {
        sources().flat_map(|(id, s)| {
            s.streams.iter().map(move |(mo, st)| {
                (
                    id,
                    mo,
                    format!("source=\"{}\",modality=\"{}\"", label(id), label(mo)),
                    st,
                )
            })
        })
    };
    match &m.read {
        Read::Daemon(f) => out.push(("", String::new(), f(h))),
        Read::DaemonBy(key, f) => out.extend(
            f(h).into_iter()
                .map(|(k, v)| ("", format!("{key}=\"{}\"", label(&k)), v)),
        ),
        Read::Source(f) => out.extend(sources().map(|(id, s)| {
            (
                "",
                format!("source=\"{}\",type=\"{}\"", label(id), label(&s.kind)),
                f(s),
            )
        })),
        Read::Stream(f) => out.extend(streams().map(|(_, _, l, st)| ("", l, f(st)))),
        Read::StreamBy(key, f) => {
            for (_, _, l, st) in streams() {
                out.extend(f(st).into_iter().map(|(k, v)| ("", format!("{l},{key}=\"{k}\""), v)));
            }
        }
        Read::StreamLatency => {
            for (id, mo, l, _) in streams() {
                let hist = latency.get(&(id.clone(), mo.clone())).cloned().unwrap_or_default();
                let mut cum = 0;
                for (i, ub) in LATENCY_BUCKETS_S.iter().enumerate() {
                    cum += hist.buckets[i];
                    out.push(("_bucket", format!("{l},le=\"{ub}\""), cum as f64));
                }
                cum += hist.buckets[LATENCY_BUCKETS_S.len()];
                out.push(("_bucket", format!("{l},le=\"+Inf\""), cum as f64));
                out.push(("_sum", l.clone(), hist.sum_s));
                out.push(("_count", l, cum as f64));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_convention() {
        let mut seen = std::collections::BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("sensebind_"), "{}", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}", m.name);
            assert!(!m.help.is_empty() && !m.health.is_empty(), "{}", m.name);
        }
    }
}
