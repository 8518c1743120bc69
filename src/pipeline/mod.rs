//! The daemon as one supervised graph, built from config:
//!
//! ```text
//! source thread ─edge─▶ windower thread ─edge─▶ encoder thread ─edge─▶ outputs thread ─▶ zenoh
//!  (one per source)   (one per stream)      (one per modality)                 │
//!       └─▶ frame tap                                    embedding tap ◀──────┘
//! health task · query service task
//! ```
//!
//! Every edge has a named `when_full` policy; every thread and task is supervised
//! ([`supervise`]); shutdown stops the sources, lets closed windows finish, and
//! publishes a final health, all within `daemon.shutdown_timeout_s`.
//! docs/architecture.md draws the same graph with its queues, clocks and taps.

pub mod check;
pub mod models;
pub mod recording;
pub mod search;
pub mod stages;
pub mod supervise;
pub mod systemd;

pub use models::Models;

use crate::bus::zenoh_bus::{self, ZenohSink};
use crate::bus::{BusError, Topics};
use crate::calibration::CalibrationError;
use crate::config::Config;
use crate::edge::{edge, WhenFull};
use crate::engine::gate::Gate;
use crate::engine::worker::{self, Discard, Embedded, WorkerConfig, WorkerHandle};
use crate::engine::{Encoder, EngineError};
use crate::modality::Modality;
use crate::outputs::{Outputs, Published};
use crate::pack::PackError;
use crate::queries::{QueryError, Registry};
use crate::sources::runner::{self, Route};
use crate::sources::{ImageLimits, SourceConfig, SourceContext, SourceError, StopFlag, TappedFrame};
use crate::taps::Tap;
use crate::telemetry::{names, DaemonEvent, Telemetry};
use crate::window::{WindowLimits, WindowParams, Windower};
use crate::zeroshot::LabelSet;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supervise::{Role, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A preprocessor's output does not fit the pack's encoder.
    #[error("{0}")]
    Contract(String),
    #[error("{0}")]
    Setup(String),
    /// A stage failed while running (after the final health was published).
    #[error("stage {stage} failed: {reason}")]
    StageFailed { stage: String, reason: String },
}

/// The graph's taps: recorders and viewers listen here.
#[derive(Clone, Default)]
pub struct Taps {
    /// Raw frames, after each source.
    pub frames: Tap<TappedFrame>,
    /// Embeddings with their window span, after the encoders.
    pub embeddings: Tap<Embedded>,
    /// What the outputs stage published (embeddings, labels, events, alerts).
    pub published: Tap<Published>,
    /// Fused windows, as published on `embedding/fused`.
    pub fused: Tap<crate::fusion::Fused>,
}

/// What a caller plugs into the graph besides its sources: systemd's notify socket
/// (`sensebind run` under `Type=notify`) and, for tests, a wrapper around each
/// encoder (to make one slow, wedged or failing).
#[derive(Clone, Default)]
pub struct Hooks {
    pub notifier: Option<systemd::Notifier>,
    #[allow(clippy::type_complexity)]
    pub wrap_encoder: Option<Arc<dyn Fn(Arc<dyn Encoder>) -> Arc<dyn Encoder> + Send + Sync>>,
}

impl Hooks {
    /// systemd's notify socket, if the daemon was started with one.
    pub fn from_env() -> Hooks {
        Hooks {
            notifier: systemd::Notifier::from_env(),
            wrap_encoder: None,
        }
    }
}

/// The sources that are configured and not `off`.
pub fn enabled_sources(cfg: &Config) -> Result<Vec<SourceConfig>, PipelineError> {
    let all = crate::sources::parse_all(&cfg.sources).map_err(|e| PipelineError::Setup(e.to_string()))?;
    let on: Vec<SourceConfig> = all.into_iter().filter(|s| s.driver.is_some()).collect();
    if on.is_empty() {
        return Err(PipelineError::Setup(
            "no sources configured: add a `[sources.<id>]` table with a `type` (see configs/default.toml, \"Sources\")"
                .into(),
        ));
    }
    Ok(on)
}

