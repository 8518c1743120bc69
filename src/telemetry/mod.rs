//! Telemetry in one place. Stages emit typed events ([`SourceEvent`],
//! [`StreamEvent`], [`DaemonEvent`]) into per-source and per-stream counters; the
//! health JSON on the bus ([`HealthMsg`]) is rendered from those counters, and
//! `/metrics` from that health snapshot. Every metric is one row of
//! [`metrics::METRICS`] and every log `event` name is listed in [`names`].

pub mod metrics;

use crate::bus::msg::{
    FailedStage, FusedHealth, HealthMsg, HealthStatus, HistoryHealth, LatencyMs, QueryStoreHealth, SourceHealth,
    SourceState, StreamHealth, StreamState, WindowsDropped,
};
use crate::clock::ClockKind;
use crate::modality::Modality;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The `event` field of every log record, by name.
pub mod names {
    pub const DAEMON_STARTED: &str = "daemon_started";
    pub const DAEMON_STOPPING: &str = "daemon_stopping";
    pub const DAEMON_STOPPED: &str = "daemon_stopped";
    pub const SHUTDOWN_TIMEOUT: &str = "shutdown_timeout";
    pub const PACK_LOADED: &str = "pack_loaded";
    pub const BUS_OPEN: &str = "bus_open";
    pub const BUS_ERROR: &str = "bus_error";
    pub const BUS_ISOLATED: &str = "bus_isolated";
    pub const PUBLISH_FAILED: &str = "publish_failed";
    pub const PROVIDER_FALLBACK: &str = "provider_fallback";
    pub const SOURCE_STARTED: &str = "source_started";
    pub const SOURCE_OPEN_FAILED: &str = "source_open_failed";
    pub const SOURCE_FAILED: &str = "source_failed";
    pub const SOURCE_BAD_DATA: &str = "source_bad_data";
    pub const SOURCE_ALL_REJECTED: &str = "source_all_rejected";
    pub const SOURCE_ENDED: &str = "source_ended";
    pub const SOURCE_PANICKED: &str = "source_panicked";
    pub const SOURCE_STUCK: &str = "source_stuck";
    pub const FRAME_REJECTED: &str = "frame_rejected";
    pub const WINDOW_DROPPED: &str = "window_dropped";
    pub const TIME_JUMP: &str = "time_jump";
    pub const WINDOW_FAILED: &str = "window_failed";
    pub const STAGE_FAILED: &str = "stage_failed";
    pub const QUERY_REGISTERED: &str = "query_registered";
    pub const QUERY_REMOVED: &str = "query_removed";
    pub const QUERY_REJECTED: &str = "query_rejected";
    pub const QUERIES_LOADED: &str = "queries_loaded";
    pub const QUERIES_OVER_LIMIT: &str = "queries_over_limit";
    pub const QUERY_STORE_CORRUPT: &str = "query_store_corrupt";
    pub const QUERY_STORE_FAILED: &str = "query_store_failed";
    pub const QUERY_STORE_RECOVERED: &str = "query_store_recovered";
    pub const ENCODER_LOADED: &str = "encoder_loaded";
    pub const ENCODER_WARMUP: &str = "encoder_warmup";
    pub const ENCODE_FAILED: &str = "encode_failed";
    pub const ENCODER_BEHIND: &str = "encoder_behind";
    pub const DEPTH_GEOMETRY: &str = "depth_geometry";
    pub const SOURCES_ENDED: &str = "sources_ended";
    pub const RECORD_STARTED: &str = "record_started";
    pub const RECORD_FINISHED: &str = "record_finished";
    pub const RECORD_SKIPPED: &str = "record_skipped";
    pub const RECORD_LAGGED: &str = "record_lagged";
    pub const REPLAY_SKIPPED: &str = "replay_skipped";
    pub const REPLAY_TRUNCATED: &str = "replay_truncated";
    pub const LIVEVIEW_STARTED: &str = "liveview_started";
    pub const LIVEVIEW_CLIENT_CLOSED: &str = "liveview_client_closed";
    pub const LIVEVIEW_ACCEPT_FAILED: &str = "liveview_accept_failed";
    pub const PROMETHEUS_STARTED: &str = "prometheus_started";
    pub const IMU_CORRECTED: &str = "imu_corrected";
    pub const NOTIFY_FAILED: &str = "notify_failed";
    pub const WATCHDOG_WITHHELD: &str = "watchdog_withheld";
    pub const WATCHDOG_RESUMED: &str = "watchdog_resumed";
    pub const HISTORY_LOADED: &str = "history_loaded";
    pub const HISTORY_DAMAGED: &str = "history_damaged";
    pub const HISTORY_FAILED: &str = "history_failed";
    pub const HISTORY_WRITE_FAILED: &str = "history_write_failed";
    pub const SEARCH_REFUSED: &str = "search_refused";
    pub const ROS2_NODE: &str = "ros2_node";
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a source runner reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SourceEvent {
    Opened,
    OpenFailed,
    /// A read failed; the driver is being reopened.
    Failed,
    /// One frame was bad and skipped.
    BadData,
    Panicked,
    Frame {
        t_ns: i64,
    },
    /// The source → windower queue discarded a frame.
    FrameDropped,
    Ended,
    Stopped,
}

/// Why a window was dropped after the windower closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowDrop {
    Coverage,
    Backpressure,
    Error,
    Shutdown,
    /// Over the modality's frame-rate budget (`engine.modalities.<m>.max_rate_hz`).
    Budget,
    /// Waited longer than `engine.max_wait_s` for its encoder.
    Stale,
}

