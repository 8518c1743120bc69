//! Typed configuration, layered with the `config` crate:
//! built-in `configs/default.toml` → user file (`--config`) → `SENSEBIND__SECTION__KEY`
//! environment variables. Every struct denies unknown fields, so a misspelt key is an
//! error at start that names the key's path.
//!
//! Sources are the exception to "one struct here": `[sources.<id>]` tables are kept
//! raw and each driver module parses its own keys (vector-style: the component owns
//! its typed config), see [`crate::sources::parse_all`]. The built-in demo's five
//! synthetic sources (`configs/demo.toml`) are used only when no user file is given;
//! a user file lists exactly the sources it wants.

use crate::edge::WhenFull;
use crate::modality::Modality;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod validate;
pub use validate::{check_log_level, secs, secs_ns, Checks, DurationKey, SecsRange, DURATIONS, RESTART_BACKOFF};

/// The commented default configuration, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../../configs/default.toml");

/// The built-in demo's sources, layered over the defaults only when no user file is given.
pub const DEMO_TOML: &str = include_str!("../../configs/demo.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {cause}")]
    File { path: PathBuf, cause: String },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Layer(String),
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Layer(e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub robot: RobotConfig,
    pub log: LogConfig,
    pub pack: PackConfig,
    pub engine: EngineConfig,
    pub window: WindowConfig,
    pub preprocess: PreprocessConfig,
    pub calibration: CalibrationConfig,
    /// `[sources.<id>]`, raw: each driver parses its own keys.
    #[serde(default)]
    pub sources: BTreeMap<String, toml::Table>,
    pub limits: LimitsConfig,
    pub daemon: DaemonConfig,
    pub outputs: OutputsConfig,
    pub bus: BusConfig,
    pub labels: LabelsConfig,
    pub events: EventsConfig,
    pub queries: QueriesConfig,
    pub fusion: FusionConfig,
    pub history: HistoryConfig,
    pub health: HealthConfig,
    pub foxglove: FoxgloveConfig,
    pub prometheus: PrometheusConfig,
    pub ros2: Ros2Config,
}

/// `[ros2]`: sensebind as a ROS 2 node over rmw_zenoh (the `ros2` sources, and the
/// ROS 2 outputs when `publish` is on).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ros2Config {
    pub publish: bool,
    /// Unset: `ROS_DOMAIN_ID`, else 0.
    #[serde(default)]
    pub domain_id: Option<u32>,
    pub namespace: String,
    pub node: String,
    pub distro: crate::ros2::wire::Distro,
}

/// The highest ROS 2 domain id (ROS 2 allows 0..=232).
pub const MAX_ROS_DOMAIN: u32 = 232;

impl Ros2Config {
    /// The domain in use: `domain_id`, else `ROS_DOMAIN_ID` (when it is a valid id),
    /// else 0.
    pub fn domain(&self) -> u32 {
        self.domain_id.unwrap_or_else(|| {
            std::env::var("ROS_DOMAIN_ID")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|d| *d <= MAX_ROS_DOMAIN)
                .unwrap_or(0)
        })
    }
}

/// `[prometheus]`: the metrics endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// `host:port` to serve `/metrics` on; empty: off.
    pub listen: String,
}

/// `[foxglove]`: the live view (Foxglove WebSocket server).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FoxgloveConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub image_max_side: u32,
    pub image_rate_hz: f64,
    pub max_client_errors: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    pub id: String,
    pub state_dir: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    pub path: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub ort_library: String,
    pub providers: Vec<Provider>,
    pub device_id: i32,
    pub trt_fp16: bool,
    pub trt_engine_cache: String,
    pub intra_threads: usize,
    pub max_batch: usize,
    pub queue_depth: usize,
    /// Policy of the windower → encoder edge.
    pub when_full: WhenFull,
    /// Encoder calls that may run at once across modalities (0: no limit).
    pub concurrency: usize,
    /// A window that waited longer than this for its encoder is dropped as stale (0: never).
    pub max_wait_s: f64,
    /// Per-modality priority and frame-rate budget (`[engine.modalities.<m>]`).
    #[serde(default)]
    pub modalities: BTreeMap<Modality, ModalityBudget>,
}

/// How one modality fares when the encoders cannot keep up.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModalityBudget {
    /// Higher runs first when encoder calls wait for a slot.
    pub priority: i32,
    /// The most windows per second embedded from each stream of this modality (0: no budget).
    pub max_rate_hz: f64,
}