pub fn window_limits(cfg: &Config) -> WindowLimits {
    WindowLimits {
        image: {
            let mut l = ImageLimits::new(cfg.limits.max_image_side, cfg.limits.max_aspect_ratio);
            l.max_decoded_bytes = l.max_decoded_bytes.min(cfg.limits.max_window_bytes);
            l
        },
        max_frames: cfg.limits.max_window_frames,
        max_bytes: cfg.limits.max_window_bytes,
        max_time_jump_ns: crate::config::secs_ns(cfg.limits.max_time_jump_s),
    }
}

/// A source ready to run: its settings and its (unopened) driver.
pub struct BuiltSource {
    pub config: SourceConfig,
    pub source: Box<dyn crate::sources::Source>,
}

/// Build every enabled source of `cfg`; `stop` ends their waits at shutdown.
pub fn build_sources(cfg: &Config, stop: &StopFlag) -> Result<Vec<BuiltSource>, PipelineError> {
    let params = WindowParams::from_config(&cfg.window);
    let epoch_ns = params.align_down(crate::clock::realtime_ns());
    let mut out = Vec::new();
    for config in enabled_sources(cfg)? {
        let ctx = SourceContext {
            id: config.id.clone(),
            epoch_ns,
            image_limits: window_limits(cfg).image,
            stop: stop.clone(),
        };
        let source = config
            .driver
            .as_ref()
            .expect("enabled sources have a driver")
            .build(&ctx)?;
        out.push(BuiltSource { config, source });
    }
    Ok(out)
}

/// The modalities the sources produce, each once, in order.
pub fn modalities_of(sources: &[BuiltSource]) -> Vec<Modality> {
    let mut m: Vec<Modality> = sources
        .iter()
        .flat_map(|b| b.source.info().streams.into_iter().map(|st| st.modality))
        .collect();
    m.sort();
    m.dedup();
    m
}

/// Run the daemon until `shutdown` resolves (or a stage fails).
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), PipelineError> {
    run_with_taps(cfg, Taps::default(), shutdown).await
}

/// As [`run`], with taps the caller listens on.
pub async fn run_with_taps(cfg: Config, taps: Taps, shutdown: impl Future<Output = ()>) -> Result<(), PipelineError> {
    let stop = StopFlag::default();
    let sources = build_sources(&cfg, &stop)?;
    run_graph(cfg, sources, stop, taps, shutdown).await
}

/// Run the graph on sources built by the caller (from config, or simulated sources in
/// tests: any [`Source`](crate::sources::Source) plugs in here). `stop` must be the
/// flag the sources were built with. systemd is notified when it started the process.
pub async fn run_graph(
    cfg: Config,
    drivers: Vec<BuiltSource>,
    stop: StopFlag,
    taps: Taps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    run_graph_with(cfg, drivers, stop, taps, Hooks::from_env(), shutdown).await
}