/// What a stream's windower, its encoder worker and the outputs report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamEvent {
    /// The windower closed a window (ready or dropped for coverage).
    WindowClosed,
    WindowDropped(WindowDrop),
    LateFrames(u64),
    FrameRejected,
    /// The stream's time jumped and the windower restarted its grid.
    TimeJump,
    Embedded {
        latency: Duration,
        batch: usize,
    },
    Published,
}

#[derive(Debug)]
pub struct SourceStats {
    pub id: String,
    pub kind: String,
    state: Mutex<SourceState>,
    description: Mutex<String>,
    /// Driver-specific counters (`xruns`, …) and what the device granted, as the
    /// driver reports them through [`crate::sources::Source::status`].
    driver: Mutex<serde_json::Map<String, Value>>,
    clock: Mutex<Option<ClockKind>>,
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub panics: AtomicU64,
    last_frame_ns: AtomicI64,
    last_frame_at: Mutex<Option<Instant>>,
}

impl SourceStats {
    pub fn new(id: &str, kind: &str) -> Self {
        SourceStats {
            id: id.into(),
            kind: kind.into(),
            state: Mutex::new(SourceState::Starting),
            description: Mutex::new(String::new()),
            driver: Mutex::new(serde_json::Map::new()),
            clock: Mutex::new(None),
            frames: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            last_frame_ns: AtomicI64::new(0),
            last_frame_at: Mutex::new(None),
        }
    }

    pub fn emit(&self, ev: SourceEvent) {
        match ev {
            SourceEvent::Opened => self.set_state(SourceState::Running),
            SourceEvent::OpenFailed => {
                self.errors.fetch_add(1, Relaxed);
                self.set_state(SourceState::Reconnecting);
            }
            SourceEvent::Failed => {
                self.errors.fetch_add(1, Relaxed);
                self.reconnects.fetch_add(1, Relaxed);
                self.set_state(SourceState::Reconnecting);
            }
            SourceEvent::BadData => {
                self.errors.fetch_add(1, Relaxed);
            }
            SourceEvent::Panicked => {
                self.panics.fetch_add(1, Relaxed);
                self.reconnects.fetch_add(1, Relaxed);
                self.set_state(SourceState::Reconnecting);
            }
            SourceEvent::Frame { t_ns } => {
                self.frames.fetch_add(1, Relaxed);
                self.last_frame_ns.store(t_ns, Relaxed);
                *lock(&self.last_frame_at) = Some(Instant::now());
            }
            SourceEvent::FrameDropped => {
                self.frames_dropped.fetch_add(1, Relaxed);
            }
            SourceEvent::Ended => self.set_state(SourceState::Ended),
            SourceEvent::Stopped => self.set_state(SourceState::Stopped),
        }
    }

    fn set_state(&self, s: SourceState) {
        *lock(&self.state) = s;
    }
    pub fn state(&self) -> SourceState {
        *lock(&self.state)
    }
    pub fn describe(&self, description: String, clock: ClockKind) {
        *lock(&self.description) = description;
        *lock(&self.clock) = Some(clock);
    }

    /// Replace the description (after an open: what the device actually granted).
    pub fn set_description(&self, description: String) {
        *lock(&self.description) = description;
    }

    /// The driver's own status (shown as `driver` in health).
    pub fn set_driver_status(&self, status: serde_json::Map<String, Value>) {
        *lock(&self.driver) = status;
    }

