//! The daemon: sources → windows → preprocessing → encoders → bus, plus the query
//! service and health reports. `run` returns when `shutdown` resolves.

use crate::bus::zenoh_bus::{self, ZenohSink};
use crate::bus::{BusError, Enc, Sink, Topics};
use crate::calibration::{Calibration, CalibrationError};
use crate::config::{Config, SourceType};
use crate::engine::ort_backend::OrtEncoder;
use crate::engine::worker::{self, Submit, WorkerEvent, WorkerHandle};
use crate::engine::{Encoder, EngineError};
use crate::health::Health;
use crate::modality::{Modality, Sensor};
use crate::outputs::Outputs;
use crate::pack::{Pack, PackError};
use crate::preprocess::text::TextPrep;
use crate::preprocess::{self, Preprocessor};
use crate::queries::{QueryError, QuerySpec, Registry};
use crate::sources::{self, Frame, SourceError, StopFlag};
use crate::window::{Outcome, Windower};
use crate::zeroshot::{EventTracker, LabelSet};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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
    #[error("{0}")]
    Setup(String),
}

/// Everything loaded before the pipeline starts: pack, encoders, preprocessors.
pub struct Models {
    pub pack: Pack,
    pub encoders: BTreeMap<Modality, Arc<dyn Encoder>>,
    pub preprocessors: BTreeMap<Modality, Arc<dyn Preprocessor>>,
    pub text: TextPrep,
    /// Vision settings, for still images (`embed --image`).
    pub vision_config: crate::config::VisionPrepConfig,
}

impl Models {
    /// Load the pack and create encoders for `modalities` (text always).
    pub fn load(cfg: &Config, modalities: &[Modality]) -> Result<Models, DaemonError> {
        let pack = Pack::load(&cfg.pack.path)?;
        let calib = Calibration::load(&cfg.calibration.file)?;
        let state = cfg.state_dir();
        let mut encoders: BTreeMap<Modality, Arc<dyn Encoder>> = BTreeMap::new();
        let mut wanted: Vec<Modality> = modalities.to_vec();
        if !wanted.contains(&Modality::Text) {
            wanted.push(Modality::Text);
        }
        for m in wanted {
            encoders.insert(m, Arc::new(OrtEncoder::load(&pack, m, &cfg.engine, &state)?));
        }
        let preprocessors = preprocess::build_all(&cfg.preprocess, &calib)
            .into_iter()
            .map(|p| (p.modality(), p))
            .collect();
        Ok(Models {
            pack,
            encoders,
            preprocessors,
            text: TextPrep::new(),
            vision_config: cfg.preprocess.vision.clone(),
        })
    }

    pub fn embed_text(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        let enc = self.encoders.get(&Modality::Text).ok_or_else(|| EngineError::Run {
            modality: Modality::Text,
            reason: "no text encoder loaded".into(),
        })?;
        let inputs: Vec<_> = texts.iter().map(|t| self.text.input(t)).collect();
        enc.encode(&inputs)
    }
}

/// Sensors that are configured on.
pub fn active_sensors(cfg: &Config) -> Vec<Sensor> {
    cfg.sources
        .iter()
        .filter(|(_, s)| s.kind != SourceType::Off)
        .map(|(s, _)| s)
        .collect()
}