/// As [`run_graph`], with explicit [`Hooks`].
pub async fn run_graph_with(
    cfg: Config,
    drivers: Vec<BuiltSource>,
    stop: StopFlag,
    taps: Taps,
    hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    // ---- build: everything that can fail does so before anything starts
    let robot = cfg.robot_id();
    let params = WindowParams::from_config(&cfg.window);
    for b in &drivers {
        let mut seen = Vec::new();
        for st in b.source.info().streams {
            if seen.contains(&st.modality) {
                return Err(PipelineError::Setup(format!(
                    "source `{}` declares two {} streams (at most one per modality)",
                    b.config.id, st.modality
                )));
            }
            seen.push(st.modality);
        }
    }
    let modalities = modalities_of(&drivers);
    let state_dir = cfg.state_dir();
    // The state directory holds registered queries and engine caches; without it the
    // daemon still runs (queries are kept in memory, health says so).
    if let Err(e) = std::fs::create_dir_all(&state_dir) {
        tracing::error!(event = names::QUERY_STORE_FAILED, path = %state_dir.display(), error = %e, "cannot create the state directory (`robot.state_dir`); registered queries will be kept in memory only");
    }
    if let Some(n) = &hooks.notifier {
        n.send(&["STATUS=loading the model pack"]);
    }
    let (cfg2, mods2) = (cfg.clone(), modalities.clone());
    let mut models = tokio::task::spawn_blocking(move || Models::load(&cfg2, &mods2))
        .await
        .map_err(|e| PipelineError::Setup(format!("model loading panicked: {e}")))??;
    if let Some(wrap) = &hooks.wrap_encoder {
        for e in models.encoders.values_mut() {
            *e = wrap(e.clone());
        }
    }
    let models = Arc::new(models);
    tracing::info!(event = names::PACK_LOADED, pack = %models.pack.location, name = %models.pack.name(), "model pack loaded");
    let (labels, fused_labels) = embed_label_sets(&cfg, &models, &modalities).await?;
    let (history, history_problem) = open_history(&cfg, &models).await;
    // Encoder calls share `engine.concurrency` slots, granted by priority
    // (engine::gate): the stream workers and, at the lowest priority, query examples.
    let gate = Gate::new(cfg.engine.concurrency);
    let resolve = term_resolver(&cfg, &models, history.clone(), gate.clone());
    let registry = Arc::new(Mutex::new(restore_queries(&cfg, &models, &resolve).await?));

    let topics = Topics::new(&cfg.bus.prefix, &robot);
    let session = zenoh_bus::open(&cfg.bus).await?;
    let alive = session
        .liveliness()
        .declare_token(topics.alive())
        .await
        .map_err(|e| BusError::Zenoh(format!("liveliness token {}: {e}", topics.alive())))?;
    tracing::info!(event = names::BUS_OPEN, base = %topics.base(), listen = ?cfg.bus.listen, connect = ?cfg.bus.connect, "zenoh session open");
    zenoh_bus::warn_if_isolated(&cfg.bus, &session).await;
    let sink = Arc::new(ZenohSink::new(session.clone(), cfg.bus.when_full, &topics));
    let telemetry = Arc::new(
        Telemetry::new(crate::config::secs(cfg.health.stall_s))
            .with_wedge_after(crate::config::secs(cfg.daemon.watchdog_stall_s)),
    );
    if let Ok(r) = registry.lock() {
        telemetry.emit(DaemonEvent::Queries(r.len() as u64));
        if let Some(p) = r.load_problem() {
            telemetry.emit(DaemonEvent::QueryStoreDamaged(p.to_string()));
        }
    }
    if let Some(p) = history_problem {
        telemetry.emit(DaemonEvent::HistoryWriteFailed(p));
    }
    if let Some(h) = &history {
        search::report(&h.read().unwrap_or_else(|p| p.into_inner()), &telemetry);
    }
    let mut sup = Supervisor::new(telemetry.clone());
    let rt = tokio::runtime::Handle::current();
    let discard = Discard::default();

    // ---- Prometheus endpoint (optional), from the same counters as health
    if !cfg.prometheus.listen.is_empty() {
        let listener = crate::prometheus::bind(&cfg.prometheus.listen)
            .await
            .map_err(PipelineError::Setup)?;
        sup.task(
            "prometheus",
            Role::Forever,
            crate::prometheus::serve(listener, telemetry.clone()),
        );
    }

    // ---- live view (optional): listens on the taps, never slows the graph
    let liveview = if cfg.foxglove.enabled {
        let inputs = crate::liveview::LiveInputs {
            frames: taps.frames.listen(),
            published: taps.published.listen(),
            embeddings: taps.embeddings.listen(),
        };
        Some(
            crate::liveview::start(&cfg.foxglove, inputs, registry.clone())
                .await
                .map_err(|e| PipelineError::Setup(e.to_string()))?,
        )
    } else {
        None
    };

    // ---- outputs: encoders → outputs thread → bus
    let (out_tx, out_rx) = edge::<Embedded>("outputs", cfg.outputs.queue, cfg.outputs.when_full);
    let (done_tx, mut outputs_done) = tokio::sync::watch::channel(false);
    let outputs = Outputs {
        topics: topics.clone(),
        robot: robot.clone(),
        model: models.pack.name().to_string(),
        top_k: cfg.labels.top_k,
        scales: models.encoders.iter().map(|(m, e)| (*m, e.logit_scale())).collect(),
        labels,
        event_params: (cfg.events.start_prob, cfg.events.end_prob, cfg.events.min_windows),
        events: BTreeMap::new(),
        fused_labels,
        fused_events: None,
    };
    let fuser = cfg.fusion.enabled.then(|| {
        let f = &cfg.fusion;
        crate::fusion::Fuser::new(
            modalities.iter().map(|m| (*m, f.weight(*m))).collect(),
            modalities
                .iter()
                .map(|m| {
                    let rate = cfg.engine.budget(*m).max_rate_hz;
                    (*m, worker::budget_stride(cfg.window.hop_s, rate))
                })
                .collect(),
            (f.deadline_s > 0.0).then(|| crate::config::secs(f.deadline_s)),
            crate::config::secs(f.active_s),
        )
        .expect(
            drivers.iter().flat_map(|b| {
                b.source
                    .info()
                    .streams
                    .into_iter()
                    .map(|st| (b.config.id.clone(), st.modality))
            }),
            Instant::now(),
        )
    });
    // ---- history: outputs thread → history thread → disk
    let history_tx = match &history {
        Some(h) => {
            let (tx, rx) = edge::<crate::history::Record>("history", 4096, WhenFull::DropOldest);
            let (h, tel) = (h.clone(), telemetry.clone());
            let sync = crate::config::secs(cfg.history.sync_s);
            sup.thread("history", Role::Finite, move || search::history_stage(rx, h, tel, sync))
                .map_err(|e| PipelineError::Setup(format!("cannot start the history thread: {e}")))?;
            Some(tx)
        }
        None => None,
    };
    {
        let (reg, sink, tel, taps, rt) = (
            registry.clone(),
            sink.clone(),
            telemetry.clone(),
            taps.clone(),
            rt.clone(),
        );
        sup.thread("outputs", Role::Finite, move || {
            stages::outputs_stage(out_rx, outputs, fuser, history_tx, reg, sink, tel, taps, rt);
            let _ = done_tx.send(true);
        })
        .map_err(|e| PipelineError::Setup(format!("cannot start the outputs thread: {e}")))?;
    }

    // ---- encoders: one worker per modality
    // They share `engine.concurrency` slots, granted by priority (`gate`, above).
    // `block` is for replays that must lose nothing: no window is ever stale there.
    let max_wait = (cfg.engine.max_wait_s > 0.0 && cfg.engine.when_full != WhenFull::Block)
        .then(|| crate::config::secs(cfg.engine.max_wait_s));
    let mut workers: BTreeMap<Modality, WorkerHandle> = BTreeMap::new();
    for m in &modalities {
        let budget = cfg.engine.budget(*m);
        let wcfg = WorkerConfig {
            max_batch: cfg.engine.max_batch,
            queue_depth: cfg.engine.queue_depth,
            when_full: cfg.engine.when_full,
            priority: budget.priority,
            max_wait,
            stride: worker::budget_stride(cfg.window.hop_s, budget.max_rate_hz),
        };
        let (h, run) = worker::worker(
            models.preprocessors[m].clone(),
            models.encoders[m].clone(),
            wcfg,
            gate.clone(),
            out_tx.clone(),
            discard.clone(),
        );
        sup.thread(&format!("encoder/{m}"), Role::Finite, run)
            .map_err(|e| PipelineError::Setup(format!("cannot start the {m} encoder thread: {e}")))?;
        workers.insert(*m, h);
    }
    drop(out_tx);

    // ---- sources and their streams' windowers
    let idle = crate::config::secs(cfg.window.idle_flush_s);
    let ids: Vec<String> = drivers.iter().map(|b| b.config.id.clone()).collect();
    for BuiltSource {
        config: s,
        source: driver,
    } in drivers
    {
        let info = driver.info();
        let clock = driver.clock();
        let sstats = telemetry.source(&s.id, &s.kind);
        sstats.describe(info.description.clone(), clock.kind());
        let mut routes = Vec::new();
        for st in &info.streams {
            let stats = telemetry.stream(&s.id, st.modality);
            stats.set_provider(models.encoders[&st.modality].provider());
            stats.set_provider_nodes(models.encoders[&st.modality].nodes_per_provider());
            let (tx, rx) = edge(format!("source/{}/{}", s.id, st.modality), s.queue, s.when_full);
            let w = Windower::new(&s.id, st.modality, params, st.nominal_rate_hz).with_limits(window_limits(&cfg));
            let (worker, clock, stats2, stop) = (
                workers[&st.modality].clone(),
                clock.clone(),
                stats.clone(),
                stop.clone(),
            );
            let imu = (st.modality == Modality::Imu).then(|| models.calibration.imu_correction());
            sup.thread(&format!("window/{}/{}", s.id, st.modality), Role::Finite, move || {
                stages::window_stage(rx, w, clock, worker, stats2, idle, stop, imu)
            })
            .map_err(|e| PipelineError::Setup(format!("cannot start a windower thread: {e}")))?;
            routes.push(Route {
                modality: st.modality,
                tx,
                stats,
            });
        }
        let run = runner::runner(
            s.id.as_str().into(),
            driver,
            routes,
            sstats,
            stop.clone(),
            crate::config::secs(s.restart_backoff_s),
            taps.frames.clone(),
            models.device_geometry.clone(),
        );
        sup.thread(&format!("source/{}", s.id), Role::Finite, run)
            .map_err(|e| PipelineError::Setup(format!("cannot start source `{}`: {e}", s.id)))?;
    }
    // Only windowers hold encoder handles now: when they end, the encoders drain.
    drop(workers);

    // ---- tasks: health and the query service
    sup.task(
        "health",
        Role::Forever,
        stages::health_stage(
            sink.clone(),
            topics.clone(),
            telemetry.clone(),
            robot.clone(),
            crate::config::secs(cfg.health.interval_s),
        ),
    );
    let embed: stages::EmbedText = {
        let models = models.clone();
        Arc::new(move |text: String| {
            models
                .embed_text(&[text])
                .map_err(|e| e.to_string())
                .and_then(|mut v| v.pop().ok_or_else(|| "text encoder returned nothing".to_string()))
        })
    };
    sup.task(
        "queries",
        Role::Forever,
        stages::query_service(
            session.clone(),
            topics.clone(),
            registry.clone(),
            resolve,
            cfg.queries.clone(),
            telemetry.clone(),
        ),
    );
    if let Some(h) = &history {
        sup.task(
            "search",
            Role::Forever,
            search::search_service(
                session.clone(),
                topics.clone(),
                robot.clone(),
                h.clone(),
                embed,
                crate::history::params::SearchLimits {
                    max_k: cfg.history.max_k,
                    max_text_chars: cfg.queries.max_text_chars,
                },
                (cfg.history.searches_per_s, cfg.history.search_burst),
                telemetry.clone(),
            ),
        );
    }
    if let Some(n) = hooks.notifier.clone() {
        n.ready(&format!(
            "running: {} sources, {} streams",
            ids.len(),
            telemetry.streams().len()
        ));
        sup.task(
            "systemd",
            Role::Forever,
            systemd::systemd_stage(n, telemetry.clone(), crate::config::secs(cfg.health.interval_s)),
        );
    }
    tracing::info!(event = names::DAEMON_STARTED, robot = %robot, sources = ?ids, watchdog_s = ?hooks.notifier.as_ref().and_then(|n| n.watchdog).map(|w| w.as_secs_f64()), "sensebind running");

    // ---- run until a signal or a failure
    let exit_when_done = cfg.daemon.exit_when_sources_end;
    let failure = tokio::select! {
        _ = shutdown => None,
        f = sup.failure() => f,
        // The outputs thread ends last: after every source, windower and encoder.
        _ = async { let _ = outputs_done.wait_for(|d| *d).await; }, if exit_when_done => {
            tracing::info!(event = names::SOURCES_ENDED, "every source has ended and its windows are published");
            None
        }
    };

    // ---- shutdown, within the deadline
    let deadline = Instant::now() + crate::config::secs(cfg.daemon.shutdown_timeout_s);
    tracing::info!(event = names::DAEMON_STOPPING, "shutting down");
    if let Some(n) = &hooks.notifier {
        n.stopping();
    }
    sup.stopping();
    stop.stop();
    // Windowers stop at their next poll; then encoders finish what is queued.
    let stuck = sup.join_threads("window/", deadline).await;
    let mut late = !stuck.is_empty();
    let soft = deadline.max(Instant::now());
    if !sup.join_threads("encoder/", soft).await.is_empty() {
        // Past the deadline: whatever is still queued is counted as dropped; the
        // batch in flight finishes (an encoder is never cut off inside ONNX Runtime).
        discard.set();
        late = true;
        sup.join_threads("encoder/", Instant::now() + Duration::from_secs(3600))
            .await;
    }
    sup.join_threads("outputs", Instant::now() + Duration::from_secs(3600))
        .await;
    sup.join_threads("history", Instant::now() + Duration::from_secs(60))
        .await;
    for name in sup
        .join_threads("source/", deadline.max(Instant::now() + Duration::from_millis(100)))
        .await
    {
        tracing::warn!(event = names::SOURCE_STUCK, stage = %name, "source driver is blocked in a read; leaving it behind");
    }
    sup.abort_tasks().await;
    if let Some(lv) = liveview {
        lv.stop().await;
    }
    stages::publish_health(sink.as_ref(), &topics, &telemetry, &robot).await;
    drop(alive);
    let _ = session.close().await;
    if late {
        tracing::warn!(
            event = names::SHUTDOWN_TIMEOUT,
            timeout_s = cfg.daemon.shutdown_timeout_s,
            "shutdown took longer than daemon.shutdown_timeout_s"
        );
    }
    tracing::info!(event = names::DAEMON_STOPPED, "stopped");
    match failure {
        Some(f) => Err(PipelineError::StageFailed {
            stage: f.stage,
            reason: f.reason,
        }),
        None => Ok(()),
    }
}