    fn snapshot(&self, streams: BTreeMap<String, StreamHealth>) -> SourceHealth {
        let age = lock(&self.last_frame_at).map(|t| (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
        SourceHealth {
            kind: self.kind.clone(),
            state: self.state(),
            description: lock(&self.description).clone(),
            driver: lock(&self.driver).clone(),
            clock: lock(&self.clock).map(|c| c.as_str().to_string()),
            frames: self.frames.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            panics: self.panics.load(Relaxed),
            last_frame_ns: self.last_frame_ns.load(Relaxed),
            last_frame_age_s: age,
            streams,
        }
    }
}

/// The last N latencies, for percentiles.
#[derive(Debug, Default)]
struct LatencyWindow {
    recent: VecDeque<f64>,
    max: f64,
    last: f64,
    /// Every latency, for Prometheus.
    histogram: metrics::Latency,
}

const LATENCY_SAMPLES: usize = 200;

/// One stream: one modality of one source.
#[derive(Debug)]
pub struct StreamStats {
    pub source: String,
    pub modality: Modality,
    pub windows_in: AtomicU64,
    pub windows_out: AtomicU64,
    pub dropped_coverage: AtomicU64,
    pub dropped_backpressure: AtomicU64,
    pub dropped_error: AtomicU64,
    pub dropped_shutdown: AtomicU64,
    pub dropped_budget: AtomicU64,
    pub dropped_stale: AtomicU64,
    pub late_frames: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub time_jumps: AtomicU64,
    pub batch_max: AtomicU64,
    latency: Mutex<LatencyWindow>,
    provider: Mutex<String>,
    /// Graph nodes per execution provider (from the encoder's warm-up run).
    provider_nodes: Mutex<Vec<(String, usize)>>,
    /// When the stream last published a window (or started).
    progress_at: Mutex<Instant>,
    /// When a closed window was last published or dropped after closing (or started):
    /// with windows waiting, a stale time means the encoder or the outputs are wedged.
    handled_at: Mutex<Instant>,
    /// When the stream's windower last polled (it polls at least every 200 ms).
    beat_at: Mutex<Instant>,
}

impl StreamStats {
    pub fn new(source: &str, modality: Modality) -> Self {
        StreamStats {
            source: source.into(),
            modality,
            windows_in: AtomicU64::new(0),
            windows_out: AtomicU64::new(0),
            dropped_coverage: AtomicU64::new(0),
            dropped_backpressure: AtomicU64::new(0),
            dropped_error: AtomicU64::new(0),
            dropped_shutdown: AtomicU64::new(0),
            dropped_budget: AtomicU64::new(0),
            dropped_stale: AtomicU64::new(0),
            late_frames: AtomicU64::new(0),
            frames_rejected: AtomicU64::new(0),
            time_jumps: AtomicU64::new(0),
            batch_max: AtomicU64::new(0),
            latency: Mutex::new(LatencyWindow::default()),
            provider: Mutex::new(String::new()),
            provider_nodes: Mutex::new(Vec::new()),
            progress_at: Mutex::new(Instant::now()),
            handled_at: Mutex::new(Instant::now()),
            beat_at: Mutex::new(Instant::now()),
        }
    }

    pub fn emit(&self, ev: StreamEvent) {
        match ev {
            StreamEvent::WindowClosed => {
                self.windows_in.fetch_add(1, Relaxed);
            }
            StreamEvent::WindowDropped(why) => {
                if why != WindowDrop::Coverage {
                    *lock(&self.handled_at) = Instant::now();
                }
                match why {
                    WindowDrop::Coverage => &self.dropped_coverage,
                    WindowDrop::Backpressure => &self.dropped_backpressure,
                    WindowDrop::Error => &self.dropped_error,
                    WindowDrop::Shutdown => &self.dropped_shutdown,
                    WindowDrop::Budget => &self.dropped_budget,
                    WindowDrop::Stale => &self.dropped_stale,
                }
                .fetch_add(1, Relaxed);
            }
            StreamEvent::LateFrames(n) => {
                self.late_frames.fetch_add(n, Relaxed);
            }
            StreamEvent::FrameRejected => {
                self.frames_rejected.fetch_add(1, Relaxed);
            }
            StreamEvent::TimeJump => {
                self.time_jumps.fetch_add(1, Relaxed);
            }
            StreamEvent::Embedded { latency, batch } => {
                self.batch_max.fetch_max(batch as u64, Relaxed);
                let ms = latency.as_secs_f64() * 1000.0;
                let mut l = lock(&self.latency);
                if l.recent.len() == LATENCY_SAMPLES {
                    l.recent.pop_front();
                }
                l.recent.push_back(ms);
                l.max = l.max.max(ms);
                l.last = ms;
                l.histogram.observe(latency.as_secs_f64());
            }
            StreamEvent::Published => {
                self.windows_out.fetch_add(1, Relaxed);
                let now = Instant::now();
                *lock(&self.progress_at) = now;
                *lock(&self.handled_at) = now;
            }
        }
    }

    pub fn set_provider(&self, p: &str) {
        *lock(&self.provider) = p.to_string();
    }

    /// Which provider runs how many of the encoder's graph nodes.
    pub fn set_provider_nodes(&self, nodes: Vec<(String, usize)>) {
        *lock(&self.provider_nodes) = nodes;
    }

    /// Windows dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_coverage.load(Relaxed)
            + self.dropped_backpressure.load(Relaxed)
            + self.dropped_error.load(Relaxed)
            + self.dropped_shutdown.load(Relaxed)
            + self.dropped_budget.load(Relaxed)
            + self.dropped_stale.load(Relaxed)
    }

    /// The windower is alive (called on every poll of its loop).
    pub fn beat(&self) {
        *lock(&self.beat_at) = Instant::now();
    }

    /// Windows closed and not yet published or dropped: in the encoder queue, being
    /// encoded, or waiting for the outputs stage.
    pub fn pending(&self) -> u64 {
        self.windows_in
            .load(Relaxed)
            .saturating_sub(self.windows_out.load(Relaxed) + self.dropped())
    }

    /// Why this stream is wedged, if it is: windows wait and none has been handled for
    /// `after`, or the windower has not polled for `after`. An idle stream (no frames:
    /// a sensor reconnecting, a quiet bus) is not wedged.
    pub fn wedged(&self, after: Duration) -> Option<String> {
        let pending = self.pending();
        let idle = lock(&self.handled_at).elapsed();
        if pending > 0 && idle > after {
            return Some(format!(
                "stream {}/{}: {pending} window(s) waiting and none encoded or published for {:.0} s (encoder or outputs stage wedged)",
                self.source,
                self.modality,
                idle.as_secs_f64()
            ));
        }
        let quiet = lock(&self.beat_at).elapsed();
        (quiet > after).then(|| {
            format!(
                "stream {}/{}: windower has not polled for {:.0} s (wedged)",
                self.source,
                self.modality,
                quiet.as_secs_f64()
            )
        })
    }

    fn stalled(&self, stall: Duration) -> bool {
        lock(&self.progress_at).elapsed() > stall
    }

    fn snapshot(&self, state: StreamState, wedged: bool, clock: Option<String>) -> StreamHealth {
        let l = lock(&self.latency);
        let mut v: Vec<f64> = l.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let r = |x: f64| (x * 100.0).round() / 100.0;
        let pct =
            |p: f64| -> Option<f64> { (!v.is_empty()).then(|| r(v[((v.len() - 1) as f64 * p).round() as usize])) };
        StreamHealth {
            state,
            wedged,
            windows_in: self.windows_in.load(Relaxed),
            windows_out: self.windows_out.load(Relaxed),
            windows_dropped: WindowsDropped {
                coverage: self.dropped_coverage.load(Relaxed),
                backpressure: self.dropped_backpressure.load(Relaxed),
                error: self.dropped_error.load(Relaxed),
                shutdown: self.dropped_shutdown.load(Relaxed),
                budget: self.dropped_budget.load(Relaxed),
                stale: self.dropped_stale.load(Relaxed),
            },
            late_frames: self.late_frames.load(Relaxed),
            frames_rejected: self.frames_rejected.load(Relaxed),
            time_jumps: self.time_jumps.load(Relaxed),
            batch_max: self.batch_max.load(Relaxed),
            latency_ms: LatencyMs {
                last: (!v.is_empty()).then(|| r(l.last)),
                p50: pct(0.5),
                p95: pct(0.95),
                max: (!v.is_empty()).then(|| r(l.max)),
            },
            provider: lock(&self.provider).clone(),
            provider_nodes: lock(&self.provider_nodes)
                .iter()
                .map(|(p, n)| (p.clone(), *n as u64))
                .collect(),
            clock,
        }
    }
}

/// What the daemon as a whole reports.
#[derive(Debug, Clone, PartialEq)]
pub enum DaemonEvent {
    Alerts(u64),
    Queries(u64),
    BusError,
    /// A request on `queries/<id>` was refused (its code, e.g. `rate_limited`).
    QueryRefused(&'static str),
    /// The query store after a write: `None` = in step with memory.
    QueryStore {
        error: Option<String>,
    },
    /// The query store was damaged at start (what was found, where the copy is).
    QueryStoreDamaged(String),
    /// A fused window was published.
    FusedPublished {
        complete: bool,
    },
    /// The history after a write or an expiry.
    History {
        windows: u64,
        bytes: u64,
        oldest_ns: Option<i64>,
        /// Records found damaged so far.
        corrupt: u64,
    },
    /// An embedding could not be written to the history (the error, for health).
    HistoryWriteFailed(String),
    /// An embedding was written: a write or read problem reported before is over.
    HistoryWritten,
    /// A record could not be read back, or a file changed outside the daemon.
    HistoryReadFailed(String),
    /// An embedding was lost before reaching the history.
    HistoryDropped,
    /// A search was answered.
    Searched,
    /// A stage ended or panicked; the daemon cannot go on as configured.
    StageFailed {
        stage: String,
        reason: String,
    },
}

/// All counters of one daemon.
#[derive(Debug)]
pub struct Telemetry {
    started: Instant,
    stall: Duration,
    /// Waiting work with no progress for this long is a wedged stage.
    wedge_after: Duration,
    sources: Mutex<BTreeMap<String, Arc<SourceStats>>>,
    streams: Mutex<BTreeMap<(String, Modality), Arc<StreamStats>>>,
    pub alerts: AtomicU64,
    pub queries: AtomicU64,
    pub bus_errors: AtomicU64,
    query_refusals: Mutex<BTreeMap<&'static str, u64>>,
    query_store_error: Mutex<Option<String>>,
    query_store_damaged: Mutex<Option<String>>,
    pub fused: AtomicU64,
    pub fused_incomplete: AtomicU64,
    history: Mutex<(u64, u64, Option<i64>)>,
    history_write_errors: AtomicU64,
    history_read_errors: AtomicU64,
    history_corrupt: AtomicU64,
    history_dropped: AtomicU64,
    history_error: Mutex<Option<String>>,
    pub searches: AtomicU64,
    failed: Mutex<Vec<FailedStage>>,
}

impl Telemetry {
    pub fn new(stall: Duration) -> Self {
        Telemetry {
            started: Instant::now(),
            stall,
            wedge_after: Duration::from_secs(30),
            sources: Mutex::new(BTreeMap::new()),
            streams: Mutex::new(BTreeMap::new()),
            alerts: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            bus_errors: AtomicU64::new(0),
            query_refusals: Mutex::new(BTreeMap::new()),
            query_store_error: Mutex::new(None),
            query_store_damaged: Mutex::new(None),
            fused: AtomicU64::new(0),
            fused_incomplete: AtomicU64::new(0),
            history: Mutex::new((0, 0, None)),
            history_write_errors: AtomicU64::new(0),
            history_read_errors: AtomicU64::new(0),
            history_corrupt: AtomicU64::new(0),
            history_dropped: AtomicU64::new(0),
            history_error: Mutex::new(None),
            searches: AtomicU64::new(0),
            failed: Mutex::new(Vec::new()),
        }
    }