impl EngineConfig {
    /// A modality's budget (the default: priority 0, no rate limit).
    pub fn budget(&self, m: Modality) -> ModalityBudget {
        self.modalities.get(&m).copied().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub length_s: f64,
    pub hop_s: f64,
    pub min_coverage: f64,
    pub origin_ns: i64,
    pub idle_flush_s: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    pub audio: AudioPrepConfig,
    pub vision: VisionPrepConfig,
    pub depth: DepthPrepConfig,
    pub thermal: ThermalPrepConfig,
    pub imu: ImuPrepConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AudioPrepConfig {
    pub sample_rate: u32,
    pub num_mel_bins: usize,
    pub target_length: usize,
    pub mean: f32,
    pub std: f32,
}

/// How camera frames are resized and cropped.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VisionMode {
    /// Official image loader: PIL bicubic (antialiased, u8 result), torchvision CenterCrop.
    Image,
    /// Official video loader: pytorchvideo ShortSideScale (bilinear), uniform crops.
    Video,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Crops {
    Center,
    Three,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VisionPrepConfig {
    pub size: u32,
    pub frames: usize,
    pub mode: VisionMode,
    pub crops: Crops,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Which frame of a depth/thermal window is embedded (their encoders take one image).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FramePick {
    /// The frame nearest the window's centre.
    Middle,
    /// The newest frame.
    Last,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DepthPrepConfig {
    pub size: u32,
    pub frame: FramePick,
    pub min_depth_m: f32,
    pub max_depth_m: f32,
    pub scale: f32,
    pub invalid_disparity: f32,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ThermalRange {
    Auto,
    Fixed,
    /// `kelvin_min..kelvin_max`, through the calibration's radiometry (`[thermal]`).
    Kelvin,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalPrepConfig {
    pub size: u32,
    pub frame: FramePick,
    pub range: ThermalRange,
    pub raw_min: f32,
    pub raw_max: f32,
    pub kelvin_min: f32,
    pub kelvin_max: f32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImuPrepConfig {
    pub samples: usize,
    pub accel_scale: f32,
    pub gyro_scale: f32,
    pub channels: Vec<ImuChannel>,
}

/// One IMU axis, for `preprocess.imu.channels`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImuChannel {
    Ax,
    Ay,
    Az,
    Gx,
    Gy,
    Gz,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    pub file: String,
}

/// `[limits]`: bounds on what sensor data may make the daemon allocate. A frame
/// beyond them is dropped and counted (health: `frames_rejected`), never buffered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_image_side: u32,
    pub max_aspect_ratio: f64,
    pub max_window_frames: usize,
    /// Most bytes of frames one stream's windower buffers (decoded images, samples).
    pub max_window_bytes: u64,
    pub max_time_jump_s: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub shutdown_timeout_s: f64,
    /// Exit (0) once every source has ended and its last windows are published.
    pub exit_when_sources_end: bool,
    /// Windows waiting this long with none handled: a wedged stage (systemd watchdog
    /// pings stop; health says so).
    pub watchdog_stall_s: f64,
}

/// The encoder → outputs edge.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsConfig {
    pub queue: usize,
    pub when_full: WhenFull,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ZenohMode {
    /// `client` when `connect` lists endpoints (a router, or a peer, routes everything
    /// for its clients), else `peer` listening on `listen`.
    Auto,
    Peer,
    Client,
    Router,
}

impl BusConfig {
    /// The session mode `mode` resolves to (see [`ZenohMode::Auto`]).
    pub fn resolved_mode(&self) -> ZenohMode {
        match self.mode {
            ZenohMode::Auto if self.connect.is_empty() => ZenohMode::Peer,
            ZenohMode::Auto => ZenohMode::Client,
            m => m,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub prefix: String,
    pub mode: ZenohMode,
    pub listen: Vec<String>,
    pub connect: Vec<String>,
    pub multicast_scouting: bool,
    pub gossip_scouting: bool,
    pub zenoh_config: String,
    /// Publishing when the network is congested: `drop_newest` or `block`.
    pub when_full: WhenFull,
    /// Longest an alert may wait for a slow peer before zenoh closes that peer's
    /// session (alerts are published with congestion control Block).
    pub alert_block_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    pub top_k: usize,
    pub sets: BTreeMap<Modality, BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub start_prob: f32,
    pub end_prob: f32,
    pub min_windows: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesConfig {
    pub default_threshold: f32,
    pub default_cooldown_s: f64,
    pub max_queries: usize,
    /// Bounds on requests from the bus (hostile input).
    pub max_text_chars: usize,
    pub max_request_bytes: usize,
    /// Terms of one weighted sum (`terms`).
    pub max_terms: usize,
    /// Conditions of one `all` query.
    pub max_conditions: usize,
    /// Bytes of one example's media, decoded.
    pub max_media_bytes: usize,
    /// Longest audio example, in seconds.
    pub max_example_seconds: f64,
    /// Largest query store (`queries.json`), in bytes: a registration that would
    /// make it larger is refused (`too_large`).
    pub max_store_bytes: usize,
    pub registrations_per_s: f64,
    pub registration_burst: u32,
    pub id_min_interval_s: f64,
    /// Queries registered from config at every start (`[queries.presets.<id>]`), with
    /// the keys of a `queries/<id>` request.
    #[serde(default)]
    pub presets: BTreeMap<String, PresetQuery>,
}

/// A query written in config: the keys of a `queries/<id>` request body (checked
/// at start, errors naming `queries.presets.<id>`).
pub type PresetQuery = serde_json::Value;

/// `[fusion]`: the fused stream `embedding/fused`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    pub enabled: bool,
    /// Seconds after a window's first embedding before it is fused with the streams
    /// that have reported (0: wait for every active stream).
    pub deadline_s: f64,
    /// A stream is expected in a window when it reported within this many seconds.
    pub active_s: f64,
    /// Weight of each modality in the sum (missing: 1; 0 leaves the modality out).
    #[serde(default)]
    pub weights: BTreeMap<Modality, f32>,
}

impl FusionConfig {
    pub fn weight(&self, m: Modality) -> f32 {
        self.weights.get(&m).copied().unwrap_or(1.0)
    }
}

/// `[history]`: every embedding kept on disk for search and examples.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    pub enabled: bool,
    /// How far back embeddings are kept: a duration such as "6h", "90m", "2d".
    pub retention: String,
    /// At most this much disk: bytes, or "512MiB", "2GiB", "1GB".
    pub max_bytes: String,
    /// Each file of the history covers this many seconds (the unit of expiry).
    pub segment_s: f64,
    /// Written data is flushed to disk (fdatasync) at least this often.
    pub sync_s: f64,
    /// Largest `k` a search may ask for.
    pub max_k: usize,
    /// Searches from the bus: this many per second on average, in bursts of `search_burst`.
    pub searches_per_s: f64,
    pub search_burst: u32,
}

impl HistoryConfig {
    /// `retention` in nanoseconds.
    pub fn retention_ns(&self) -> Result<i64, ConfigError> {
        parse_duration_ns(&self.retention).map_err(|e| ConfigError::Invalid(format!("`history.retention`: {e}")))
    }
    /// `max_bytes` in bytes.
    pub fn max_bytes(&self) -> Result<u64, ConfigError> {
        parse_bytes(&self.max_bytes).map_err(|e| ConfigError::Invalid(format!("`history.max_bytes`: {e}")))
    }
}

/// A number with an optional unit (`6h`, `512MiB`): the number times the unit's
/// multiplier from `units` (the empty unit included), or an error showing `examples`.
fn quantity(s: &str, units: &[(&str, f64)], examples: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let unit = unit.trim();
    let Some((_, mult)) = units.iter().find(|(u, _)| *u == unit) else {
        let names: Vec<&str> = units.iter().map(|(u, _)| *u).filter(|u| !u.is_empty()).collect();
        return Err(format!(
            "unknown unit `{unit}` in `{s}` (expected one of {}, e.g. {examples})",
            names.join(", ")
        ));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a value such as {examples}, got `{s}`"))?;
    Ok(v * mult)
}

/// A duration such as `90s`, `15m`, `6h`, `2d` (or plain seconds) in nanoseconds.
pub fn parse_duration_ns(s: &str) -> Result<i64, String> {
    const UNITS: &[(&str, f64)] = &[
        ("", 1.0),
        ("s", 1.0),
        ("ms", 1e-3),
        ("m", 60.0),
        ("min", 60.0),
        ("h", 3600.0),
        ("d", 86400.0),
    ];
    let ns = quantity(s, UNITS, "\"90s\", \"15m\", \"6h\" or \"2d\"")? * 1e9;
    if !(ns.is_finite() && ns > 0.0 && ns < 1e18) {
        return Err(format!("expected a positive duration of at most 31 years, got `{s}`"));
    }
    Ok(ns as i64)
}

/// A size such as `1048576`, `512MiB`, `2GiB`, `1GB`, `800kB` in bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    const UNITS: &[(&str, f64)] = &[
        ("", 1.0),
        ("B", 1.0),
        ("kB", 1e3),
        ("KB", 1e3),
        ("MB", 1e6),
        ("GB", 1e9),
        ("KiB", 1024.0),
        ("MiB", 1048576.0),
        ("GiB", 1073741824.0),
    ];
    let b = quantity(s, UNITS, "\"512MiB\" or \"2GiB\"")?;
    if !(b.is_finite() && (1.0..1e18).contains(&b)) {
        return Err(format!("expected a positive size, got `{s}`"));
    }
    Ok(b as u64)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub interval_s: f64,
    pub stall_s: f64,
}

impl Config {
    /// Layer built-in defaults, an optional user file and the environment.
    pub fn load(user_file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(user_file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        user_file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let user = match user_file {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist or is not a file",
                        p.display()
                    )));
                }
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File {
                    path: p.to_path_buf(),
                    cause: e.to_string(),
                })?;
                Some((p.to_path_buf(), text))
            }
            None => None,
        };
        Self::layered(user, vars)
    }

    /// A user config given as TOML text (named `name` in errors), over the built-in
    /// defaults, without the environment: what `load` does with a file.
    pub fn from_toml_str(name: &str, text: &str) -> Result<Config, ConfigError> {
        Self::layered(Some((PathBuf::from(name), text.to_string())), Vec::new())
    }

    fn layered(
        user: Option<(PathBuf, String)>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // A user file that writes `[labels.sets]` replaces the default label sets (the
        // digits of the demo world) instead of adding to them.
        let user_sets = user
            .as_ref()
            .and_then(|(_, t)| t.parse::<toml::Table>().ok())
            .is_some_and(|t| t.get("labels").and_then(|l| l.get("sets")).is_some());
        let base = if user_sets {
            let mut t: toml::Table = DEFAULT_TOML.parse().expect("configs/default.toml is valid TOML");
            if let Some(toml::Value::Table(l)) = t.get_mut("labels") {
                l.remove("sets");
            }
            toml::to_string(&t).expect("a TOML table serialises")
        } else {
            DEFAULT_TOML.to_string()
        };
        let mut b = config::Config::builder().add_source(config::File::from_str(&base, config::FileFormat::Toml));
        if let Some((path, text)) = &user {
            // Parse the file alone first so a syntax error names the file; the TOML
            // parser's error shows the line (and so the key) of a value no key can
            // hold, such as an integer beyond 64 bits.
            text.parse::<toml::Table>().map_err(|e| ConfigError::File {
                path: path.clone(),
                cause: e.to_string(),
            })?;
            config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml))
                .build()
                .map_err(|e| ConfigError::File {
                    path: path.clone(),
                    cause: e.to_string(),
                })?;
            b = b.add_source(config::File::from_str(text, config::FileFormat::Toml));
        } else {
            b = b.add_source(config::File::from_str(DEMO_TOML, config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = vars.into_iter().filter(|(k, _)| k.starts_with("SENSEBIND__")).collect();
        b = b.add_source(
            config::Environment::with_prefix("SENSEBIND")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("engine.providers")
                .with_list_parse_key("bus.listen")
                .with_list_parse_key("bus.connect")
                .source(Some(env)),
        );
        let cfg: Config = b.build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The robot id: configured, else the host name.
    pub fn robot_id(&self) -> String {
        if !self.robot.id.is_empty() {
            return self.robot.id.clone();
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let clean: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if clean.is_empty() {
            "robot".into()
        } else {
            clean
        }
    }

    /// Where registered queries and engine caches live.
    pub fn state_dir(&self) -> PathBuf {
        if !self.robot.state_dir.is_empty() {
            return PathBuf::from(&self.robot.state_dir);
        }
        if let Ok(d) = std::env::var("STATE_DIRECTORY") {
            if let Some(first) = d.split(':').next() {
                return PathBuf::from(first);
            }
        }
        if let Ok(d) = std::env::var("XDG_STATE_HOME") {
            return PathBuf::from(d).join("sensebind");
        }
        if let Ok(h) = std::env::var("HOME") {
            return PathBuf::from(h).join(".local/state/sensebind");
        }
        PathBuf::from("sensebind-state")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_load() {
        let demo = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(
            demo.sources.keys().collect::<Vec<_>>(),
            ["camera", "depth", "imu", "microphone", "thermal"]
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let robot = Config::load_with_env(Some(&root.join("launch/robot.toml")), Vec::new()).unwrap();
        assert_eq!(
            robot.sources.keys().collect::<Vec<_>>(),
            ["depth", "front", "imu", "mic"]
        );
    }

    #[test]
    fn a_user_file_lists_exactly_its_sources() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n").unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(
            c.sources.keys().collect::<Vec<_>>(),
            ["mic"],
            "the demo's sources are not a base layer"
        );
        std::fs::write(
            &p,
            "[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\nfsp = 3\n",
        )
        .unwrap();
        let e = Config::load_with_env(Some(&p), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("sources.mic") && e.contains("fsp"), "{e}");
        let env = vec![("SENSEBIND__SOURCES__MIC__CHUNK_MS".to_string(), "5000".to_string())];
        std::fs::write(&p, "[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n").unwrap();
        let e = Config::load_with_env(Some(&p), env).unwrap_err().to_string();
        assert!(e.contains("`sources.mic.chunk_ms`"), "{e}");
    }

    #[test]
    fn overload_settings_load_and_bad_ones_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let mic = "[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n";
        let demo = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!((demo.engine.concurrency, demo.engine.max_wait_s), (1, 10.0));
        assert_eq!(demo.engine.budget(Modality::Vision), ModalityBudget::default());
        std::fs::write(
            &p,
            format!("{mic}[engine.modalities.audio]\npriority = 3\n[engine.modalities.vision]\nmax_rate_hz = 0.25\n"),
        )
        .unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(c.engine.budget(Modality::Audio).priority, 3);
        assert_eq!(
            c.engine.budget(Modality::Audio).max_rate_hz,
            0.0,
            "the default's other key stays"
        );
        assert_eq!(c.engine.budget(Modality::Vision).max_rate_hz, 0.25);
        for (text, key) in [
            (
                "[engine.modalities.vision]\nmax_rate_hz = -1.0\n",
                "`engine.modalities.vision.max_rate_hz`",
            ),
            (
                "[engine.modalities.imu]\npriority = 5000\n",
                "`engine.modalities.imu.priority`",
            ),
            ("[engine.modalities.text]\npriority = 1\n", "`engine.modalities.text`"),
            ("[engine]\nmax_wait_s = -2.0\n", "`engine.max_wait_s`"),
            ("[engine]\nconcurrency = 1000\n", "`engine.concurrency`"),
            ("[engine.modalities.visoin]\npriority = 1\n", "visoin"),
            ("[engine.modalities.vision]\npriorty = 1\n", "priorty"),
        ] {
            std::fs::write(&p, format!("{mic}{text}")).unwrap();
            let e = Config::load_with_env(Some(&p), Vec::new()).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn user_label_sets_replace_the_digit_defaults_and_presets_register() {
        let demo = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(demo.labels.sets[&Modality::Audio].len(), 10, "the digits by default");
        assert_eq!(demo.queries.presets["seven"]["text"], "the number seven");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[labels.sets.vision]\ndog = [\"a dog\"]\n[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(c.labels.sets.len(), 1, "a user's sets replace all default sets");
        assert_eq!(c.labels.sets[&Modality::Vision].keys().collect::<Vec<_>>(), ["dog"]);
        assert!(c.queries.presets.is_empty(), "presets are the demo's, not a base layer");
        std::fs::write(&p, "[sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n").unwrap();
        let c = Config::load_with_env(Some(&p), Vec::new()).unwrap();
        assert_eq!(
            c.labels.sets[&Modality::Imu].len(),
            10,
            "no sets written: the defaults stay"
        );
    }

    #[test]
    fn durations_and_sizes_read_with_their_units() {
        assert_eq!(parse_duration_ns("6h").unwrap(), 6 * 3600 * 1_000_000_000);
        assert_eq!(parse_duration_ns(" 90 s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration_ns("1.5").unwrap(), 1_500_000_000);
        assert!(parse_duration_ns("2w").unwrap_err().contains("unknown unit `w`"));
        assert!(parse_duration_ns("-1h").unwrap_err().contains("positive"));
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("800kB").unwrap(), 800_000);
        assert!(parse_bytes("lots").unwrap_err().contains("unknown unit `lots`"));
        assert!(parse_bytes("0").unwrap_err().contains("positive"));
    }
}