/// Run the daemon until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let robot = cfg.robot_id();
    let sensors = active_sensors(&cfg);
    let modalities: Vec<Modality> = sensors.iter().map(|s| s.modality()).collect();
    let state_dir = cfg.state_dir();
    std::fs::create_dir_all(&state_dir).map_err(|e| {
        DaemonError::Setup(format!(
            "state directory {}: {e} (set `robot.state_dir`)",
            state_dir.display()
        ))
    })?;

    let cfg2 = cfg.clone();
    let mods2 = modalities.clone();
    let models = tokio::task::spawn_blocking(move || Models::load(&cfg2, &mods2))
        .await
        .map_err(|e| DaemonError::Setup(format!("model loading panicked: {e}")))??;
    let models = Arc::new(models);
    tracing::info!(event = "pack_loaded", pack = %models.pack.location, name = %models.pack.name(), "model pack loaded");

    let topics = Topics::new(&cfg.bus.prefix, &robot);
    let session = zenoh_bus::open(&cfg.bus).await?;
    tracing::info!(event = "bus_open", base = %topics.base(), listen = ?cfg.bus.listen, connect = ?cfg.bus.connect, "zenoh session open");
    let sink = Arc::new(ZenohSink(session.clone()));
    let health = Arc::new(Health::new());

    // Zero-shot label sets, embedded once.
    let mut labels = BTreeMap::new();
    let mut events = BTreeMap::new();
    {
        let models = models.clone();
        let sets = cfg.labels.sets.clone();
        let mods = modalities.clone();
        let built = tokio::task::spawn_blocking(move || -> Result<Vec<LabelSet>, EngineError> {
            let text = models.encoders[&Modality::Text].clone();
            let mut v = Vec::new();
            for (m, set) in sets.iter().filter(|(m, s)| mods.contains(m) && !s.is_empty()) {
                let scale = models.encoders.get(m).map(|e| e.logit_scale()).unwrap_or(1.0);
                v.push(LabelSet::build(*m, set, text.as_ref(), &models.text, scale)?);
            }
            Ok(v)
        })
        .await
        .map_err(|e| DaemonError::Setup(format!("label embedding panicked: {e}")))??;
        for set in built {
            events.insert(
                set.modality,
                EventTracker::new(cfg.events.start_prob, cfg.events.end_prob, cfg.events.min_windows),
            );
            labels.insert(set.modality, set);
        }
    }

    // Registered queries, reloaded from the state directory.
    let mut registry = Registry::new(&state_dir, cfg.queries.max_queries);
    let stored = registry.load_specs()?;
    if !stored.is_empty() {
        let texts: Vec<String> = stored.iter().map(|s| s.text.clone()).collect();
        let m2 = models.clone();
        let embs = tokio::task::spawn_blocking(move || m2.embed_text(&texts))
            .await
            .map_err(|e| DaemonError::Setup(e.to_string()))??;
        for (spec, emb) in stored.into_iter().zip(embs) {
            registry.insert(spec, emb)?;
        }
        tracing::info!(event = "queries_loaded", count = registry.len(), path = %registry.path().display(), "registered queries reloaded");
    }
    health.queries.store(registry.len() as u64, Relaxed);
    let registry = Arc::new(Mutex::new(registry));

    // Encoder workers.
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<WorkerEvent>(256);
    let mut workers: BTreeMap<Modality, WorkerHandle> = BTreeMap::new();
    for m in &modalities {
        let prep = models.preprocessors[m].clone();
        let enc = models.encoders[m].clone();
        health.modality(*m).set_provider(enc.provider());
        let h = worker::spawn(prep, enc, cfg.engine.max_batch, cfg.engine.queue_depth, ev_tx.clone())
            .map_err(|e| DaemonError::Setup(format!("cannot start the {m} encoder thread: {e}")))?;
        workers.insert(*m, h);
    }
    drop(ev_tx);

    // Sources and windowers.
    let stop = StopFlag::default();
    let params = cfg.window_params();
    let epoch = params.align_down(sources::now_ns());
    let idle_flush = Duration::from_secs_f64(cfg.window.idle_flush_s);
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    for (sensor, scfg) in cfg.sources.iter().filter(|(_, s)| s.kind != SourceType::Off) {
        let src = sources::build(sensor, scfg, epoch, stop.clone())?.expect("filtered to enabled sources");
        let info = src.info();
        let sh = health.source(sensor);
        sh.set_description(info.description.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(scfg.queue);
        threads.push(
            sources::spawn(
                src,
                tx,
                sh,
                stop.clone(),
                Duration::from_secs_f64(scfg.restart_backoff_s),
            )
            .map_err(|e| DaemonError::Setup(format!("cannot start the {sensor} source thread: {e}")))?,
        );
        let w = Windower::new(sensor, params, info.nominal_rate_hz);
        let handle = workers[&sensor.modality()].clone();
        tasks.push(tokio::spawn(window_task(
            sensor,
            w,
            rx,
            handle,
            health.clone(),
            idle_flush,
        )));
    }
    tracing::info!(event = "daemon_started", robot = %robot, sensors = ?sensors, "sensebind running");

    // Results → bus.
    let mut outputs = Outputs {
        topics: topics.clone(),
        robot: robot.clone(),
        model: models.pack.name().to_string(),
        top_k: cfg.labels.top_k,
        scales: models.encoders.iter().map(|(m, e)| (*m, e.logit_scale())).collect(),
        labels,
        events,
    };
    {
        let sink = sink.clone();
        let health = health.clone();
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                match ev {
                    WorkerEvent::Embedded(e) => {
                        let mh = health.modality(e.modality);
                        mh.record_latency(e.latency);
                        mh.batch_max.fetch_max(e.batch_size as u64, Relaxed);
                        let produced = outputs.on_embedded(&e, &mut *registry.lock().await);
                        health.alerts.fetch_add(produced.alerts as u64, Relaxed);
                        for (key, body, enc) in produced.messages {
                            if let Err(err) = sink.put(key, body, enc).await {
                                health.bus_errors.fetch_add(1, Relaxed);
                                tracing::warn!(event = "publish_failed", error = %err, "publish failed");
                            }
                        }
                        mh.windows_out.fetch_add(1, Relaxed);
                    }
                    WorkerEvent::Failed { modality, seq, error } => {
                        health.modality(modality).dropped_error.fetch_add(1, Relaxed);
                        tracing::warn!(event = "window_failed", modality = %modality, seq, error = %error, "window dropped");
                    }
                }
            }
        }));
    }

    // Query service.
    tasks.push(tokio::spawn(query_service(
        session.clone(),
        topics.clone(),
        registry.clone(),
        models.clone(),
        cfg.queries.clone(),
        health.clone(),
    )));

    // Health reports.
    {
        let sink = sink.clone();
        let health = health.clone();
        let topics = topics.clone();
        let robot = robot.clone();
        let interval = Duration::from_secs_f64(cfg.health.interval_s);
        let sensors = sensors.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let snap = health.snapshot(&robot, sources::now_ns(), &sensors);
                if let Err(e) = sink
                    .put(topics.health(), snap.to_string().into_bytes(), Enc::Json)
                    .await
                {
                    health.bus_errors.fetch_add(1, Relaxed);
                    tracing::warn!(event = "publish_failed", error = %e, "health not published");
                }
            }
        }));
    }

    shutdown.await;
    tracing::info!(event = "daemon_stopping", "shutting down");
    stop.stop();
    for t in &tasks {
        t.abort();
    }
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = session.close().await;
    Ok(())
}