    /// How long waiting work may go without progress before a stage counts as wedged
    /// (`daemon.watchdog_stall_s`; default 30 s).
    pub fn with_wedge_after(mut self, after: Duration) -> Self {
        self.wedge_after = after;
        self
    }

    /// What is wedged now (empty: the pipeline makes progress, or is idle). A stream
    /// whose source has ended or stopped has no windower to watch.
    pub fn wedged(&self) -> Vec<String> {
        let sources = lock(&self.sources).clone();
        self.streams()
            .iter()
            .filter_map(|st| self.stream_wedged(&sources, st))
            .collect()
    }

    /// Why `st` is wedged, if it is (never once its source has ended or stopped).
    fn stream_wedged(&self, sources: &BTreeMap<String, Arc<SourceStats>>, st: &StreamStats) -> Option<String> {
        let done = sources.get(&st.source).is_some_and(|s| s.state().is_done());
        (!done).then(|| st.wedged(self.wedge_after)).flatten()
    }

    /// One line for systemd's `STATUS=`: streams up, windows published, drops.
    pub fn status_line(&self, windows_per_s: f64) -> String {
        let sources = lock(&self.sources).clone();
        let streams = self.streams();
        let up = streams
            .iter()
            .filter(|st| {
                sources
                    .get(&st.source)
                    .is_some_and(|s| s.state() == SourceState::Running)
            })
            .count();
        let dropped: u64 = streams.iter().map(|st| st.dropped()).sum();
        let frames_dropped: u64 = sources.values().map(|s| s.frames_dropped.load(Relaxed)).sum();
        let mut line = format!(
            "{up}/{} streams up, {windows_per_s:.1} windows/s, {dropped} windows dropped, {frames_dropped} frames dropped, {} queries",
            streams.len(),
            self.queries.load(Relaxed)
        );
        let down: Vec<String> = sources
            .values()
            .filter(|s| !s.state().is_healthy())
            .map(|s| format!("{} {}", s.id, s.state()))
            .collect();
        if !down.is_empty() {
            line.push_str(&format!("; {}", down.join(", ")));
        }
        line
    }

