//! `sensebind` command line: the daemon and its tools.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use sensebind::bus::{zenoh_bus, EmbeddingMsg, Topics};
use sensebind::config::{Config, LogFormat};
use sensebind::engine::ort_backend;
use sensebind::modality::Modality;
use sensebind::offline;
use sensebind::pipeline::{self, Models};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sensebind",
    version,
    about = "One ImageBind embedding space for everything a robot senses, on zenoh"
)]
struct Cli {
    /// Configuration file layered over the built-in defaults (configs/default.toml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (no --config: the demo with synthetic sensors and the built-in pack).
    Run,
    /// Embed files offline with the daemon's windowing and preprocessing; one JSON line per embedding.
    Embed {
        /// Model pack directory (default: the `pack.path` from config, else the built-in pack).
        #[arg(long)]
        pack: Option<String>,
        #[command(flatten)]
        inputs: EmbedInputs,
    },
    /// Manage text queries registered with a running daemon.
    Query {
        #[command(subcommand)]
        op: QueryOp,
        /// Robot id (default: config's robot.id, else the host name).
        #[arg(long, global = true)]
        robot: Option<String>,
    },
    /// Print labels, events and alerts published by running daemons.
    Listen {
        /// Robot id, or `*` for all (default: config's robot id).
        #[arg(long)]
        robot: Option<String>,
        /// Also print a line per embedding.
        #[arg(long)]
        embeddings: bool,
        /// Print the raw messages, one JSON object per line: {"key", "message"}
        /// (embeddings decoded from CBOR, the vector as "embedding": [f32]).
        #[arg(long)]
        json: bool,
        /// Exit after this many seconds (0: run until interrupted).
        #[arg(long, default_value_t = 0.0)]
        seconds: f64,
    },
    /// Search the history of running daemons: the windows most like a text (or a
    /// past window), best first.
    Search(SearchCli),
    /// Validate the configuration and model pack; list usable execution providers.
    Check,
    /// Run the configured sources through the pipeline (as `run`) and record every
    /// frame to MCAP; with --embeddings also what the pipeline computes.
    Record {
        /// The MCAP file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        seconds: Option<f64>,
        /// Also record embeddings, labels, events and alerts.
        #[arg(long)]
        embeddings: bool,
    },
    /// Benchmark the daemon's own preprocessing and encoders on windows of what robots
    /// deliver (vision 2×1920×1080 RGB, audio 2 s at 48 kHz, depth 848×480, thermal
    /// 160×120, IMU 400 samples), as fast as they go.
    Bench(BenchCli),
    /// Play a recording's frames through the pipeline, publishing on the bus as `run`
    /// does; exits when the recording ends.
    Replay {
        /// The MCAP recording.
        file: PathBuf,
        /// `realtime` (as recorded) or `fast` (as fast as the encoders go; nothing lost).
        #[arg(long, default_value = "realtime")]
        pace: String,
        /// Also write the frames and what the pipeline computed to this MCAP file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `sensebind search` arguments.
#[derive(clap::Args)]
struct SearchCli {
    /// What to look for, e.g. "a dog barking".
    text: Option<String>,
    /// Instead of text: a past window, `<modality>/<source>/<seq>` or `fused/<seq>`.
    #[arg(long)]
    example: Option<String>,
    /// How many windows.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Only windows that end after this: a duration back from now (`90s`, `15m`,
    /// `1h`, `2d`) or Unix time in ns.
    #[arg(long)]
    since: Option<String>,
    /// Only windows that start before this (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Comma-separated stream kinds: vision, audio, depth, thermal, imu, fused.
    #[arg(long)]
    modalities: Option<String>,
    /// Comma-separated source ids.
    #[arg(long)]
    sources: Option<String>,
    /// Robot id, or `*` to ask every robot on the network and merge the answers
    /// (default: config's robot id).
    #[arg(long)]
    robot: Option<String>,
    /// One JSON object per line: robot, source, modality, seq, t_start_ns,
    /// t_end_ns, score; best first.
    #[arg(long)]
    json: bool,
}

/// `sensebind bench` arguments.
#[derive(clap::Args)]
struct BenchCli {
    /// Model pack directory (default: the `pack.path` from config, else the built-in pack).
    #[arg(long)]
    pack: Option<String>,
    /// Comma-separated modalities (default: every one the pack has).
    #[arg(long, value_delimiter = ',')]
    modalities: Option<Vec<String>>,
    /// Seconds per modality (a quarter preprocessing, a quarter inference, half end to end).
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Windows per encoder call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// ONNX Runtime intra-op threads per encoder (default: `engine.intra_threads`,
    /// else every CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object per modality: modality, preprocess_ms, infer_ms,
    /// windows_per_s, batch, provider, threads.
    #[arg(long)]
    json: bool,
    /// Instead of benchmarking, write the vision and audio inputs and the daemon's
    /// preprocessed tensors of them to this directory (tools/bench_vs_official.py
    /// times the official transforms on the same bytes).
    #[arg(long, value_name = "DIR")]
    write_inputs: Option<PathBuf>,
    /// Also write each modality's embedding of its benchmark window to this file,
    /// one JSON line each: {"modality", "embedding", "provider", "provider_nodes"}
    /// (to compare providers or packs).
    #[arg(long, value_name = "FILE")]
    vectors: Option<PathBuf>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum QueryOp {
    /// Register (or replace) a query. One term (--text, --audio, --image, --window)
    /// is a plain query; several are summed (each weighing 1); --all conditions must
    /// all hold; --request sends any request body (docs: README, "Queries").
    Add {
        id: String,
        /// A text ("a dog barking").
        #[arg(long)]
        text: Vec<String>,
        /// A WAV clip, embedded by the daemon as its microphone's windows are.
        #[arg(long)]
        audio: Vec<PathBuf>,
        /// A PNG or JPEG image, embedded by the daemon as a still image.
        #[arg(long)]
        image: Vec<PathBuf>,
        /// A past window from the history: <modality>/<source>/<seq> or fused/<seq>.
        #[arg(long)]
        window: Vec<String>,
        /// A condition of an `all` query, as key=value pairs separated by `;`:
        /// text=…, audio=FILE, image=FILE, window=…, modalities=a,b, sources=a,b,
        /// threshold=x (repeat --all for each condition).
        #[arg(long)]
        all: Vec<String>,
        /// `all` conditions hold in windows at most this many seqs apart.
        #[arg(long)]
        within: Option<u32>,
        /// The whole request body as JSON (instead of the flags above).
        #[arg(long)]
        request: Option<String>,
        /// Cosine threshold in [-1, 1].
        #[arg(long)]
        threshold: Option<f32>,
        /// Comma-separated stream kinds: vision, audio, depth, thermal, imu, fused
        /// (default: every sensed modality).
        #[arg(long, value_delimiter = ',')]
        modalities: Option<Vec<String>>,
        /// Comma-separated source ids (default: every source).
        #[arg(long, value_delimiter = ',')]
        sources: Option<Vec<String>>,
        /// Minimum seconds between alerts.
        #[arg(long)]
        cooldown: Option<f64>,
    },
    /// List registered queries.
    List,
    /// Remove a query.
    Remove { id: String },
}

/// Logs go to stderr. The daemon logs at `log.level`; the tools (embed, query, listen,
/// check) at `warn` so their stdout/stderr stay readable. RUST_LOG overrides both.
fn init_logging(cfg: &Config, daemon: bool, force_json: bool) {
    let level = if daemon {
        cfg.log.level.as_str()
    } else {
        "warn,zenoh=error"
    };
    sensebind::logging::init(level, force_json || cfg.log.format == LogFormat::Json);
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        // One line per error, whatever the cause chain holds (TOML errors carry code
        // snippets); a config with several mistakes gets a line for each key.
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        match e.downcast_ref::<sensebind::config::ConfigError>() {
            Some(sensebind::config::ConfigError::Invalid(all)) => {
                for line in all.lines() {
                    eprintln!("sensebind: error: configuration: {}", one_line(line));
                }
            }
            _ => eprintln!("sensebind: error: {}", one_line(&format!("{e:#}"))),
        }
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    init_logging(
        &cfg,
        matches!(cli.cmd, Cmd::Run | Cmd::Record { .. } | Cmd::Replay { .. }),
        cli.log_json,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.cmd {
        Cmd::Run => {
            rt.block_on(async move { pipeline::run(cfg, shutdown_signal()).await.map_err(anyhow::Error::from) })
        }
        Cmd::Embed { pack, inputs } => embed(cfg, pack, inputs),
        Cmd::Query { op, robot } => rt.block_on(query(cfg, op, robot)),
        Cmd::Listen {
            robot,
            embeddings,
            json,
            seconds,
        } => rt.block_on(listen(cfg, robot, embeddings, json, seconds)),
        Cmd::Check => check(cfg),
        Cmd::Search(args) => rt.block_on(search(cfg, args)),
        Cmd::Record {
            out,
            seconds,
            embeddings,
        } => rt.block_on(record(cfg, out, seconds, embeddings)),
        Cmd::Replay { file, pace, out } => rt.block_on(replay(cfg, file, pace, out)),
        Cmd::Bench(BenchCli {
            write_inputs: Some(dir),
            ..
        }) => {
            let calib = sensebind::calibration::Calibration::load(&cfg.calibration.file)?;
            let preps = sensebind::preprocess::build_all(&cfg.preprocess, &calib, &Default::default())
                .into_iter()
                .map(|p| (p.modality(), p))
                .collect();
            sensebind::bench::write_inputs(&dir, &preps).map_err(|e| anyhow!("bench --write-inputs: {e}"))
        }
        Cmd::Bench(args) => bench(cfg, args),
    }
}

/// Run `sources` through the pipeline while recording the taps into `out` (if any).
async fn run_recording(
    cfg: Config,
    sources: Vec<pipeline::BuiltSource>,
    stop: sensebind::sources::StopFlag,
    out: Option<&std::path::Path>,
    results: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use sensebind::record::{codec, tap, Recorder};
    let taps = pipeline::Taps::default();
    let recorder = match out {
        Some(path) => {
            let mut rec = Recorder::create(path)?;
            for b in &sources {
                for st in b.source.info().streams {
                    rec.set_channel_metadata(
                        &codec::frame_topic(st.modality, &b.config.id),
                        [
                            ("nominal_rate_hz".to_string(), st.nominal_rate_hz.to_string()),
                            ("source_type".to_string(), b.config.kind.clone()),
                        ]
                        .into(),
                    );
                }
            }
            tracing::info!(event = sensebind::telemetry::names::RECORD_STARTED, path = %path.display(), results, "recording");
            Some(tap::start(
                rec,
                taps.frames.listen(),
                results.then(|| taps.published.listen()),
            ))
        }
        None => None,
    };
    let ran = pipeline::run_graph(cfg, sources, stop, taps, shutdown).await;
    if let (Some(r), Some(path)) = (recorder, out) {
        let summary = r.finish().await?;
        let total: u64 = summary.counts.values().sum();
        tracing::info!(event = sensebind::telemetry::names::RECORD_FINISHED, path = %path.display(), messages = total, lost = summary.lost, "recording closed");
        println!(
            "{}",
            json!({"out": path.display().to_string(), "messages": total, "topics": summary.counts, "lost": summary.lost})
        );
        if summary.lost > 0 {
            eprintln!(
                "sensebind: warning: {} items were not recorded (the disk could not keep up)",
                summary.lost
            );
        }
    }
    ran.map_err(anyhow::Error::from)
}

async fn record(cfg: Config, out: PathBuf, seconds: Option<f64>, embeddings: bool) -> Result<()> {
    if let Some(s) = seconds {
        if !(s.is_finite() && s > 0.0) {
            bail!("--seconds: expected a positive number of seconds, got {s}");
        }
    }
    let stop = sensebind::sources::StopFlag::default();
    let sources = pipeline::build_sources(&cfg, &stop)?;
    let shutdown = async move {
        match seconds {
            Some(s) => tokio::select! {
                _ = shutdown_signal() => {}
                _ = tokio::time::sleep(sensebind::config::secs(s.min(1e9))) => {}
            },
            None => shutdown_signal().await,
        }
    };
    run_recording(cfg, sources, stop, Some(&out), embeddings, shutdown).await
}

async fn replay(mut cfg: Config, file: PathBuf, pace: String, out: Option<PathBuf>) -> Result<()> {
    if !matches!(pace.as_str(), "realtime" | "fast") {
        bail!("--pace: expected `realtime` or `fast`, got `{pace}`");
    }
    let ids = sensebind::sources::mcap::recorded_sources(&file)?;
    if ids.is_empty() {
        bail!(
            "{}: no frame channels (`frames/<modality>/<source>`) to replay",
            file.display()
        );
    }
    cfg.sources.clear();
    for id in &ids {
        let mut t = toml::Table::new();
        t.insert("type".into(), "mcap".into());
        t.insert("path".into(), file.display().to_string().into());
        t.insert("source".into(), id.clone().into());
        t.insert("pace".into(), pace.clone().into());
        cfg.sources.insert(id.clone(), t);
    }
    cfg.daemon.exit_when_sources_end = true;
    if pace == "fast" {
        // Nothing may be dropped on the way: the replay waits for the encoders.
        cfg.engine.when_full = sensebind::edge::WhenFull::Block;
        cfg.outputs.when_full = sensebind::edge::WhenFull::Block;
    }
    let stop = sensebind::sources::StopFlag::default();
    let sources = pipeline::build_sources(&cfg, &stop)?;
    run_recording(cfg, sources, stop, out.as_deref(), true, shutdown_signal()).await
}

/// SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, before
/// the pack loads, so a stop that arrives during start-up ends in a clean shutdown
/// once the graph runs (exit 0), not in death by the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut t), Some(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = i.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What `sensebind embed` embeds.
#[derive(clap::Args)]
struct EmbedInputs {
    /// WAV file(s); one line per window (length/hop from config, from t = 0).
    #[arg(long)]
    audio: Vec<PathBuf>,
    /// PNG/JPEG image(s); one line each.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Text(s); one line each.
    #[arg(long)]
    text: Vec<String>,
    /// 16-bit PNG depth image(s) in millimetres; one line each.
    #[arg(long)]
    depth: Vec<PathBuf>,
    /// 16-bit PNG thermal image(s), raw Y16 counts; one line each.
    #[arg(long)]
    thermal: Vec<PathBuf>,
    /// IMU CSV file(s) (`t_s,ax,ay,az,gx,gy,gz`); one line per window.
    #[arg(long)]
    imu: Vec<PathBuf>,
}

fn bench(mut cfg: Config, args: BenchCli) -> Result<()> {
    use sensebind::bench;
    let BenchCli {
        pack,
        modalities,
        seconds,
        batch,
        threads,
        json,
        vectors,
        write_inputs: _,
    } = args;
    if let Some(p) = pack {
        cfg.pack.path = p;
    }
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be a positive number of seconds, got {seconds}");
    }
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    // Run with an explicit thread count, so the one reported is the one that ran.
    let threads = threads.unwrap_or(if cfg.engine.intra_threads > 0 {
        cfg.engine.intra_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    });
    cfg.engine.intra_threads = threads;
    let pack_has = sensebind::pack::Pack::load(&cfg.pack.path)?;
    let mods: Vec<Modality> = match modalities {
        Some(names) => names
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<Modality>()
                    .map_err(|e| anyhow!("--modalities: {e}"))
                    .and_then(|m| {
                        if pack_has.spec(m).is_some() {
                            Ok(m)
                        } else {
                            Err(anyhow!(
                                "--modalities: the pack {} has no {m} encoder",
                                pack_has.location
                            ))
                        }
                    })
            })
            .collect::<Result<_>>()?,
        None => bench::DEFAULT_MODALITIES
            .into_iter()
            .filter(|m| pack_has.spec(*m).is_some())
            .collect(),
    };
    drop(pack_has);
    let sensed: Vec<Modality> = mods.iter().copied().filter(|m| *m != Modality::Text).collect();
    let models = Models::load(&cfg, &sensed)?;
    if let Some(path) = vectors {
        let lines: Vec<String> = bench::vectors(&models, &mods)
            .map_err(|e| anyhow!("bench --vectors: {e}"))?
            .into_iter()
            .map(|(m, v)| {
                let e = &models.encoders[&m];
                let nodes: serde_json::Map<String, serde_json::Value> =
                    e.nodes_per_provider().into_iter().map(|(p, n)| (p, json!(n))).collect();
                json!({"modality": m, "embedding": v, "provider": e.provider(), "provider_nodes": nodes}).to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let opt = bench::BenchOptions {
        seconds,
        batch,
        threads,
    };
    if !json {
        println!(
            "pack {} · batch {batch} · {threads} threads · {seconds} s per modality",
            models.pack.location
        );
        println!(
            "{:<8} {:>14} {:>20} {:>10}  provider",
            "modality", "preprocess ms", "infer ms per window", "windows/s"
        );
    }
    for m in mods {
        let r = bench::bench_modality(&models, m, &opt).map_err(|e| anyhow!("bench {m}: {e}"))?;
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:<8} {:>14.3} {:>20.3} {:>10.2}  {}",
                r.modality.to_string(),
                r.preprocess_ms,
                r.infer_ms,
                r.windows_per_s,
                r.provider
            );
        }
    }
    Ok(())
}

fn embed(mut cfg: Config, pack: Option<String>, inp: EmbedInputs) -> Result<()> {
    let files = [
        (Modality::Audio, &inp.audio),
        (Modality::Vision, &inp.image),
        (Modality::Depth, &inp.depth),
        (Modality::Thermal, &inp.thermal),
        (Modality::Imu, &inp.imu),
    ];
    if inp.text.is_empty() && files.iter().all(|(_, f)| f.is_empty()) {
        bail!("nothing to embed: give --audio, --image, --depth, --thermal or --imu FILE and/or --text STRING");
    }
    if let Some(p) = pack {
        cfg.pack.path = p;
    }
    let mods: Vec<Modality> = files.iter().filter(|(_, f)| !f.is_empty()).map(|(m, _)| *m).collect();
    let models = Models::load(&cfg, &mods)?;
    let mut all = Vec::new();
    for path in &inp.audio {
        all.extend(offline::embed_audio(&models, &cfg, path)?);
    }
    for path in &inp.image {
        all.push(offline::embed_image(&models, &cfg, path)?);
    }
    for path in &inp.depth {
        all.push(offline::embed_gray16(&models, &cfg, path, Modality::Depth)?);
    }
    for path in &inp.thermal {
        all.push(offline::embed_gray16(&models, &cfg, path, Modality::Thermal)?);
    }
    for path in &inp.imu {
        all.extend(offline::embed_imu(&models, &cfg, path)?);
    }
    if !inp.text.is_empty() {
        all.extend(offline::embed_texts(&models, &inp.text)?);
    }
    for e in all {
        let line = json!({
            "modality": e.modality,
            "input": e.input,
            "t_start": e.span.map(|t| t.0 as f64 / 1e9),
            "t_end": e.span.map(|t| t.1 as f64 / 1e9),
            "embedding": e.vector,
            "scale": e.scale,
        });
        println!("{line}");
    }
    Ok(())
}

/// A session for tools: a client of the daemon's listen endpoints, or of what
/// `bus.connect` names (the fleet's router). `base` names the daemon(s) in the error
/// when nothing answers; with `wait` (listen) it keeps trying instead.
async fn tool_session(cfg: &Config, base: &str, wait: bool) -> Result<zenoh::Session> {
    let mut bus = cfg.bus.clone();
    if bus.connect.is_empty() {
        bus.connect = bus.listen.iter().map(|e| e.replace("0.0.0.0", "127.0.0.1")).collect();
    }
    bus.listen.clear();
    // A client of whatever it connects to: a daemon (a peer routes for its clients) or
    // the fleet's router.
    bus.mode = sensebind::config::ZenohMode::Client;
    let mut z = zenoh_bus::zenoh_config(&bus)?;
    if wait {
        z.insert_json5("connect/exit_on_failure", "false")
            .map_err(|e| anyhow!("zenoh config: {e}"))?;
    }
    zenoh::open(z).await.map_err(|e| {
        anyhow!(
            "no daemon answers under {base} at {} (is `sensebind run` up, with the same bus?): {e}",
            bus.connect.join(", ")
        )
    })
}

/// Whether a daemon holds its liveliness token under `topics`.
async fn daemon_alive(session: &zenoh::Session, topics: &Topics) -> Result<bool> {
    let replies = session
        .liveliness()
        .get(topics.alive())
        .timeout(Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!("zenoh liveliness get {}: {e}", topics.alive()))?;
    while let Ok(r) = replies.recv_async().await {
        if r.result().is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn require_daemon(session: &zenoh::Session, topics: &Topics) -> Result<()> {
    // Through a router, a new session learns the routes to the daemons within about a
    // second: ask for up to 3 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if daemon_alive(session, topics).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "no daemon answers under {} (is `sensebind run` up, with the same bus and robot id?)",
        topics.base()
    )
}

/// The daemon's answer to a put or delete on `queries/<id>`: an error on
/// `errors/queries/<id>`, or the registry reaching the state we asked for.
async fn await_answer(
    session: &zenoh::Session,
    topics: &Topics,
    errors: &zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    id: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Result<()> {
    for _ in 0..50 {
        if let Ok(Some(s)) = errors.try_recv() {
            let body = String::from_utf8_lossy(&s.payload().to_bytes()).into_owned();
            let msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            bail!("the daemon rejected query `{id}`: {msg}");
        }
        let listed: Vec<serde_json::Value> = list_queries(session, &topics.query(id))
            .await?
            .iter()
            .filter_map(|q| serde_json::from_str(q).ok())
            .collect();
        if done(&listed) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the daemon under {} did not answer for query `{id}` within 5 s",
        topics.base()
    )
}

async fn query(cfg: Config, op: QueryOp, robot: Option<String>) -> Result<()> {
    let robot = robot.unwrap_or_else(|| cfg.robot_id());
    let topics = Topics::new(&cfg.bus.prefix, &robot);
    let session = tool_session(&cfg, topics.base(), false).await?;
    require_daemon(&session, &topics).await?;
    match op {
        QueryOp::Add {
            id,
            text,
            audio,
            image,
            window,
            all,
            within,
            request,
            threshold,
            modalities,
            sources,
            cooldown,
        } => {
            sensebind::bus::validate_chunk(&id).map_err(|e| anyhow!("query id: {e}"))?;
            let mut body = match request {
                Some(r) => {
                    serde_json::from_str::<serde_json::Value>(&r).map_err(|e| anyhow!("--request: not JSON: {e}"))?
                }
                None => {
                    let terms = query_terms(&text, &audio, &image, &window)?;
                    let mut body = json!({});
                    if !all.is_empty() {
                        if !terms.is_empty() {
                            bail!("--all replaces --text/--audio/--image/--window: put them in its conditions");
                        }
                        let conds = all.iter().map(|c| all_condition(c)).collect::<Result<Vec<_>>>()?;
                        body["all"] = json!(conds);
                        if let Some(w) = within {
                            body["within_windows"] = json!(w);
                        }
                    } else {
                        match terms.len() {
                            0 => bail!(
                                "nothing to look for: give --text, --audio, --image, --window, --all or --request"
                            ),
                            1 => {
                                let t = terms.into_iter().next().unwrap_or_default();
                                for (k, v) in t.as_object().cloned().unwrap_or_default() {
                                    body[k] = v;
                                }
                            }
                            _ => body["terms"] = json!(terms),
                        }
                    }
                    body
                }
            };
            let mods: Option<Vec<sensebind::modality::Target>> = modalities
                .map(|v| v.iter().map(|m| m.trim().parse()).collect::<Result<Vec<_>, _>>())
                .transpose()
                .map_err(|e| anyhow!("--modalities: {e}"))?;
            if let Some(t) = threshold {
                body["threshold"] = json!(t);
            }
            if let Some(m) = mods {
                body["modalities"] = json!(m);
            }
            if let Some(s) = sources {
                body["sources"] = json!(s.iter().map(|x| x.trim()).collect::<Vec<_>>());
            }
            if let Some(c) = cooldown {
                body["cooldown_s"] = json!(c);
            }
            // What the daemon will list: validated here first, so a bad request is
            // reported without a round trip.
            let plan = sensebind::queries::QueryPlan::from_request(&id, body.to_string().as_bytes(), &cfg.queries)?;
            let errors = session
                .declare_subscriber(topics.query_error(&id))
                .await
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            session
                .put(topics.query(&id), body.to_string())
                .await
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            // Registered means: the daemon lists this id with what was asked for (its
            // own defaults may differ from this tool's config, so those are not compared).
            let same = |q: &serde_json::Value| {
                q["text"].as_str() == Some(plan.spec.text.as_str())
                    && q["kind"] == json!(plan.spec.kind)
                    && threshold.is_none_or(|t| q["threshold"].as_f64().map(|x| x as f32) == Some(t))
                    && body.get("modalities").is_none_or(|m| &q["modalities"] == m)
                    && body.get("sources").is_none_or(|s| &q["sources"] == s)
                    && cooldown.is_none_or(|c| q["cooldown_s"].as_f64() == Some(c))
            };
            await_answer(&session, &topics, &errors, &id, |l| l.iter().any(same)).await?;
            println!("registered {id} on {}: {}", topics.base(), plan.spec.text);
            Ok(())
        }
        QueryOp::List => {
            for q in list_queries(&session, &topics.queries_all()).await? {
                println!("{q}");
            }
            Ok(())
        }
        QueryOp::Remove { id } => {
            if list_queries(&session, &topics.query(&id)).await?.is_empty() {
                bail!("query `{id}` is not registered under {}", topics.base());
            }
            let errors = session
                .declare_subscriber(topics.query_error(&id))
                .await
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            session
                .delete(topics.query(&id))
                .await
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            await_answer(&session, &topics, &errors, &id, |l| l.is_empty()).await?;
            println!("removed {id}");
            Ok(())
        }
    }
}

/// `sensebind search`: ask one robot's (or every robot's) `search` queryable and
/// merge the answers, best first.
async fn search(cfg: Config, a: SearchCli) -> Result<()> {
    use sensebind::history::params::{percent_encode, WindowRef};
    let mut params = Vec::new();
    match (&a.text, &a.example) {
        (Some(t), None) => params.push(format!("text={}", percent_encode(t))),
        (None, Some(e)) => {
            WindowRef::parse(e).map_err(|e| anyhow!("--example: {e}"))?;
            params.push(format!("example={}", percent_encode(e)));
        }
        (Some(_), Some(_)) => bail!("give a TEXT or --example, not both"),
        (None, None) => {
            bail!("nothing to search for: give a TEXT (e.g. \"a dog barking\") or --example <modality>/<source>/<seq>")
        }
    }
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    params.push(format!("k={}", a.k));
    for (name, v) in [
        ("since", &a.since),
        ("until", &a.until),
        ("modalities", &a.modalities),
        ("sources", &a.sources),
    ] {
        if let Some(v) = v {
            params.push(format!("{name}={}", percent_encode(v)));
        }
    }
    let robot = a.robot.clone().unwrap_or_else(|| cfg.robot_id());
    if robot != "*" {
        sensebind::bus::validate_chunk(&robot).map_err(|e| anyhow!("--robot: {e}"))?;
    }
    let selector = format!("{}/{robot}/search?{}", cfg.bus.prefix, params.join(";"));
    let session = tool_session(&cfg, &format!("{}/{robot}", cfg.bus.prefix), false).await?;
    if robot != "*" {
        require_daemon(&session, &Topics::new(&cfg.bus.prefix, &robot)).await?;
    }
    let replies = session
        .get(&selector)
        .target(zenoh::query::QueryTarget::All)
        .consolidation(zenoh::query::ConsolidationMode::None)
        .timeout(Duration::from_secs(15))
        .await
        .map_err(|e| anyhow!("zenoh get {selector}: {e}"))?;
    let (mut hits, mut errors, mut answered) = (Vec::new(), Vec::new(), 0);
    while let Ok(r) = replies.recv_async().await {
        match r.result() {
            Ok(s) => {
                let body: serde_json::Value = serde_json::from_slice(&s.payload().to_bytes())
                    .map_err(|e| anyhow!("a search answer is not JSON: {e}"))?;
                answered += 1;
                hits.extend(body["results"].as_array().cloned().unwrap_or_default());
            }
            Err(e) => {
                let body = String::from_utf8_lossy(&e.payload().to_bytes()).into_owned();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(json!({ "error": body }));
                errors.push(format!(
                    "{}: {}",
                    v["robot"].as_str().unwrap_or("?"),
                    v["error"].as_str().unwrap_or(&body)
                ));
            }
        }
    }
    for e in &errors {
        eprintln!("sensebind: search refused by {e}");
    }
    if answered == 0 {
        if errors.is_empty() {
            bail!(
                "no daemon answered on {}/{robot}/search (is `sensebind run` up, with history enabled?)",
                cfg.bus.prefix
            );
        }
        bail!("every daemon refused the search");
    }
    let score = |v: &serde_json::Value| v["score"].as_f64().unwrap_or(f64::NEG_INFINITY);
    // Best first; ties (the same scene on two robots) by robot, then newest first.
    hits.sort_by(|x, y| {
        score(y)
            .total_cmp(&score(x))
            .then_with(|| x["robot"].as_str().cmp(&y["robot"].as_str()))
            .then_with(|| y["t_end_ns"].as_i64().cmp(&x["t_end_ns"].as_i64()))
    });
    hits.truncate(a.k);
    for h in &hits {
        if a.json {
            let keys = ["robot", "source", "modality", "seq", "t_start_ns", "t_end_ns", "score"];
            let o: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (k.to_string(), h[*k].clone())).collect();
            println!("{}", serde_json::Value::Object(o));
        } else {
            let t = h["t_start_ns"].as_i64().unwrap_or(0);
            let secs = (h["t_end_ns"].as_i64().unwrap_or(t) - t) as f64 / 1e9;
            println!(
                "{:.3}  {:<12} {:<20} seq {:<8} {} +{secs:.1}s",
                score(h),
                h["robot"].as_str().unwrap_or("?"),
                format!(
                    "{}/{}",
                    h["modality"].as_str().unwrap_or("?"),
                    h["source"].as_str().unwrap_or("?")
                ),
                h["seq"],
                utc(t)
            );
        }
    }
    Ok(())
}

/// `2026-11-30 14:02:06.0 UTC` from Unix ns.
fn utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let tenth = ns.rem_euclid(1_000_000_000) / 100_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{tenth} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The terms of `query add` flags: {"text"} or {"example": …} objects, in flag order.
fn query_terms(
    text: &[String],
    audio: &[PathBuf],
    image: &[PathBuf],
    window: &[String],
) -> Result<Vec<serde_json::Value>> {
    use base64::Engine as _;
    let media = |p: &PathBuf, mime: &str| -> Result<serde_json::Value> {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(json!({"example": {"media": base64::engine::general_purpose::STANDARD.encode(bytes), "mime": mime}}))
    };
    let mut out: Vec<serde_json::Value> = text.iter().map(|t| json!({ "text": t })).collect();
    for p in audio {
        out.push(media(p, "audio/wav")?);
    }
    for p in image {
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
    for w in window {
        let w = sensebind::history::params::WindowRef::parse(w).map_err(|e| anyhow!("--window: {e}"))?;
        out.push(json!({"example": {"window": w}}));
    }
    Ok(out)
}

/// One `--all` condition: `text=…;audio=F;image=F;window=…;modalities=a,b;sources=a,b;threshold=x`.
fn all_condition(spec: &str) -> Result<serde_json::Value> {
    let (mut text, mut audio, mut image, mut window) = (vec![], vec![], vec![], vec![]);
    let mut cond = json!({});
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--all `{spec}`: expected key=value pairs separated by `;`"))?;
        let list = |v: &str| v.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>();
        match k.trim() {
            "text" => text.push(v.to_string()),
            "audio" => audio.push(PathBuf::from(v)),
            "image" => image.push(PathBuf::from(v)),
            "window" => window.push(v.to_string()),
            "modalities" => cond["modalities"] = json!(list(v)),
            "sources" => cond["sources"] = json!(list(v)),
            "threshold" => {
                cond["threshold"] = json!(v
                    .trim()
                    .parse::<f32>()
                    .map_err(|_| anyhow!("--all `{spec}`: threshold `{v}` is not a number"))?)
            }
            other => bail!(
                "--all `{spec}`: unknown key `{other}` (text, audio, image, window, modalities, sources, threshold)"
            ),
        }
    }
    let terms = query_terms(&text, &audio, &image, &window)?;
    match terms.len() {
        0 => bail!("--all `{spec}`: give text=…, audio=…, image=… or window=…"),
        1 => {
            for (k, v) in terms[0].as_object().cloned().unwrap_or_default() {
                cond[k] = v;
            }
        }
        _ => cond["terms"] = json!(terms),
    }
    Ok(cond)
}

async fn list_queries(session: &zenoh::Session, selector: &str) -> Result<Vec<String>> {
    let replies = session
        .get(selector)
        .timeout(Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!("zenoh get {selector}: {e}"))?;
    let mut out = Vec::new();
    while let Ok(r) = replies.recv_async().await {
        if let Ok(s) = r.result() {
            out.push(String::from_utf8_lossy(&s.payload().to_bytes()).into_owned());
        }
    }
    Ok(out)
}

async fn listen(cfg: Config, robot: Option<String>, embeddings: bool, json: bool, seconds: f64) -> Result<()> {
    use sensebind::bus::listen::Lines;
    let robot = robot.unwrap_or_else(|| cfg.robot_id());
    let base = format!("{}/{}", cfg.bus.prefix, robot);
    let session = tool_session(&cfg, &base, true).await?;
    let sub = session
        .declare_subscriber(format!("{base}/**"))
        .await
        .map_err(|e| anyhow!("zenoh: {e}"))?;
    eprintln!(
        "listening on {base}/** (labels, events, alerts, errors{}){}",
        if embeddings { ", embeddings" } else { "" },
        if json {
            ""
        } else {
            "; one line per window: time (UTC), modality/source, top labels, ▶ event start, ■ event end, ! query alert"
        }
    );
    let deadline = (seconds > 0.0).then(|| tokio::time::Instant::now() + sensebind::config::secs(seconds.min(1e9)));
    let mut lines = Lines::new();
    loop {
        // A window's line waits briefly for its events and alerts.
        let quiet = tokio::time::Instant::now() + Duration::from_millis(300);
        let until = match (deadline, lines.has_pending()) {
            (Some(d), true) => Some(d.min(quiet)),
            (Some(d), false) => Some(d),
            (None, true) => Some(quiet),
            (None, false) => None,
        };
        let next = match until {
            Some(u) => match tokio::time::timeout_at(u, sub.recv_async()).await {
                Ok(s) => s,
                Err(_) => {
                    if let Some(l) = lines.flush() {
                        println!("{l}");
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(());
                    }
                    continue;
                }
            },
            None => sub.recv_async().await,
        };
        let Ok(sample) = next else {
            if let Some(l) = lines.flush() {
                println!("{l}");
            }
            return Ok(());
        };
        let key = sample.key_expr().as_str().to_string();
        let body = sample.payload().to_bytes();
        let is_embedding = key.contains("/embedding/");
        if json {
            let message = if is_embedding {
                if !embeddings {
                    continue;
                }
                match EmbeddingMsg::from_cbor(&body) {
                    Ok(m) => {
                        let v = m.vector();
                        let mut o = serde_json::to_value(&m).unwrap_or_default();
                        o["embedding"] = json!(v);
                        o
                    }
                    Err(e) => json!({ "undecodable_cbor": e }),
                }
            } else if ["/labels/", "/events/", "/alerts/", "/errors/"]
                .iter()
                .any(|k| key.contains(k))
            {
                serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)))
            } else {
                continue;
            };
            println!("{}", json!({ "key": key, "message": message }));
        } else if is_embedding {
            if embeddings {
                match EmbeddingMsg::from_cbor(&body) {
                    Ok(m) => println!(
                        "{key} seq={} t=[{}, {}] dim={} coverage={:.2}",
                        m.seq, m.t_start_ns, m.t_end_ns, m.dim, m.coverage
                    ),
                    Err(e) => println!("{key} undecodable CBOR: {e}"),
                }
            }
        } else {
            for l in lines.push(&key, &body) {
                println!("{l}");
            }
        }
    }
}

