//! The daemon's graph in three phases, as vector builds its topology:
//!
//! 1. [`GraphBuilder::build`] does everything that can fail before anything starts
//!    (the model pack, label sets, the history, the query store, the bus session, the
//!    metrics and live-view ports) and reports every failure it finds, not only the
//!    first;
//! 2. [`BuiltGraph::start`] wires the stages (sources → windowers → encoders →
//!    outputs → bus and history) and starts each under the supervisor;
//! 3. [`RunningGraph::run_until`] waits for a shutdown signal, a failed stage, or (in
//!    batch mode) the sources' end; [`RunningGraph::shutdown`] stops it within a
//!    deadline, publishing a final health.

use super::search::{self, SearchService, SharedHistory};
use super::stages::{self, EmbedText, OutputsStage, ResolveTerm, WindowStage};
use super::supervise::{Failure, Role, Supervisor};
use super::{
    embed_label_sets, modalities_of, open_history, restore_queries, systemd, term_resolver, window_limits, BuiltSource,
    Hooks, PipelineError, Taps,
};
use crate::bus::ros2::{BusSink, Mapper, Ros2Sink};
use crate::bus::zenoh_bus::{self, ZenohSink};
use crate::bus::{BusError, Topics};
use crate::config::{secs, Config};
use crate::edge::{edge, Sender, WhenFull};
use crate::engine::gate::Gate;
use crate::engine::worker::{self, Discard, Embedded, WorkerConfig, WorkerHandle};
use crate::modality::Modality;
use crate::outputs::Outputs;
use crate::queries::Registry;
use crate::ros2::node::Participant;
use crate::sources::runner::{self, Route, RunnerContext};
use crate::sources::StopFlag;
use crate::telemetry::{names, DaemonEvent, Telemetry};
use crate::window::{WindowParams, Windower};
use crate::zeroshot::LabelSet;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Phase 1: the graph's inputs.
pub struct GraphBuilder {
    cfg: Config,
    drivers: Vec<BuiltSource>,
    stop: StopFlag,
    taps: Taps,
    hooks: Hooks,
}