    /// Windows published so far, over every stream.
    pub fn windows_out(&self) -> u64 {
        self.streams().iter().map(|st| st.windows_out.load(Relaxed)).sum()
    }

    pub fn source(&self, id: &str, kind: &str) -> Arc<SourceStats> {
        lock(&self.sources)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(SourceStats::new(id, kind)))
            .clone()
    }

    pub fn stream(&self, source: &str, m: Modality) -> Arc<StreamStats> {
        lock(&self.streams)
            .entry((source.to_string(), m))
            .or_insert_with(|| Arc::new(StreamStats::new(source, m)))
            .clone()
    }

    pub fn streams(&self) -> Vec<Arc<StreamStats>> {
        lock(&self.streams).values().cloned().collect()
    }

    pub fn emit(&self, ev: DaemonEvent) {
        match ev {
            DaemonEvent::Alerts(n) => {
                self.alerts.fetch_add(n, Relaxed);
            }
            DaemonEvent::Queries(n) => self.queries.store(n, Relaxed),
            DaemonEvent::BusError => {
                self.bus_errors.fetch_add(1, Relaxed);
            }
            DaemonEvent::QueryRefused(code) => {
                *lock(&self.query_refusals).entry(code).or_insert(0) += 1;
            }
            DaemonEvent::QueryStore { error } => {
                if error.is_none() {
                    // A good write replaced whatever was damaged at start.
                    *lock(&self.query_store_damaged) = None;
                }
                *lock(&self.query_store_error) = error;
            }
            DaemonEvent::QueryStoreDamaged(what) => *lock(&self.query_store_damaged) = Some(what),
            DaemonEvent::FusedPublished { complete } => {
                self.fused.fetch_add(1, Relaxed);
                if !complete {
                    self.fused_incomplete.fetch_add(1, Relaxed);
                }
            }
            DaemonEvent::History {
                windows,
                bytes,
                oldest_ns,
                corrupt,
            } => {
                *lock(&self.history) = (windows, bytes, oldest_ns);
                self.history_corrupt.fetch_max(corrupt, Relaxed);
            }
            DaemonEvent::HistoryWriteFailed(e) => {
                self.history_write_errors.fetch_add(1, Relaxed);
                *lock(&self.history_error) = Some(format!("not written: {e}"));
            }
            DaemonEvent::HistoryWritten => {
                *lock(&self.history_error) = None;
            }
            DaemonEvent::HistoryReadFailed(e) => {
                self.history_read_errors.fetch_add(1, Relaxed);
                *lock(&self.history_error) = Some(format!("not read: {e}"));
            }
            DaemonEvent::HistoryDropped => {
                self.history_dropped.fetch_add(1, Relaxed);
            }
            DaemonEvent::Searched => {
                self.searches.fetch_add(1, Relaxed);
            }
            DaemonEvent::StageFailed { stage, reason } => {
                lock(&self.failed).push(FailedStage {
                    stage: stage.to_string(),
                    reason: reason.to_string(),
                });
            }
        }
    }