fn check(cfg: Config) -> Result<()> {
    println!(
        "config: ok (robot id `{}`, state dir {})",
        cfg.robot_id(),
        cfg.state_dir().display()
    );
    let lib = ort_backend::library_path(&cfg.engine.ort_library)?;
    ort_backend::init_runtime(&cfg.engine.ort_library)?;
    println!("onnxruntime: {}", lib.display());
    let provs: Vec<String> = ort_backend::available_providers()
        .into_iter()
        .map(|(n, ok)| format!("{n}={}", if ok { "available" } else { "not in this build" }))
        .collect();
    println!(
        "execution providers: {} (configured order: {:?})",
        provs.join(", "),
        cfg.engine.providers
    );
    // Build every enabled source (as the daemon would) to learn its streams.
    let built = pipeline::build_sources(&cfg, &sensebind::sources::StopFlag::default())?;
    let models = Models::load(&cfg, &pipeline::modalities_of(&built))?;
    println!("pack: {} ({})", models.pack.name(), models.pack.location);
    for (m, e) in &models.encoders {
        println!(
            "  {m:<8} dim={} scale={} input={:?} provider={} nodes={}",
            e.dim(),
            e.logit_scale(),
            e.input_shape(),
            e.provider(),
            e.nodes_per_provider()
                .iter()
                .map(|(p, n)| format!("{p}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    // Open every enabled source once, so a missing file or device is reported now
    // rather than as a reconnect loop later.
    let mut failed = Vec::new();
    for pipeline::BuiltSource {
        config,
        source: mut src,
    } in built
    {
        let id = config.id;
        let info = src.info();
        let streams: Vec<String> = info.streams.iter().map(|s| s.modality.to_string()).collect();
        match src.open() {
            Ok(()) => println!(
                "source {id}: ok ({}; streams {}; clock {})",
                info.description,
                streams.join(", "),
                src.clock().kind()
            ),
            Err(e) => {
                println!("source {id}: FAILED: {e}");
                failed.push(format!("source {id}: {e}"));
            }
        }
    }
    println!(
        "bus: {}/{} mode {:?} listen {:?} connect {:?}",
        cfg.bus.prefix,
        cfg.robot_id(),
        cfg.bus.mode,
        cfg.bus.listen,
        cfg.bus.connect
    );
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}
