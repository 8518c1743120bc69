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
pub mod graph;
pub mod models;
pub mod recording;
pub mod search;
pub mod stages;
pub mod supervise;
pub mod systemd;

pub use graph::{BuiltGraph, GraphBuilder, RunningGraph};
pub use models::Models;

use crate::bus::BusError;
use crate::calibration::CalibrationError;
use crate::config::Config;
use crate::engine::gate::Gate;
use crate::engine::worker::Embedded;
use crate::engine::{Encoder, EngineError};
use crate::modality::Modality;
use crate::outputs::Published;
use crate::pack::PackError;
use crate::queries::{QueryError, Registry};
use crate::sources::{ImageLimits, SourceConfig, SourceContext, SourceError, StopFlag, TappedFrame};
use crate::taps::Tap;
use crate::telemetry::names;
use crate::window::{WindowLimits, WindowParams};
use crate::zeroshot::LabelSet;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

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
    /// Several things failed while building the graph (each on a line).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Build(Vec<PipelineError>),
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

impl PipelineError {
    /// One error as itself; several as [`PipelineError::Build`].
    pub fn build(mut errors: Vec<PipelineError>) -> PipelineError {
        match errors.len() {
            1 => errors.remove(0),
            0 => PipelineError::Setup("the graph could not be built".into()),
            _ => PipelineError::Build(errors),
        }
    }
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
    /// Where the source finds the daemon's ROS 2 node (filled when the bus opens).
    pub ros2: crate::ros2::node::Slot,
}

/// Build every enabled source of `cfg`; `stop` ends their waits at shutdown.
pub fn build_sources(cfg: &Config, stop: &StopFlag) -> Result<Vec<BuiltSource>, PipelineError> {
    let params = WindowParams::from_config(&cfg.window);
    let epoch_ns = params.align_down(crate::clock::realtime_ns());
    let mut out = Vec::new();
    let ros2 = crate::ros2::node::Slot::default();
    for config in enabled_sources(cfg)? {
        let ctx = SourceContext {
            id: config.id.clone(),
            epoch_ns,
            image_limits: window_limits(cfg).image,
            stop: stop.clone(),
            ros2: ros2.clone(),
        };
        let source = config
            .driver
            .as_ref()
            .expect("enabled sources have a driver")
            .build(&ctx)?;
        out.push(BuiltSource {
            config,
            source,
            ros2: ros2.clone(),
        });
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

/// As [`run_graph`], with explicit [`Hooks`]: built ([`GraphBuilder`]), started and run
/// until `shutdown`, then stopped within `daemon.shutdown_timeout_s`.
pub async fn run_graph_with(
    cfg: Config,
    drivers: Vec<BuiltSource>,
    stop: StopFlag,
    taps: Taps,
    hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    let built = GraphBuilder::new(cfg, drivers, stop, taps).hooks(hooks).build().await?;
    let mut running = built.start()?;
    let failure = running.run_until(shutdown).await;
    let deadline = running.deadline();
    running.shutdown(deadline, failure).await
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