/// Zero-shot label sets of the running modalities, embedded once, and the fused
/// stream's: every label of the fused modalities' sets, with their prompts merged.
async fn embed_label_sets(
    cfg: &Config,
    models: &Arc<Models>,
    modalities: &[Modality],
) -> Result<(BTreeMap<Modality, LabelSet>, Option<LabelSet>), PipelineError> {
    let (models, sets, mods) = (models.clone(), cfg.labels.sets.clone(), modalities.to_vec());
    let fusion = cfg.fusion.clone();
    let built = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
        let text = models.encoders[&Modality::Text].clone();
        let mut v = Vec::new();
        let mut fused: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (m, set) in sets.iter().filter(|(m, s)| mods.contains(m) && !s.is_empty()) {
            v.push(LabelSet::build(*m, set, text.as_ref(), &models.text, models.scale(*m))?);
            if fusion.enabled && fusion.weight(*m) > 0.0 {
                for (label, prompts) in set {
                    let all = fused.entry(label.clone()).or_default();
                    for p in prompts {
                        if !all.contains(p) {
                            all.push(p.clone());
                        }
                    }
                }
            }
        }
        // The fused window's own scale (its members' weighted mean) is applied per
        // window: built with the modality scale 1 (the set's `modality` is unused).
        let fused = if fused.is_empty() {
            None
        } else {
            Some(LabelSet::build(
                Modality::Text,
                &fused,
                text.as_ref(),
                &models.text,
                1.0,
            )?)
        };
        Ok((v, fused))
    })
    .await
    .map_err(|e| PipelineError::Setup(format!("label embedding panicked: {e}")))??;
    let (sets, fused) = built;
    Ok((sets.into_iter().map(|s| (s.modality, s)).collect(), fused))
}

