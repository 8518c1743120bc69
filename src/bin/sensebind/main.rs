//! `sensebind` command line: the daemon and its tools.

mod args;

use anyhow::{anyhow, bail, Context, Result};
use args::{BenchCli, Cli, Cmd, EmbedInputs, PaceArg, QueryOp, SearchCli};
use clap::Parser;
use sensebind::client::{self, Client};
use sensebind::config::{Config, LogFormat};
use sensebind::modality::Modality;
use sensebind::offline;
use sensebind::pipeline::{self, recording, Models};
use sensebind::sources::file::Pace;
use serde_json::json;
use std::path::PathBuf;

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
        match (
            e.downcast_ref::<sensebind::config::ConfigError>(),
            e.downcast_ref::<pipeline::PipelineError>(),
        ) {
            (Some(sensebind::config::ConfigError::Invalid(all)), _) => {
                for line in all.lines() {
                    eprintln!("sensebind: error: configuration: {}", one_line(line));
                }
            }
            (_, Some(pipeline::PipelineError::Build(all))) => {
                for e in all {
                    eprintln!("sensebind: error: {}", one_line(&e.to_string()));
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
        Cmd::Check { json } => check(cfg, json),
        Cmd::Search(args) => rt.block_on(search(cfg, args)),
        Cmd::Record {
            out,
            seconds,
            embeddings,
        } => rt.block_on(record(cfg, out, seconds, embeddings)),
        Cmd::Replay {
            file,
            sensors,
            pace,
            out,
        } => rt.block_on(replay(cfg, file, sensors, pace, out)),
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

/// The pipeline with its taps recorded into `out` (if any); prints what was recorded.
async fn run_recording(
    cfg: Config,
    sources: Vec<pipeline::BuiltSource>,
    stop: sensebind::sources::StopFlag,
    out: Option<&std::path::Path>,
    results: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let recorded = recording::run_recording(cfg, sources, stop, out, results, shutdown).await?;
    if let (Some(r), Some(path)) = (recorded, out) {
        println!(
            "{}",
            json!({"out": path.display().to_string(), "messages": r.messages, "topics": r.topics, "lost": r.lost})
        );
        if r.lost > 0 {
            eprintln!(
                "sensebind: warning: {} items were not recorded (the disk could not keep up)",
                r.lost
            );
        }
    }
    Ok(())
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

async fn replay(
    cfg: Config,
    file: PathBuf,
    sensors: Vec<(String, sensebind::modality::Sensor)>,
    pace: PaceArg,
    out: Option<PathBuf>,
) -> Result<()> {
    let pace = match pace {
        PaceArg::Realtime => Pace::Realtime,
        PaceArg::Fast => Pace::Fast,
    };
    let cfg = recording::replay_config(cfg, &file, pace, &sensors)?;
    let (sources, stop) = recording::replay_sources(&cfg)?;
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
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be a positive number of seconds, got {seconds}");
    }
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mods = bench::plan(&mut cfg, pack, modalities.as_deref(), threads).map_err(|e| anyhow!(e))?;
    let threads = cfg.engine.intra_threads;
    let sensed: Vec<Modality> = mods.iter().copied().filter(|m| *m != Modality::Text).collect();
    let models = Models::load(&cfg, &sensed)?;
    if let Some(path) = vectors {
        let lines = bench::vector_lines(&models, &mods).map_err(|e| anyhow!("bench --vectors: {e}"))?;
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
    if let Some(p) = pack {
        cfg.pack.path = p;
    }
    let inputs = offline::Inputs {
        audio: inp.audio,
        image: inp.image,
        depth: inp.depth,
        thermal: inp.thermal,
        imu: inp.imu,
        text: inp.text,
    };
    for e in offline::embed_inputs(&cfg, &inputs)? {
        println!("{}", e.to_json());
    }
    Ok(())
}

async fn query(cfg: Config, op: QueryOp, robot: Option<String>) -> Result<()> {
    let robot = robot.unwrap_or_else(|| cfg.robot_id());
    let client = Client::connect(&cfg, &robot, false).await?;
    client.require_daemon(&robot).await?;
    let base = client.topics(&robot).base().to_string();
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
            let mut body = match request {
                Some(r) => match serde_json::from_str::<serde_json::Value>(&r) {
                    Ok(serde_json::Value::Object(o)) => o,
                    Ok(_) => bail!("--request: expected a JSON object"),
                    Err(e) => bail!("--request: not JSON: {e}"),
                },
                None => {
                    let terms = client::Terms {
                        text,
                        audio,
                        image,
                        window,
                    };
                    client::request_body(&terms, &all, within)?
                }
            };
            if let Some(t) = threshold {
                body.insert("threshold".into(), json!(t));
            }
            if let Some(m) = modalities {
                let m = m
                    .iter()
                    .map(|m| m.trim().parse())
                    .collect::<Result<Vec<sensebind::modality::Target>, _>>()
                    .map_err(|e| anyhow!("--modalities: {e}"))?;
                body.insert("modalities".into(), json!(m));
            }
            if let Some(s) = sources {
                body.insert("sources".into(), json!(s.iter().map(|x| x.trim()).collect::<Vec<_>>()));
            }
            if let Some(c) = cooldown {
                body.insert("cooldown_s".into(), json!(c));
            }
            let spec = client
                .register(&robot, &id, &serde_json::Value::Object(body), &cfg.queries)
                .await?;
            println!("registered {id} on {base}: {}", spec.text);
        }
        QueryOp::List => {
            for q in client.list_raw(&robot, None).await? {
                println!("{}", String::from_utf8_lossy(&q));
            }
        }
        QueryOp::Remove { id } => {
            client.remove(&robot, &id).await?;
            println!("removed {id}");
        }
    }
    Ok(())
}

/// `sensebind search`: one robot's (or every robot's) history, best first.
async fn search(cfg: Config, a: SearchCli) -> Result<()> {
    let q = client::SearchQuery {
        text: a.text,
        example: a.example,
        k: a.k,
        since: a.since,
        until: a.until,
        modalities: a.modalities,
        sources: a.sources,
    };
    q.params()?;
    let robot = a.robot.unwrap_or_else(|| cfg.robot_id());
    let client = Client::connect(&cfg, &robot, false).await?;
    let found = client.search(&robot, &q).await?;
    for r in &found.refusals {
        eprintln!("sensebind: search refused by {}: {}", r.robot, r.error);
    }
    for h in &found.hits {
        if a.json {
            println!("{}", serde_json::to_string(h)?);
        } else {
            let secs = (h.t_end_ns - h.t_start_ns) as f64 / 1e9;
            println!(
                "{:.3}  {:<12} {:<20} seq {:<8} {} +{secs:.1}s",
                h.score,
                h.robot,
                format!("{}/{}", h.modality, h.source),
                h.seq,
                client::utc(h.t_start_ns)
            );
        }
    }
    Ok(())
}

async fn listen(cfg: Config, robot: Option<String>, embeddings: bool, json: bool, seconds: f64) -> Result<()> {
    let robot = robot.unwrap_or_else(|| cfg.robot_id());
    let client = Client::connect(&cfg, &robot, true).await?;
    let opts = client::ListenOptions {
        embeddings,
        json,
        seconds,
    };
    let mut listener = client.listen(&robot, opts).await?;
    eprintln!("{}", listener.banner());
    while let Some(lines) = listener.next().await {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

fn check(cfg: Config, json: bool) -> Result<()> {
    let report = pipeline::check::check(&cfg);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for l in report.lines() {
            println!("{l}");
        }
    }
    if !report.failed.is_empty() {
        bail!("{}", report.failed.join("; "));
    }
    Ok(())
}