impl GraphBuilder {
    /// A graph of `drivers` (built from config, or simulated sources in tests); `stop`
    /// must be the flag the sources were built with.
    pub fn new(cfg: Config, drivers: Vec<BuiltSource>, stop: StopFlag, taps: Taps) -> Self {
        GraphBuilder {
            cfg,
            drivers,
            stop,
            taps,
            hooks: Hooks::from_env(),
        }
    }

    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Load and open everything the graph needs. Each independent step is tried even
    /// when another failed, and every failure is reported ([`PipelineError::Build`]).
    pub async fn build(self) -> Result<BuiltGraph, PipelineError> {
        let GraphBuilder {
            cfg,
            drivers,
            stop,
            taps,
            hooks,
        } = self;
        let mut errors: Vec<PipelineError> = Vec::new();
        let state_dir = cfg.state_dir();
        // The state directory holds registered queries and engine caches; without it
        // the daemon still runs (queries are kept in memory, health says so).
        if let Err(e) = std::fs::create_dir_all(&state_dir) {
            tracing::error!(event = names::QUERY_STORE_FAILED, path = %state_dir.display(), error = %e, "cannot create the state directory (`robot.state_dir`); registered queries will be kept in memory only");
        }
        // Ports and the bus do not depend on the pack: tried whatever it does.
        let prometheus = if cfg.prometheus.listen.is_empty() {
            None
        } else {
            match crate::prometheus::bind(&cfg.prometheus.listen).await {
                Ok(l) => Some(l),
                Err(e) => {
                    errors.push(PipelineError::Setup(e));
                    None
                }
            }
        };
        let session = match zenoh_bus::open(&cfg.bus).await {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(e.into());
                None
            }
        };
        // The ROS 2 node, when a source or the outputs speak ROS 2; then the sources
        // that must learn their streams from the robot do so.
        let mut drivers = drivers;
        let mut ros2_node = None;
        if let Some(session) = &session {
            if cfg.ros2.publish || drivers.iter().any(|b| b.config.kind == "ros2") {
                let r = &cfg.ros2;
                match Participant::join(session.clone(), r.domain(), &r.namespace, &r.node, r.distro).await {
                    Ok(p) => {
                        tracing::info!(event = names::ROS2_NODE, domain = p.domain(), namespace = %r.namespace, node = %r.node, distro = ?r.distro, "joined ROS 2 as a node");
                        drivers.iter().for_each(|b| b.ros2.fill(p.clone()));
                        ros2_node = Some(p);
                    }
                    Err(e) => errors.push(PipelineError::Setup(e)),
                }
            }
            match tokio::task::spawn_blocking(move || prepare_sources(drivers)).await {
                Ok((d, e)) => {
                    drivers = d;
                    errors.extend(e);
                }
                Err(e) => return Err(PipelineError::Setup(format!("preparing the sources panicked: {e}"))),
            }
        }
        for b in &drivers {
            let mut seen = Vec::new();
            for st in b.source.info().streams {
                if seen.contains(&st.modality) {
                    errors.push(PipelineError::Setup(format!(
                        "source `{}` declares two {} streams (at most one per modality)",
                        b.config.id, st.modality
                    )));
                }
                seen.push(st.modality);
            }
        }
        let modalities = modalities_of(&drivers);
        if let Some(n) = &hooks.notifier {
            n.send(&["STATUS=loading the model pack"]);
        }
        let (cfg2, mods2) = (cfg.clone(), modalities.clone());
        let models = match tokio::task::spawn_blocking(move || super::Models::load(&cfg2, &mods2)).await {
            Ok(Ok(mut models)) => {
                if let Some(wrap) = &hooks.wrap_encoder {
                    for e in models.encoders.values_mut() {
                        *e = wrap(e.clone());
                    }
                }
                Some(Arc::new(models))
            }
            Ok(Err(e)) => {
                errors.push(e);
                None
            }
            Err(e) => {
                errors.push(PipelineError::Setup(format!("model loading panicked: {e}")));
                None
            }
        };
        let (Some(models), Some(session), true) = (models, session, errors.is_empty()) else {
            return Err(PipelineError::build(errors));
        };
        tracing::info!(event = names::PACK_LOADED, pack = %models.pack.location, name = %models.pack.name(), "model pack loaded");
        let (labels, fused_labels) = embed_label_sets(&cfg, &models, &modalities).await?;
        let (history, history_problem) = open_history(&cfg, &models).await;
        // Encoder calls share `engine.concurrency` slots, granted by priority
        // (engine::gate): the stream workers and, at the lowest priority, query examples.
        let gate = Gate::new(cfg.engine.concurrency);
        let resolve = term_resolver(&cfg, &models, history.clone(), gate.clone());
        let registry = Arc::new(Mutex::new(restore_queries(&cfg, &models, &resolve).await?));

        let robot = cfg.robot_id();
        let topics = Topics::new(&cfg.bus.prefix, &robot);
        let alive = session
            .liveliness()
            .declare_token(topics.alive())
            .await
            .map_err(|e| BusError::Zenoh(format!("liveliness token {}: {e}", topics.alive())))?;
        tracing::info!(event = names::BUS_OPEN, base = %topics.base(), listen = ?cfg.bus.listen, connect = ?cfg.bus.connect, "zenoh session open");
        zenoh_bus::warn_if_isolated(&cfg.bus, &session).await;
        let zenoh = ZenohSink::new(session.clone(), cfg.bus.when_full, &topics);
        let ros2 = match ros2_node {
            Some(node) if cfg.ros2.publish => Some(Ros2Sink::new(
                Mapper::new(&topics, &robot, &cfg.ros2.namespace),
                node,
                zenoh.congestion,
            )),
            _ => None,
        };
        let sink = Arc::new(BusSink { zenoh, ros2 });
        let telemetry =
            Arc::new(Telemetry::new(secs(cfg.health.stall_s)).with_wedge_after(secs(cfg.daemon.watchdog_stall_s)));
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
        // The live view listens on the taps, never slows the graph.
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
        Ok(BuiltGraph {
            cfg,
            drivers,
            stop,
            taps,
            hooks,
            modalities,
            robot,
            topics,
            models,
            labels,
            fused_labels,
            history,
            gate,
            resolve,
            registry,
            session,
            alive,
            sink,
            telemetry,
            prometheus,
            liveview,
        })
    }
}