/// Frames → windows → encoder queue, for one sensor.
async fn window_task(
    sensor: Sensor,
    mut w: Windower,
    mut rx: tokio::sync::mpsc::Receiver<Frame>,
    worker: WorkerHandle,
    health: Arc<Health>,
    idle_flush: Duration,
) {
    let m = worker.modality();
    let mh = health.modality(m);
    let handle = |outcomes: Vec<Outcome>| {
        for o in outcomes {
            match o {
                Outcome::Ready(win) => {
                    mh.windows_in.fetch_add(1, Relaxed);
                    match worker.submit(win) {
                        Submit::Queued => {}
                        Submit::QueuedDroppedOldest(seq) => {
                            mh.dropped_backpressure.fetch_add(1, Relaxed);
                            tracing::warn!(event = "window_dropped", modality = %m, seq, reason = "backpressure", "encoder behind; oldest window dropped");
                        }
                        Submit::Closed => {}
                    }
                }
                Outcome::Dropped { seq, coverage, .. } => {
                    mh.dropped_coverage.fetch_add(1, Relaxed);
                    tracing::debug!(event = "window_dropped", modality = %m, seq, coverage, reason = "coverage", "window dropped");
                }
                Outcome::Rejected { reason } => {
                    health.source(sensor).record_error();
                    tracing::warn!(event = "frame_rejected", modality = %m, reason = %reason, "frame discarded");
                }
                Outcome::LateFrames { count } => {
                    mh.late_frames.fetch_add(count, Relaxed);
                }
            }
        }
    };
    loop {
        match tokio::time::timeout(idle_flush, rx.recv()).await {
            Ok(Some(frame)) => handle(w.push(frame)),
            Ok(None) => {
                handle(w.flush());
                break;
            }
            Err(_) => {
                // Quiet sensor: close windows whose end has long passed.
                let now = sources::now_ns() - idle_flush.as_nanos() as i64;
                if w.overdue(now) {
                    handle(w.flush());
                }
            }
        }
    }
}