    pub fn failed(&self) -> bool {
        !lock(&self.failed).is_empty()
    }

    /// The JSON published on `health`, as a JSON value.
    pub fn snapshot(&self, robot: &str, t_ns: i64) -> Value {
        serde_json::to_value(self.health(robot, t_ns)).unwrap_or_default()
    }

    /// What is published on `health`.
    pub fn health(&self, robot: &str, t_ns: i64) -> HealthMsg {
        let sources = lock(&self.sources).clone();
        let streams = lock(&self.streams).clone();
        let mut degraded = Vec::new();
        let mut out = BTreeMap::new();
        for (id, s) in &sources {
            let state = s.state();
            if !state.is_healthy() {
                degraded.push(format!("source {id} is {state}"));
            }
            let mut per = BTreeMap::new();
            for ((sid, m), st) in streams.iter().filter(|((sid, _), _)| sid == id) {
                let sstate = if state == SourceState::Ended {
                    StreamState::Ended
                } else if state == SourceState::Stopped {
                    StreamState::Stopped
                } else if st.stalled(self.stall) {
                    degraded.push(format!(
                        "stream {sid}/{m} has published no window for {} s",
                        self.stall.as_secs_f64()
                    ));
                    StreamState::Stalled
                } else {
                    StreamState::Ok
                };
                let wedged = self.stream_wedged(&sources, st);
                let clock = lock(&s.clock).map(|c| c.as_str().to_string());
                per.insert(m.to_string(), st.snapshot(sstate, wedged.is_some(), clock));
                degraded.extend(wedged);
            }
            out.insert(id.clone(), s.snapshot(per));
        }
        let store_error = lock(&self.query_store_error).clone();
        let store_damaged = lock(&self.query_store_damaged).clone();
        if let Some(e) = &store_error {
            degraded.push(format!("query store not written (queries kept in memory only): {e}"));
        }
        if let Some(d) = &store_damaged {
            degraded.push(format!("query store: {d}"));
        }
        let history_error = lock(&self.history_error).clone();
        if let Some(e) = &history_error {
            degraded.push(format!("history {e}"));
        }
        let (h_windows, h_bytes, h_oldest) = *lock(&self.history);
        let failed = lock(&self.failed).clone();
        let status = if !failed.is_empty() {
            HealthStatus::Failed
        } else if !degraded.is_empty() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        };
        HealthMsg {
            robot: robot.to_string(),
            t_ns,
            uptime_s: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            status,
            problems: degraded,
            failed_stages: failed,
            sources: out,
            queries: self.queries.load(Relaxed),
            alerts: self.alerts.load(Relaxed),
            bus_errors: self.bus_errors.load(Relaxed),
            queries_refused: lock(&self.query_refusals)
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            query_store: QueryStoreHealth {
                ok: store_error.is_none(),
                error: store_error,
                damaged_at_start: store_damaged,
            },
            fused: FusedHealth {
                windows: self.fused.load(Relaxed),
                incomplete: self.fused_incomplete.load(Relaxed),
            },
            history: HistoryHealth {
                windows: h_windows,
                bytes: h_bytes,
                oldest_ns: h_oldest,
                write_errors: self.history_write_errors.load(Relaxed),
                read_errors: self.history_read_errors.load(Relaxed),
                corrupt: self.history_corrupt.load(Relaxed),
                dropped: self.history_dropped.load(Relaxed),
                error: history_error,
            },
            searches: self.searches.load(Relaxed),
        }
    }
}