/// The history in `<state_dir>/history`, reloaded; `None` when it is off or cannot be
/// opened (the daemon runs without it, and the second value says why, for health).
async fn open_history(cfg: &Config, models: &Arc<Models>) -> (Option<search::SharedHistory>, Option<String>) {
    if !cfg.history.enabled {
        return (None, None);
    }
    let dir = cfg.state_dir().join("history");
    let (Ok(retention_ns), Ok(max_bytes)) = (cfg.history.retention_ns(), cfg.history.max_bytes()) else {
        return (None, Some("bad [history] settings".into()));
    };
    let opts = crate::history::HistoryOptions {
        retention_ns,
        max_bytes,
        segment_ns: (cfg.history.segment_s * 1e9) as i64,
        sync: crate::config::secs(cfg.history.sync_s),
    };
    let (model, dim) = (models.pack.name().to_string(), models.encoders[&Modality::Text].dim());
    let t0 = Instant::now();
    let d2 = dir.clone();
    let opened = tokio::task::spawn_blocking(move || crate::history::History::open(&d2, &model, dim, opts)).await;
    match opened {
        Ok(Ok(h)) => {
            for note in &h.load_notes {
                tracing::warn!(event = names::HISTORY_DAMAGED, note = %note, "history");
            }
            tracing::info!(event = names::HISTORY_LOADED, path = %dir.display(), windows = h.len(), bytes = h.bytes(), load_s = t0.elapsed().as_secs_f64(), "history loaded");
            (Some(Arc::new(std::sync::RwLock::new(h))), None)
        }
        Ok(Err(e)) => {
            tracing::error!(event = names::HISTORY_FAILED, error = %e, "history unavailable: embeddings are not kept and search is off");
            (None, Some(format!("{e}; search is off")))
        }
        Err(e) => {
            tracing::error!(event = names::HISTORY_FAILED, error = %e, "history loading panicked");
            (None, Some("history loading panicked; search is off".into()))
        }
    }
}