/// `queries/<id>`: put registers, delete removes; `get queries/**` lists. Errors go
/// to `errors/queries/<id>` as JSON `{query_id, error, key}`.
async fn query_service(
    session: zenoh::Session,
    topics: Topics,
    registry: Arc<Mutex<Registry>>,
    models: Arc<Models>,
    qcfg: crate::config::QueriesConfig,
    health: Arc<Health>,
) {
    let sub = match session.declare_subscriber(topics.queries_sub()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(event = "bus_error", error = %e, "cannot subscribe to queries");
            return;
        }
    };
    let queryable = match session.declare_queryable(topics.queries_all()).await {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(event = "bus_error", error = %e, "cannot declare the queries queryable");
            return;
        }
    };
    let publish_error = |id: String, key: String, error: String| {
        let session = session.clone();
        let topics = topics.clone();
        async move {
            tracing::warn!(event = "query_rejected", query_id = %id, error = %error, "bad query");
            let body = json!({ "query_id": id, "key": key, "error": error }).to_string();
            let _ = session
                .put(topics.query_error(&id), body)
                .encoding(zenoh::bytes::Encoding::APPLICATION_JSON)
                .await;
        }
    };
    loop {
        tokio::select! {
            s = sub.recv_async() => {
                let Ok(sample) = s else { break };
                let key = sample.key_expr().as_str().to_string();
                let Some(id) = topics.query_id(&key).map(str::to_string) else { continue };
                match sample.kind() {
                    zenoh::sample::SampleKind::Put => {
                        let body = sample.payload().to_bytes().to_vec();
                        let spec = match QuerySpec::from_request(&id, &body, &qcfg) {
                            Ok(s) => s,
                            Err(e) => { publish_error(id, key, e.to_string()).await; continue; }
                        };
                        let m2 = models.clone();
                        let text = spec.text.clone();
                        let emb = tokio::task::spawn_blocking(move || m2.embed_text(&[text])).await;
                        let emb = match emb {
                            Ok(Ok(mut v)) if !v.is_empty() => v.remove(0),
                            Ok(Err(e)) => { publish_error(id, key, e.to_string()).await; continue; }
                            _ => { publish_error(id, key, "text encoder failed".into()).await; continue; }
                        };
                        let mut reg = registry.lock().await;
                        match reg.insert(spec.clone(), emb) {
                            Ok(()) => {
                                health.queries.store(reg.len() as u64, Relaxed);
                                tracing::info!(event = "query_registered", query_id = %id, text = %spec.text, threshold = spec.threshold, "query registered");
                            }
                            Err(e) => { drop(reg); publish_error(id, key, e.to_string()).await; }
                        }
                    }
                    zenoh::sample::SampleKind::Delete => {
                        let mut reg = registry.lock().await;
                        match reg.remove(&id) {
                            Ok(true) => {
                                health.queries.store(reg.len() as u64, Relaxed);
                                tracing::info!(event = "query_removed", query_id = %id, "query removed");
                            }
                            Ok(false) => { drop(reg); publish_error(id.clone(), key, format!("query `{id}` is not registered")).await; }
                            Err(e) => { drop(reg); publish_error(id, key, e.to_string()).await; }
                        }
                    }
                }
            }
            q = queryable.recv_async() => {
                let Ok(query) = q else { break };
                let specs = registry.lock().await.specs();
                for spec in specs {
                    let key = topics.query(&spec.id);
                    let Ok(ke) = zenoh::key_expr::KeyExpr::try_from(key.as_str()) else { continue };
                    if !query.key_expr().intersects(&ke) {
                        continue;
                    }
                    let body = serde_json::to_string(&spec).unwrap_or_default();
                    if let Err(e) = query.reply(ke, body).encoding(zenoh::bytes::Encoding::APPLICATION_JSON).await {
                        tracing::warn!(event = "bus_error", error = %e, "query reply failed");
                    }
                }
            }
        }
    }
}
