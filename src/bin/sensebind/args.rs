//! The command line: every verb and flag of `sensebind` (clap), parsed in
//! `main.rs` and handed to the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sensebind",
    version,
    about = "One ImageBind embedding space for everything a robot senses, on zenoh"
)]
pub(crate) struct Cli {
    /// Configuration file layered over the built-in defaults (configs/default.toml).
    #[arg(long, short, global = true)]
    pub(crate) config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub(crate) log_json: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// Validate the configuration and model pack, open every source once, and report
    /// the machine: ONNX Runtime and its execution providers (and which each encoder
    /// gets), the TensorRT engine cache, the pack's weights per modality and a memory
    /// estimate for the configured ones against the memory available.
    Check {
        /// Print the report as one JSON object (exit status 1 when something failed,
        /// as without it).
        #[arg(long)]
        json: bool,
    },
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
        /// The MCAP recording: `sensebind record`'s, or a ROS 2 bag (its `.mcap` file or
        /// its directory), every topic a source reads played as a source named after it.
        file: PathBuf,
        /// A ROS 2 bag topic's sensor, where its type does not say (an Image in
        /// `mono16`) or says otherwise: `--sensor /thermal/image_raw=thermal`. Repeatable.
        #[arg(long = "sensor", value_name = "TOPIC=SENSOR", value_parser = parse_topic_sensor)]
        sensors: Vec<(String, sensebind::modality::Sensor)>,
        /// `realtime` (as recorded) or `fast` (as fast as the encoders go; nothing lost).
        #[arg(long, value_enum, default_value_t = PaceArg::Realtime)]
        pace: PaceArg,
        /// Also write the frames and what the pipeline computed to this MCAP file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `TOPIC=SENSOR` of `replay --sensor`.
fn parse_topic_sensor(s: &str) -> Result<(String, sensebind::modality::Sensor), String> {
    let (topic, sensor) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TOPIC=SENSOR (e.g. /thermal/image_raw=thermal), got `{s}`"))?;
    let sensor = sensebind::modality::Sensor::ALL
        .into_iter()
        .find(|x| x.as_str() == sensor)
        .ok_or_else(|| format!("`{sensor}`: expected camera, depth, thermal, microphone or imu"))?;
    let topic = if topic.starts_with('/') {
        topic.to_string()
    } else {
        format!("/{topic}")
    };
    Ok((topic, sensor))
}

/// How fast a recording is played.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PaceArg {
    /// As recorded.
    Realtime,
    /// As fast as the encoders go; nothing lost.
    Fast,
}

/// `sensebind search` arguments.
#[derive(clap::Args)]
pub(crate) struct SearchCli {
    /// What to look for, e.g. "a dog barking".
    pub(crate) text: Option<String>,
    /// Instead of text: a past window, `<modality>/<source>/<seq>` or `fused/<seq>`.
    #[arg(long)]
    pub(crate) example: Option<String>,
    /// How many windows.
    #[arg(long, default_value_t = 10)]
    pub(crate) k: usize,
    /// Only windows that end after this: a duration back from now (`90s`, `15m`,
    /// `1h`, `2d`) or Unix time in ns.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only windows that start before this (same forms as --since).
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Comma-separated stream kinds: vision, audio, depth, thermal, imu, fused.
    #[arg(long)]
    pub(crate) modalities: Option<String>,
    /// Comma-separated source ids.
    #[arg(long)]
    pub(crate) sources: Option<String>,
    /// Robot id, or `*` to ask every robot on the network and merge the answers
    /// (default: config's robot id).
    #[arg(long)]
    pub(crate) robot: Option<String>,
    /// One JSON object per line: robot, source, modality, seq, t_start_ns,
    /// t_end_ns, score; best first.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `sensebind bench` arguments.
#[derive(clap::Args)]
pub(crate) struct BenchCli {
    /// Model pack directory (default: the `pack.path` from config, else the built-in pack).
    #[arg(long)]
    pub(crate) pack: Option<String>,
    /// Comma-separated modalities (default: every one the pack has).
    #[arg(long, value_delimiter = ',')]
    pub(crate) modalities: Option<Vec<String>>,
    /// Seconds per modality (a quarter preprocessing, a quarter inference, half end to end).
    #[arg(long, default_value_t = 4.0)]
    pub(crate) seconds: f64,
    /// Windows per encoder call.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// ONNX Runtime intra-op threads per encoder (default: `engine.intra_threads`,
    /// else every CPU).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// One JSON object per modality: modality, preprocess_ms, infer_ms,
    /// windows_per_s, batch, provider, threads.
    #[arg(long)]
    pub(crate) json: bool,
    /// Instead of benchmarking, write the vision and audio inputs and the daemon's
    /// preprocessed tensors of them to this directory (tools/bench_vs_official.py
    /// times the official transforms on the same bytes).
    #[arg(long, value_name = "DIR")]
    pub(crate) write_inputs: Option<PathBuf>,
    /// Also write each modality's embedding of its benchmark window to this file,
    /// one JSON line each: {"modality", "embedding", "provider", "provider_nodes"}
    /// (to compare providers or packs).
    #[arg(long, value_name = "FILE")]
    pub(crate) vectors: Option<PathBuf>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub(crate) enum QueryOp {
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

/// What `sensebind embed` embeds.
#[derive(clap::Args)]
pub(crate) struct EmbedInputs {
    /// WAV file(s); one line per window (length/hop from config, from t = 0).
    #[arg(long)]
    pub(crate) audio: Vec<PathBuf>,
    /// PNG/JPEG image(s); one line each.
    #[arg(long)]
    pub(crate) image: Vec<PathBuf>,
    /// Text(s); one line each.
    #[arg(long)]
    pub(crate) text: Vec<String>,
    /// 16-bit PNG depth image(s) in millimetres; one line each.
    #[arg(long)]
    pub(crate) depth: Vec<PathBuf>,
    /// 16-bit PNG thermal image(s), raw Y16 counts; one line each.
    #[arg(long)]
    pub(crate) thermal: Vec<PathBuf>,
    /// IMU CSV file(s) (`t_s,ax,ay,az,gx,gy,gz`); one line per window.
    #[arg(long)]
    pub(crate) imu: Vec<PathBuf>,
}