/// How the query service (and the restore at start) turns a query's terms into
/// vectors: texts through the text encoder, media through the daemon's own
/// preprocessing and encoders, windows from the history, raw embeddings checked.
fn term_resolver(
    cfg: &Config,
    models: &Arc<Models>,
    history: Option<search::SharedHistory>,
    gate: Gate,
) -> stages::ResolveTerm {
    use crate::queries::{Refusal, TermSource};
    let (models, cfg) = (models.clone(), cfg.clone());
    Arc::new(move |t: &TermSource| {
        let dim = models.encoders[&Modality::Text].dim();
        match t {
            TermSource::Text(text) => models
                .embed_text(std::slice::from_ref(text))
                .map_err(|e| (Refusal::Encoder, e.to_string()))
                .and_then(|mut v| {
                    v.pop()
                        .ok_or((Refusal::Encoder, "text encoder returned nothing".into()))
                }),
            TermSource::Media { mime, bytes } => models
                .embed_media(&cfg, *mime, bytes, Some(&gate))
                .map_err(|e| (Refusal::Invalid, format!("{} example: {e}", mime.as_str()))),
            TermSource::Window(w) => {
                let Some(h) = &history else {
                    return Err((
                        Refusal::Invalid,
                        format!("window example {w}: the history is off (`history.enabled`)"),
                    ));
                };
                let h = h.read().unwrap_or_else(|p| p.into_inner());
                match h.get(&w.source, w.modality, w.seq) {
                    Ok(Some(r)) => Ok(r.vector),
                    Ok(None) => Err((
                        Refusal::Invalid,
                        format!("window example {w}: no such window in the history"),
                    )),
                    Err(e) => Err((Refusal::Invalid, format!("window example {w}: {e}"))),
                }
            }
            TermSource::Embedding(v) if v.len() == dim => Ok(v.clone()),
            TermSource::Embedding(v) => Err((
                Refusal::Invalid,
                format!(
                    "an embedding term has {} dims; the pack `{}` has {dim}",
                    v.len(),
                    models.pack.name()
                ),
            )),
        }
    })
}