/// Run each source's [`prepare`](crate::sources::Source::prepare), all at once (a
/// `ros2` source may wait seconds for its topic): the sources, and one error per
/// source that failed.
fn prepare_sources(drivers: Vec<BuiltSource>) -> (Vec<BuiltSource>, Vec<PipelineError>) {
    let results: Vec<(BuiltSource, Option<PipelineError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = drivers
            .into_iter()
            .map(|mut b| {
                scope.spawn(move || {
                    let r = b.source.prepare();
                    let e = r
                        .err()
                        .map(|e| PipelineError::Setup(format!("source `{}`: {e}", b.config.id)));
                    (b, e)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut errors = Vec::new();
    let drivers = results
        .into_iter()
        .map(|(b, e)| {
            errors.extend(e);
            b
        })
        .collect();
    (drivers, errors)
}

/// Phase 2: everything loaded and opened; nothing running yet.
pub struct BuiltGraph {
    cfg: Config,
    drivers: Vec<BuiltSource>,
    stop: StopFlag,
    taps: Taps,
    hooks: Hooks,
    modalities: Vec<Modality>,
    robot: String,
    topics: Topics,
    models: Arc<super::Models>,
    labels: BTreeMap<Modality, LabelSet>,
    fused_labels: Option<LabelSet>,
    history: Option<SharedHistory>,
    gate: Gate,
    resolve: ResolveTerm,
    registry: Arc<Mutex<Registry>>,
    session: zenoh::Session,
    alive: zenoh::liveliness::LivelinessToken,
    sink: Arc<BusSink>,
    telemetry: Arc<Telemetry>,
    prometheus: Option<tokio::net::TcpListener>,
    liveview: Option<crate::liveview::LiveView>,
}

impl BuiltGraph {
    /// The daemon's health counters (for callers that watch the graph).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Start every stage under the supervisor, downstream first (outputs, history,
    /// encoders, then windowers and sources), then the bus services.
    pub fn start(mut self) -> Result<RunningGraph, PipelineError> {
        let mut sup = Supervisor::new(self.telemetry.clone());
        let discard = Discard::default();
        if let Some(listener) = self.prometheus.take() {
            sup.task(
                "prometheus",
                Role::Forever,
                crate::prometheus::serve(listener, self.telemetry.clone()),
            );
        }
        let (out_tx, outputs_done) = self.start_outputs(&mut sup)?;
        let workers = self.start_encoders(&mut sup, out_tx, &discard)?;
        let ids = self.start_sources(&mut sup, workers)?;
        self.start_services(&mut sup, &ids);
        let cfg = &self.cfg;
        Ok(RunningGraph {
            sup,
            stop: self.stop,
            discard,
            outputs_done,
            notifier: self.hooks.notifier,
            exit_when_sources_end: cfg.daemon.exit_when_sources_end,
            shutdown_timeout_s: cfg.daemon.shutdown_timeout_s,
            liveview: self.liveview,
            sink: self.sink,
            topics: self.topics,
            telemetry: self.telemetry,
            robot: self.robot,
            alive: self.alive,
            session: self.session,
            taps: self.taps,
        })
    }

    fn setup(what: &str, e: std::io::Error) -> PipelineError {
        PipelineError::Setup(format!("cannot start {what}: {e}"))
    }

    /// The outputs thread (and the history thread behind it): the encoders' edge in,
    /// and a flag that turns true when the outputs thread has ended.
    fn start_outputs(
        &mut self,
        sup: &mut Supervisor,
    ) -> Result<(Sender<Embedded>, tokio::sync::watch::Receiver<bool>), PipelineError> {
        let cfg = &self.cfg;
        let (out_tx, out_rx) = edge::<Embedded>("outputs", cfg.outputs.queue, cfg.outputs.when_full);
        let (done_tx, outputs_done) = tokio::sync::watch::channel(false);
        let outputs = Outputs {
            topics: self.topics.clone(),
            robot: self.robot.clone(),
            model: self.models.pack.name().to_string(),
            top_k: cfg.labels.top_k,
            scales: self
                .models
                .encoders
                .iter()
                .map(|(m, e)| (*m, e.logit_scale()))
                .collect(),
            labels: std::mem::take(&mut self.labels),
            event_params: (cfg.events.start_prob, cfg.events.end_prob, cfg.events.min_windows),
            events: BTreeMap::new(),
            fused_labels: self.fused_labels.take(),
            fused_events: None,
        };
        let fuser = cfg.fusion.enabled.then(|| {
            let f = &cfg.fusion;
            crate::fusion::Fuser::new(
                self.modalities.iter().map(|m| (*m, f.weight(*m))).collect(),
                self.modalities
                    .iter()
                    .map(|m| {
                        let rate = cfg.engine.budget(*m).max_rate_hz;
                        (*m, worker::budget_stride(cfg.window.hop_s, rate))
                    })
                    .collect(),
                (f.deadline_s > 0.0).then(|| secs(f.deadline_s)),
                secs(f.active_s),
            )
            .expect(
                self.drivers.iter().flat_map(|b| {
                    b.source
                        .info()
                        .streams
                        .into_iter()
                        .map(|st| (b.config.id.clone(), st.modality))
                }),
                Instant::now(),
            )
        });
        let history_tx = match &self.history {
            Some(h) => {
                let (tx, rx) = edge::<crate::history::Record>("history", 4096, WhenFull::DropOldest);
                let (h, tel) = (h.clone(), self.telemetry.clone());
                let sync = secs(cfg.history.sync_s);
                sup.thread("history", Role::Finite, move || search::history_stage(rx, h, tel, sync))
                    .map_err(|e| Self::setup("the history thread", e))?;
                Some(tx)
            }
            None => None,
        };
        let stage = OutputsStage {
            rx: out_rx,
            outputs,
            fuser,
            history: history_tx,
            registry: self.registry.clone(),
            sink: self.sink.clone(),
            telemetry: self.telemetry.clone(),
            taps: self.taps.clone(),
            rt: tokio::runtime::Handle::current(),
        };
        sup.thread("outputs", Role::Finite, move || {
            stages::outputs_stage(stage);
            let _ = done_tx.send(true);
        })
        .map_err(|e| Self::setup("the outputs thread", e))?;
        Ok((out_tx, outputs_done))
    }

    /// One encoder worker per modality, sharing the gate's slots. `block` is for
    /// replays that must lose nothing: no window is ever stale there.
    fn start_encoders(
        &self,
        sup: &mut Supervisor,
        out_tx: Sender<Embedded>,
        discard: &Discard,
    ) -> Result<BTreeMap<Modality, WorkerHandle>, PipelineError> {
        let cfg = &self.cfg;
        let max_wait = (cfg.engine.max_wait_s > 0.0 && cfg.engine.when_full != WhenFull::Block)
            .then(|| secs(cfg.engine.max_wait_s));
        let mut workers = BTreeMap::new();
        for m in &self.modalities {
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
                self.models.preprocessors[m].clone(),
                self.models.encoders[m].clone(),
                wcfg,
                self.gate.clone(),
                out_tx.clone(),
                discard.clone(),
            );
            sup.thread(&format!("encoder/{m}"), Role::Finite, run)
                .map_err(|e| Self::setup(&format!("the {m} encoder thread"), e))?;
            workers.insert(*m, h);
        }
        Ok(workers)
    }

    /// Each source's runner and a windower per stream; returns the source ids. Only
    /// windowers hold the encoder handles afterwards: when they end, encoders drain.
    fn start_sources(
        &mut self,
        sup: &mut Supervisor,
        workers: BTreeMap<Modality, WorkerHandle>,
    ) -> Result<Vec<String>, PipelineError> {
        let cfg = &self.cfg;
        let params = WindowParams::from_config(&cfg.window);
        let idle_flush = secs(cfg.window.idle_flush_s);
        let drivers = std::mem::take(&mut self.drivers);
        let ids: Vec<String> = drivers.iter().map(|b| b.config.id.clone()).collect();
        for BuiltSource {
            config: s,
            source: driver,
            ..
        } in drivers
        {
            let info = driver.info();
            let clock = driver.clock();
            let sstats = self.telemetry.source(&s.id, &s.kind);
            sstats.describe(info.description.clone(), clock.kind());
            let mut routes = Vec::new();
            for st in &info.streams {
                let encoder = &self.models.encoders[&st.modality];
                let stats = self.telemetry.stream(&s.id, st.modality);
                stats.set_provider(encoder.provider());
                stats.set_provider_nodes(encoder.nodes_per_provider());
                let (tx, rx) = edge(format!("source/{}/{}", s.id, st.modality), s.queue, s.when_full);
                let stage = WindowStage {
                    rx,
                    windower: Windower::new(&s.id, st.modality, params, st.nominal_rate_hz)
                        .with_limits(window_limits(cfg)),
                    clock: clock.clone(),
                    worker: workers[&st.modality].clone(),
                    stats: stats.clone(),
                    idle_flush,
                    stop: self.stop.clone(),
                    imu: (st.modality == Modality::Imu).then(|| self.models.calibration.imu_correction()),
                };
                sup.thread(&format!("window/{}/{}", s.id, st.modality), Role::Finite, move || {
                    stages::window_stage(stage)
                })
                .map_err(|e| Self::setup("a windower thread", e))?;
                routes.push(Route {
                    modality: st.modality,
                    tx,
                    stats,
                });
            }
            let run = runner::runner(
                driver,
                RunnerContext {
                    id: s.id.as_str().into(),
                    routes,
                    stats: sstats,
                    stop: self.stop.clone(),
                    restart_backoff: secs(s.restart_backoff_s),
                    tap: self.taps.frames.clone(),
                    geometry: self.models.device_geometry.clone(),
                },
            );
            sup.thread(&format!("source/{}", s.id), Role::Finite, run)
                .map_err(|e| Self::setup(&format!("source `{}`", s.id), e))?;
        }
        Ok(ids)
    }

    /// Health, the query and search services, and systemd's watchdog.
    fn start_services(&self, sup: &mut Supervisor, ids: &[String]) {
        let cfg = &self.cfg;
        sup.task(
            "health",
            Role::Forever,
            stages::health_stage(
                self.sink.clone(),
                self.topics.clone(),
                self.telemetry.clone(),
                self.robot.clone(),
                secs(cfg.health.interval_s),
            ),
        );
        sup.task(
            "queries",
            Role::Forever,
            stages::query_service(
                self.session.clone(),
                self.topics.clone(),
                self.registry.clone(),
                self.resolve.clone(),
                cfg.queries.clone(),
                self.telemetry.clone(),
            ),
        );
        if let Some(h) = &self.history {
            let embed: EmbedText = {
                let models = self.models.clone();
                Arc::new(move |text: String| {
                    models
                        .embed_text(&[text])
                        .map_err(|e| e.to_string())
                        .and_then(|mut v| v.pop().ok_or_else(|| "text encoder returned nothing".to_string()))
                })
            };
            sup.task(
                "search",
                Role::Forever,
                search::search_service(SearchService {
                    session: self.session.clone(),
                    topics: self.topics.clone(),
                    robot: self.robot.clone(),
                    history: h.clone(),
                    embed,
                    limits: crate::history::params::SearchLimits {
                        max_k: cfg.history.max_k,
                        max_text_chars: cfg.queries.max_text_chars,
                    },
                    rate: cfg.history.searches_per_s,
                    burst: cfg.history.search_burst,
                    telemetry: self.telemetry.clone(),
                }),
            );
        }
        let notifier = self.hooks.notifier.clone();
        if let Some(n) = notifier.clone() {
            n.ready(&format!(
                "running: {} sources, {} streams",
                ids.len(),
                self.telemetry.streams().len()
            ));
            sup.task(
                "systemd",
                Role::Forever,
                systemd::systemd_stage(n, self.telemetry.clone(), secs(cfg.health.interval_s)),
            );
        }
        tracing::info!(event = names::DAEMON_STARTED, robot = %self.robot, sources = ?ids, watchdog_s = ?notifier.as_ref().and_then(|n| n.watchdog).map(|w| w.as_secs_f64()), "sensebind running");
    }
}

/// Phase 3: the graph, running.
pub struct RunningGraph {
    sup: Supervisor,
    stop: StopFlag,
    discard: Discard,
    outputs_done: tokio::sync::watch::Receiver<bool>,
    notifier: Option<systemd::Notifier>,
    exit_when_sources_end: bool,
    shutdown_timeout_s: f64,
    liveview: Option<crate::liveview::LiveView>,
    sink: Arc<BusSink>,
    topics: Topics,
    telemetry: Arc<Telemetry>,
    robot: String,
    alive: zenoh::liveliness::LivelinessToken,
    session: zenoh::Session,
    /// Held until the graph has stopped: a tap's listeners see it close only then,
    /// not when the stage that offers to it ends (a replay's sources end first).
    taps: Taps,
}

impl RunningGraph {
    /// Run until `shutdown` resolves, a stage fails (returned), or, with
    /// `daemon.exit_when_sources_end`, every source has ended and its windows are out.
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> Option<Failure> {
        let exit_when_done = self.exit_when_sources_end;
        let outputs_done = &mut self.outputs_done;
        tokio::select! {
            _ = shutdown => None,
            f = self.sup.failure() => f,
            // The outputs thread ends last: after every source, windower and encoder.
            _ = async { let _ = outputs_done.wait_for(|d| *d).await; }, if exit_when_done => {
                tracing::info!(event = names::SOURCES_ENDED, "every source has ended and its windows are published");
                None
            }
        }
    }

    /// The deadline `daemon.shutdown_timeout_s` gives from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + secs(self.shutdown_timeout_s)
    }

    /// Stop the graph: sources at once, then windowers, encoders (what is queued past
    /// `deadline` is counted as dropped), outputs and the history; a final health is
    /// published. `failure` (from [`RunningGraph::run_until`]) becomes the error.
    pub async fn shutdown(mut self, deadline: Instant, failure: Option<Failure>) -> Result<(), PipelineError> {
        tracing::info!(event = names::DAEMON_STOPPING, "shutting down");
        if let Some(n) = &self.notifier {
            n.stopping();
        }
        let sup = &mut self.sup;
        sup.stopping();
        self.stop.stop();
        // Windowers stop at their next poll; then encoders finish what is queued.
        let stuck = sup.join_threads("window/", deadline).await;
        let mut late = !stuck.is_empty();
        let soft = deadline.max(Instant::now());
        if !sup.join_threads("encoder/", soft).await.is_empty() {
            // Past the deadline: whatever is still queued is counted as dropped; the
            // batch in flight finishes (an encoder is never cut off inside ONNX Runtime).
            self.discard.set();
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
        if let Some(lv) = self.liveview.take() {
            lv.stop().await;
        }
        stages::publish_health(self.sink.as_ref(), &self.topics, &self.telemetry, &self.robot).await;
        drop(self.alive);
        let _ = self.session.close().await;
        drop(self.taps);
        if late {
            tracing::warn!(
                event = names::SHUTDOWN_TIMEOUT,
                timeout_s = self.shutdown_timeout_s,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn build_reports_every_failure_at_once() {
        // The metrics port is taken and the pack is missing: both are reported.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::load(None).unwrap();
        cfg.robot.state_dir = dir.path().display().to_string();
        cfg.pack.path = "/nonexistent/pack".into();
        cfg.prometheus.listen = format!("127.0.0.1:{taken}");
        cfg.bus.listen = vec![format!("tcp/127.0.0.1:{}", free_port())];
        cfg.bus.connect.clear();
        let hooks = Hooks {
            notifier: None,
            wrap_encoder: None,
        };
        let Err(e) = GraphBuilder::new(cfg, Vec::new(), StopFlag::default(), Taps::default())
            .hooks(hooks)
            .build()
            .await
        else {
            panic!("built without a pack")
        };
        let PipelineError::Build(all) = &e else {
            panic!("one error only: {e}")
        };
        assert_eq!(all.len(), 2, "{e}");
        let text = e.to_string();
        assert!(text.contains(&taken.to_string()), "{text}");
        assert!(text.contains("/nonexistent/pack"), "{text}");
        assert_eq!(text.lines().count(), 2, "a line each: {text}");
    }
}