/// Logs a recurring problem at most once per interval, with how many were suppressed.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }
    /// `Some(n)` when a record may be written now (`n` = records suppressed since the
    /// last one); `None` while suppressed.
    pub fn allow(&mut self) -> Option<u64> {
        match self.last {
            Some(t) if t.elapsed() < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

impl Telemetry {
    /// The Prometheus text exposition of every metric, from the same snapshot as
    /// health ([`metrics::render`]).
    pub fn prometheus(&self) -> String {
        let streams = lock(&self.streams).clone();
        let latency: metrics::Histograms = streams
            .iter()
            .map(|((id, m), st)| ((id.clone(), m.to_string()), lock(&st.latency).histogram.clone()))
            .collect();
        metrics::render(&self.health("", crate::clock::realtime_ns()), &latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_progress_not_a_state_string() {
        let t = Telemetry::new(Duration::from_millis(30));
        let s = t.source("mic", "file");
        s.emit(SourceEvent::Opened);
        let st = t.stream("mic", Modality::Audio);
        st.emit(StreamEvent::FrameRejected);
        assert_eq!(t.snapshot("r", 0)["status"], "ok");
        std::thread::sleep(Duration::from_millis(50));
        // Running, but nothing published for longer than the stall time.
        let h = t.snapshot("r", 0);
        assert_eq!(h["status"], "degraded", "{h}");
        assert_eq!(h["sources"]["mic"]["streams"]["audio"]["state"], "stalled");
        assert_eq!(h["sources"]["mic"]["streams"]["audio"]["frames_rejected"], 1);
        assert!(
            h["sources"]["mic"]["streams"]["audio"]["clock"].is_null(),
            "not described yet"
        );
        st.emit(StreamEvent::Published);
        assert_eq!(t.snapshot("r", 0)["status"], "ok");
        t.emit(DaemonEvent::StageFailed {
            stage: "encoder/audio".into(),
            reason: "panicked".into(),
        });
        let h = t.snapshot("r", 0);
        assert_eq!(h["status"], "failed");
        assert_eq!(h["failed_stages"][0]["stage"], "encoder/audio");
    }

    #[test]
    fn history_errors_degrade_the_status_until_a_write_succeeds() {
        let t = Telemetry::new(Duration::from_secs(60));
        let report = |t: &Telemetry| {
            t.emit(DaemonEvent::History {
                windows: 5,
                bytes: 100,
                oldest_ns: Some(0),
                corrupt: 2,
            })
        };
        assert_eq!(t.snapshot("r", 0)["status"], "ok");
        // A full disk: every write fails; the periodic report does not hide it.
        for _ in 0..3 {
            t.emit(DaemonEvent::HistoryWriteFailed("No space left on device".into()));
            report(&t);
        }
        let h = t.snapshot("r", 0);
        assert_eq!(h["status"], "degraded", "{h}");
        assert!(h["problems"][0].as_str().unwrap().contains("No space left"), "{h}");
        assert_eq!(h["history"]["write_errors"], 3);
        assert_eq!(h["history"]["corrupt"], 2);
        // Writes succeed again: clear.
        t.emit(DaemonEvent::HistoryWritten);
        assert_eq!(t.snapshot("r", 0)["status"], "ok");
        // A record that cannot be read back: degraded until a write succeeds.
        t.emit(DaemonEvent::HistoryReadFailed(
            "seg-1.sbh: failed to fill whole buffer".into(),
        ));
        t.emit(DaemonEvent::HistoryDropped);
        let h = t.snapshot("r", 0);
        assert_eq!(h["status"], "degraded");
        assert_eq!(
            (h["history"]["read_errors"].as_u64(), h["history"]["dropped"].as_u64()),
            (Some(1), Some(1))
        );
        let prom = t.prometheus();
        assert!(prom.contains("sensebind_history_dropped_total 1"), "{prom}");
        assert!(prom.contains("sensebind_history_read_errors_total 1"), "{prom}");
        t.emit(DaemonEvent::HistoryWritten);
        assert_eq!(t.snapshot("r", 0)["status"], "ok");
    }

    #[test]
    fn metrics_are_read_from_the_health_snapshot() {
        let t = Telemetry::new(Duration::from_secs(60)).with_wedge_after(Duration::from_secs(3600));
        let s = t.source("mic \"1\"", "alsa");
        s.emit(SourceEvent::Opened);
        for i in 0..3 {
            s.emit(SourceEvent::Frame { t_ns: i });
        }
        s.emit(SourceEvent::Failed);
        let st = t.stream("mic \"1\"", Modality::Audio);
        for _ in 0..5 {
            st.emit(StreamEvent::WindowClosed);
        }
        st.emit(StreamEvent::WindowDropped(WindowDrop::Stale));
        for ms in [3, 40, 40] {
            st.emit(StreamEvent::Embedded {
                latency: Duration::from_millis(ms),
                batch: 2,
            });
        }
        st.emit(StreamEvent::Published);
        st.emit(StreamEvent::Published);
        t.emit(DaemonEvent::QueryRefused("rate_limited"));
        t.emit(DaemonEvent::FusedPublished { complete: false });
        t.emit(DaemonEvent::FusedPublished { complete: true });
        t.emit(DaemonEvent::FusedPublished { complete: true });
        let h = t.health("r", 0);
        assert_eq!(h.sources["mic \"1\""].state, SourceState::Reconnecting);
        let prom = t.prometheus();
        let has = |line: &str| assert!(prom.lines().any(|l| l == line), "no `{line}` in\n{prom}");
        let l = r#"source="mic \"1\"",modality="audio""#;
        has(r#"sensebind_source_up{source="mic \"1\"",type="alsa"} 0"#);
        has(r#"sensebind_source_frames_total{source="mic \"1\"",type="alsa"} 3"#);
        has(r#"sensebind_source_reconnects_total{source="mic \"1\"",type="alsa"} 1"#);
        has(&format!("sensebind_stream_windows_total{{{l}}} 5"));
        has(&format!("sensebind_stream_windows_published_total{{{l}}} 2"));
        has(&format!(
            r#"sensebind_stream_windows_dropped_total{{{l},reason="stale"}} 1"#
        ));
        has(&format!(
            r#"sensebind_stream_windows_dropped_total{{{l},reason="coverage"}} 0"#
        ));
        has(&format!("sensebind_stream_windows_pending{{{l}}} 2"));
        has(&format!("sensebind_stream_wedged{{{l}}} 0"));
        has(&format!(
            r#"sensebind_stream_latency_seconds_bucket{{{l},le="0.005"}} 1"#
        ));
        has(&format!(
            r#"sensebind_stream_latency_seconds_bucket{{{l},le="0.05"}} 3"#
        ));
        has(&format!(
            r#"sensebind_stream_latency_seconds_bucket{{{l},le="+Inf"}} 3"#
        ));
        has(&format!("sensebind_stream_latency_seconds_count{{{l}}} 3"));
        has(r#"sensebind_query_refusals_total{reason="rate_limited"} 1"#);
        has(r#"sensebind_fused_windows_total{complete="true"} 2"#);
        has(r#"sensebind_fused_windows_total{complete="false"} 1"#);
        // Every row has its HELP and TYPE, in the table's order.
        let helps: Vec<&str> = prom
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next())
            .collect();
        assert_eq!(helps, metrics::METRICS.iter().map(|m| m.name).collect::<Vec<_>>());
        // A wedged stream: flagged in health and on /metrics alike.
        let t = Telemetry::new(Duration::from_secs(60)).with_wedge_after(Duration::ZERO);
        t.source("cam", "v4l2").emit(SourceEvent::Opened);
        t.stream("cam", Modality::Vision).emit(StreamEvent::WindowClosed);
        std::thread::sleep(Duration::from_millis(5));
        let h = t.health("r", 0);
        assert!(h.sources["cam"].streams["vision"].wedged, "{h:?}");
        assert!(t
            .prometheus()
            .contains(r#"sensebind_stream_wedged{source="cam",modality="vision"} 1"#));
    }

    #[test]
    fn limiter_suppresses_and_counts() {
        let mut l = LogLimiter::new(Duration::from_millis(40));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(l.allow(), Some(2));
    }
}