/// Registered queries, reloaded from the state directory without rewriting it. Their
/// stored vectors are used when they come from the same model; otherwise text
/// queries are embedded again and the others are dropped (health says so: their
/// examples cannot be embedded again).
async fn restore_queries(
    cfg: &Config,
    models: &Arc<Models>,
    resolve: &stages::ResolveTerm,
) -> Result<Registry, PipelineError> {
    use crate::queries::{QueryKind, QueryPlan};
    let model = models.pack.name().to_string();
    let dim = models.encoders[&Modality::Text].dim();
    let mut registry = Registry::new(&cfg.state_dir(), cfg.queries.max_queries)
        .with_model(&model)
        .with_max_bytes(cfg.queries.max_store_bytes);
    let (stored_model, stored) = registry.load()?;
    // Presets from config come back at every start (and win over a stored query of
    // the same id); a bad one stops the start with its key path.
    let mut plans = Vec::new();
    for (id, p) in &cfg.queries.presets {
        let body = serde_json::to_vec(p).map_err(|e| PipelineError::Setup(e.to_string()))?;
        let plan = QueryPlan::from_request(id, &body, &cfg.queries)
            .map_err(|e| PipelineError::Setup(format!("queries.presets.{id}: {e}")))?;
        plans.push(plan);
    }
    let mut dropped = Vec::new();
    let mut ready = Vec::new();
    for q in stored {
        if plans.iter().any(|p| p.spec.id == q.spec.id) {
            continue;
        }
        let fits =
            stored_model == model && q.vectors.len() == q.spec.vectors() && q.vectors.iter().all(|v| v.len() == dim);
        if fits {
            ready.push((q.spec, q.vectors));
        } else if q.spec.kind == QueryKind::Text {
            let body = serde_json::json!({"text": q.spec.text});
            plans.push(QueryPlan {
                probes: QueryPlan::from_request(&q.spec.id, body.to_string().as_bytes(), &cfg.queries)
                    .map(|p| p.probes)
                    .unwrap_or_default(),
                spec: q.spec,
            });
        } else {
            dropped.push(q.spec.id);
        }
    }
    let total = plans.len() + ready.len();
    if total == 0 && dropped.is_empty() {
        return Ok(registry);
    }
    let r2 = resolve.clone();
    let embedded = tokio::task::spawn_blocking(move || {
        plans
            .into_iter()
            .map(|p| (stages::resolve_plan(&p, &r2), p.spec))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| PipelineError::Setup(e.to_string()))?;
    for (vectors, spec) in embedded {
        match vectors {
            Ok(v) => ready.push((spec, v)),
            Err((_, e)) if cfg.queries.presets.contains_key(&spec.id) => {
                return Err(PipelineError::Setup(format!("queries.presets.{}: {e}", spec.id)))
            }
            Err(_) => dropped.push(spec.id),
        }
    }
    for (spec, vectors) in ready {
        registry.restore(spec, vectors);
    }
    if !dropped.is_empty() {
        let msg = format!(
            "queries {} were registered with model `{stored_model}`, not `{model}`, and their examples cannot be embedded again: register them again",
            dropped.join(", ")
        );
        tracing::error!(event = names::QUERY_STORE_CORRUPT, dropped = ?dropped, "{msg}");
        registry.add_load_problem(msg);
    }
    tracing::info!(event = names::QUERIES_LOADED, count = registry.len(), path = %registry.path().display(), "registered queries reloaded");
    Ok(registry)
}
