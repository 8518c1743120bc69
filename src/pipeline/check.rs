//! `sensebind check`: load everything the daemon would (configuration, ONNX Runtime,
//! model pack, sources) without running it, and say what was found. It is also the
//! machine's doctor: which ONNX Runtime and execution providers, the TensorRT engine
//! cache, what the pack's encoders weigh and a memory estimate for the configured
//! modalities against the memory the machine has. One [`CheckReport`] is printed as
//! lines or, with `--json`, as one object.

use super::{build_sources, modalities_of, BuiltSource, Models, PipelineError};
use crate::config::{Config, Provider};
use crate::engine::ort_backend;
use crate::modality::Modality;
use crate::pack::weights::WeightStats;
use crate::pack::Pack;
use crate::sources::StopFlag;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The memory model of [`Estimate`] for the CPU provider and an fp32 pack: the
/// daemon without encoders, plus per encoder a fixed share (session, arena, threads),
/// plus vision's larger activations (three crops of two frames), plus the weights
/// times [`CPU_WEIGHT_FACTOR`] (ONNX Runtime holds them as loaded and pre-packs the
/// GEMM weights again). Fitted (least relative squares) to the peak RSS of runs of
/// `tools/measure_memory.py` with MiniBind and the ViT-B-sized `mid` random-init pack
/// of the official architecture, one to six encoders: within 10 % of them; for the
/// `huge` pack it over-estimates by 13–24 % (the safe side). docs/jetson.md, "Memory".
pub const CPU_BASE_BYTES: u64 = 60 << 20;
pub const CPU_ENCODER_BYTES: u64 = 15 << 20;
pub const CPU_VISION_BYTES: u64 = 44 << 20;
pub const CPU_WEIGHT_FACTOR: f64 = 1.55;
/// The GPU model (TensorRT fp16; on Jetson the GPU's memory is the system's): the
/// CUDA, cuDNN and TensorRT libraries and contexts, plus the fp16 engines (weights at
/// 2 bytes, times [`GPU_ENGINE_FACTOR`] for the engines' own layout and workspace),
/// plus the CPU model's per-encoder share (the host side). From NVIDIA's published
/// overheads, not measured here (no TensorRT on this project's machines):
/// docs/jetson.md says so.
pub const GPU_RUNTIME_BYTES: u64 = 1200 << 20;
pub const GPU_ENGINE_FACTOR: f64 = 1.5;

/// Everything `check` found. Printed as lines ([`CheckReport::lines`]) or as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// True when nothing failed.
    pub ok: bool,
    pub config: Option<ConfigInfo>,
    pub onnxruntime: Option<OrtInfo>,
    /// Every provider sensebind knows, and whether this ONNX Runtime build has it
    /// (empty when the library could not be loaded).
    pub providers: Vec<ProviderInfo>,
    /// `engine.providers`, in priority order.
    pub configured_providers: Vec<Provider>,
    pub engine_cache: Option<EngineCache>,
    pub pack: Option<PackReport>,
    pub memory: Option<MemoryReport>,
    pub sources: Vec<SourceReport>,
    pub bus: Option<String>,
    /// What failed, each naming the file, key, variable or source.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    pub robot_id: String,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrtInfo {
    pub library: PathBuf,
    /// e.g. "1.31.1", from the library's build information.
    pub version: String,
    pub build_info: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderInfo {
    pub name: String,
    pub available: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineCache {
    /// `engine.trt_engine_cache`, else `<state_dir>/trt-cache`.
    pub dir: PathBuf,
    /// Whether TensorRT is configured and in this ONNX Runtime build (else the cache
    /// is not used).
    pub used: bool,
    pub exists: bool,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub name: String,
    pub location: String,
    pub encoders: Vec<EncoderReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EncoderReport {
    pub modality: Modality,
    /// Loaded by `check` because a configured source (or text, always) needs it.
    pub configured: bool,
    pub dim: usize,
    pub input_shape: Vec<usize>,
    /// Its weights (ONNX initializers), or why they could not be read.
    pub weights: Option<WeightStats>,
    pub weights_error: Option<String>,
    /// The providers registered for it, in priority order (loaded encoders only).
    pub provider: Option<String>,
    /// Graph nodes each provider ran in the warm-up (loaded encoders only).
    pub nodes: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// The machine's MemTotal and MemAvailable (/proc/meminfo).
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    /// The configured modalities' encoders (text always).
    pub modalities: Vec<Modality>,
    pub estimate: Estimate,
}

/// What the configured encoders need, computed from their weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Estimate {
    /// Weight bytes as the pack stores them.
    pub weights_bytes: u64,
    /// The same weights were the pack fp32, and fp16.
    pub weights_fp32_bytes: u64,
    pub weights_fp16_bytes: u64,
    /// Daemon RSS on the CPU provider with an fp32 pack.
    pub cpu_fp32_rss_bytes: u64,
    /// Memory with TensorRT fp16 engines (host + GPU; one pool on Jetson).
    pub gpu_fp16_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub id: String,
    pub kind: String,
    pub description: String,
    pub streams: Vec<Modality>,
    pub clock: Option<String>,
    /// None: not opened by `check` (a `ros2` source needs the robot's bus).
    pub ok: Option<bool>,
    pub error: Option<String>,
}

/// The estimate for encoders with these weights.
pub fn estimate(weights: &[(Modality, &WeightStats)]) -> Estimate {
    let mut e = Estimate::default();
    let mut cpu = CPU_BASE_BYTES as f64;
    let mut gpu = GPU_RUNTIME_BYTES as f64;
    for (m, w) in weights {
        e.weights_bytes += w.bytes;
        e.weights_fp32_bytes += w.bytes_as(4);
        e.weights_fp16_bytes += w.bytes_as(2);
        let fixed = (CPU_ENCODER_BYTES + if *m == Modality::Vision { CPU_VISION_BYTES } else { 0 }) as f64;
        cpu += fixed + w.bytes_as(4) as f64 * CPU_WEIGHT_FACTOR;
        gpu += fixed + w.bytes_as(2) as f64 * GPU_ENGINE_FACTOR;
    }
    e.cpu_fp32_rss_bytes = cpu as u64;
    e.gpu_fp16_bytes = gpu as u64;
    e
}

/// Check `cfg`. A step that fails ends the check (sources aside: their errors are
/// collected); what was found before it is kept.
pub fn check(cfg: &Config) -> CheckReport {
    let mut r = CheckReport::default();
    if let Err(e) = steps(cfg, &mut r) {
        r.failed.push(e.to_string());
    }
    r.ok = r.failed.is_empty();
    r
}

fn steps(cfg: &Config, r: &mut CheckReport) -> Result<(), PipelineError> {
    r.config = Some(ConfigInfo {
        robot_id: cfg.robot_id(),
        state_dir: cfg.state_dir(),
    });
    r.configured_providers = cfg.engine.providers.clone();
    // The pack and what it weighs need no ONNX Runtime: reported even when it is missing.
    let pack = Pack::load(&cfg.pack.path)?;
    // Sources that cannot be built (none configured, a bad key) are reported and the
    // check goes on, so one run names every problem (the runtime too).
    let built = match build_sources(cfg, &StopFlag::default()) {
        Ok(b) => b,
        Err(e) => {
            r.failed.push(e.to_string());
            Vec::new()
        }
    };
    let mut wanted = modalities_of(&built);
    if !wanted.contains(&Modality::Text) {
        wanted.push(Modality::Text);
    }
    wanted.sort();
    r.pack = Some(pack_report(&pack, &wanted));
    r.memory = Some(memory_report(r.pack.as_ref().map_or(&[][..], |p| &p.encoders), &wanted));

    let ort = ort_backend::library_path(&cfg.engine.ort_library);
    let runtime = ort.and_then(|lib| ort_backend::init_runtime(&cfg.engine.ort_library).map(|_| lib));
    // On failure, which providers it has is unknown: `providers` stays empty.
    let lib = runtime?;
    let build_info = ort_backend::build_info();
    r.onnxruntime = Some(OrtInfo {
        version: ort_backend::library_version(&lib).unwrap_or_else(|| ort_version(&build_info)),
        library: lib,
        build_info,
    });
    r.providers = ort_backend::available_providers()
        .into_iter()
        .map(|(n, ok)| ProviderInfo {
            name: n.to_string(),
            available: ok,
        })
        .collect();
    let trt = r.providers.iter().any(|p| p.name == "tensorrt" && p.available);
    let dir = if cfg.engine.trt_engine_cache.is_empty() {
        cfg.state_dir().join("trt-cache")
    } else {
        PathBuf::from(&cfg.engine.trt_engine_cache)
    };
    let (files, bytes) = dir_size(&dir);
    r.engine_cache = Some(EngineCache {
        used: trt && cfg.engine.providers.contains(&Provider::Tensorrt),
        exists: dir.is_dir(),
        dir,
        files,
        bytes,
    });

    let models = Models::load(cfg, &modalities_of(&built))?;
    if let Some(p) = r.pack.as_mut() {
        for e in p.encoders.iter_mut() {
            if let Some(enc) = models.encoders.get(&e.modality) {
                e.provider = Some(enc.provider().to_string());
                e.nodes = enc.nodes_per_provider().into_iter().collect();
            }
        }
    }
    for BuiltSource {
        config,
        source: mut src,
        ..
    } in built
    {
        let info = src.info();
        let mut s = SourceReport {
            id: config.id.clone(),
            kind: config.kind.clone(),
            description: info.description.clone(),
            streams: info.streams.iter().map(|s| s.modality).collect(),
            clock: None,
            ok: None,
            error: None,
        };
        if config.kind != "ros2" {
            // A ros2 source needs the robot's bus, which `check` does not join.
            match src.open() {
                Ok(()) => {
                    s.ok = Some(true);
                    s.clock = Some(src.clock().kind().to_string());
                }
                Err(e) => {
                    s.ok = Some(false);
                    s.error = Some(e.to_string());
                    r.failed.push(format!("source {}: {e}", config.id));
                }
            }
        }
        r.sources.push(s);
    }
    r.bus = Some(format!(
        "{}/{} mode {:?} listen {:?} connect {:?}",
        cfg.bus.prefix,
        cfg.robot_id(),
        cfg.bus.mode,
        cfg.bus.listen,
        cfg.bus.connect
    ));
    Ok(())
}

fn pack_report(pack: &Pack, wanted: &[Modality]) -> PackReport {
    let encoders = Modality::ALL
        .into_iter()
        .filter_map(|m| {
            let spec = pack.spec(m)?;
            let (weights, weights_error) = match pack.weights(m) {
                Ok(w) => (Some(w), None),
                Err(e) => (None, Some(e)),
            };
            Some(EncoderReport {
                modality: m,
                configured: wanted.contains(&m),
                dim: spec.dim,
                input_shape: spec.input_shape.clone(),
                weights,
                weights_error,
                provider: None,
                nodes: BTreeMap::new(),
            })
        })
        .collect();
    PackReport {
        name: pack.name().to_string(),
        location: pack.location.clone(),
        encoders,
    }
}

fn memory_report(encoders: &[EncoderReport], wanted: &[Modality]) -> MemoryReport {
    let weights: Vec<(Modality, &WeightStats)> = encoders
        .iter()
        .filter(|e| e.configured)
        .filter_map(|e| e.weights.as_ref().map(|w| (e.modality, w)))
        .collect();
    let (total_bytes, available_bytes) = meminfo();
    MemoryReport {
        total_bytes,
        available_bytes,
        modalities: wanted.to_vec(),
        estimate: estimate(&weights),
    }
}

/// Where the library does not say: "ORT Build Info: git-branch=rel-1.31.1, ..." → "1.31.1".
fn ort_version(info: &str) -> String {
    info.split([',', ' '])
        .find_map(|w| w.strip_prefix("git-branch=rel-"))
        .map_or_else(|| "unknown (see build_info)".to_string(), str::to_string)
}

/// MemTotal and MemAvailable from /proc/meminfo, in bytes.
fn meminfo() -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (get("MemTotal:"), get("MemAvailable:"))
}

/// Files and bytes under `dir` (0, 0 when it does not exist).
fn dir_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl CheckReport {
    /// The report as lines, the form `sensebind check` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut l = Vec::new();
        if let Some(c) = &self.config {
            l.push(format!(
                "config: ok (robot id `{}`, state dir {})",
                c.robot_id,
                c.state_dir.display()
            ));
        }
        match &self.onnxruntime {
            Some(o) => l.push(format!("onnxruntime: {} (version {})", o.library.display(), o.version)),
            None => l.push("onnxruntime: not loaded (see the error below)".to_string()),
        }
        if !self.providers.is_empty() {
            let provs: Vec<String> = self
                .providers
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.name,
                        if p.available { "available" } else { "not in this build" }
                    )
                })
                .collect();
            l.push(format!(
                "execution providers: {} (configured order: {})",
                provs.join(", "),
                serde_json::to_string(&self.configured_providers).unwrap_or_default()
            ));
        }
        if let Some(c) = &self.engine_cache {
            l.push(format!(
                "tensorrt engine cache: {} ({}; {} files, {})",
                c.dir.display(),
                if !c.used {
                    "not used: TensorRT is not configured or not in this ONNX Runtime build"
                } else if c.exists {
                    "in use"
                } else {
                    "empty: engines are built at the first start"
                },
                c.files,
                mib(c.bytes)
            ));
        }
        if let Some(p) = &self.pack {
            l.push(format!("pack: {} ({})", p.name, p.location));
            for e in &p.encoders {
                let weights = match (&e.weights, &e.weights_error) {
                    (Some(w), _) => {
                        let types: Vec<String> = w.params_by_dtype.keys().cloned().collect();
                        format!(
                            "weights={} ({:.2} M params, {})",
                            mib(w.bytes),
                            w.params as f64 / 1e6,
                            types.join("+")
                        )
                    }
                    (None, Some(err)) => format!("weights=unreadable ({err})"),
                    (None, None) => String::new(),
                };
                let run = match &e.provider {
                    Some(p) => {
                        let nodes: Vec<String> = e.nodes.iter().map(|(p, n)| format!("{p}:{n}")).collect();
                        format!(" provider={p} nodes={}", nodes.join(","))
                    }
                    None if e.configured => String::new(),
                    None => " (not configured)".to_string(),
                };
                l.push(format!(
                    "  {:<8} dim={} input={:?} {weights}{run}",
                    e.modality.to_string(),
                    e.dim,
                    e.input_shape
                ));
            }
        }
        if let Some(m) = &self.memory {
            let mods: Vec<String> = m.modalities.iter().map(|m| m.to_string()).collect();
            let e = &m.estimate;
            l.push(format!(
                "memory: encoders {} weigh {} as packed ({} as fp32, {} as fp16); estimate: CPU fp32 RSS {}, TensorRT fp16 {} (host + GPU)",
                mods.join("+"),
                mib(e.weights_bytes),
                mib(e.weights_fp32_bytes),
                mib(e.weights_fp16_bytes),
                mib(e.cpu_fp32_rss_bytes),
                mib(e.gpu_fp16_bytes)
            ));
            if let (Some(t), Some(a)) = (m.total_bytes, m.available_bytes) {
                l.push(format!("machine memory: {} available of {}", mib(a), mib(t)));
            }
        }
        for s in &self.sources {
            let streams: Vec<String> = s.streams.iter().map(|m| m.to_string()).collect();
            l.push(match (s.ok, &s.error) {
                (None, _) => format!(
                    "source {}: {} (subscribes when the daemon runs; `check` does not join the bus)",
                    s.id, s.description
                ),
                (Some(true), _) => format!(
                    "source {}: ok ({}; streams {}; clock {})",
                    s.id,
                    s.description,
                    streams.join(", "),
                    s.clock.as_deref().unwrap_or("?")
                ),
                (Some(false), e) => format!("source {}: FAILED: {}", s.id, e.as_deref().unwrap_or("")),
            });
        }
        if let Some(b) = &self.bus {
            l.push(format!("bus: {b}"));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(float32: u64, int8: u64) -> WeightStats {
        let mut s = WeightStats {
            tensors: 1,
            params: float32 + int8,
            bytes: float32 * 4 + int8,
            other_bytes: int8,
            ..Default::default()
        };
        s.params_by_dtype.insert("float32".into(), float32);
        if int8 > 0 {
            s.params_by_dtype.insert("int8".into(), int8);
        }
        s
    }

    #[test]
    fn the_estimate_adds_each_encoder_to_the_base() {
        assert_eq!(estimate(&[]).cpu_fp32_rss_bytes, CPU_BASE_BYTES);
        assert_eq!(estimate(&[]).gpu_fp16_bytes, GPU_RUNTIME_BYTES);
        let big = w(100_000_000, 0);
        let e = estimate(&[(Modality::Audio, &big)]);
        assert_eq!(e.weights_bytes, 400_000_000);
        assert_eq!(e.weights_fp32_bytes, 400_000_000);
        assert_eq!(e.weights_fp16_bytes, 200_000_000);
        let cpu = (CPU_BASE_BYTES + CPU_ENCODER_BYTES) as f64 + 400e6 * CPU_WEIGHT_FACTOR;
        assert_eq!(e.cpu_fp32_rss_bytes, cpu as u64);
        let gpu = (GPU_RUNTIME_BYTES + CPU_ENCODER_BYTES) as f64 + 200e6 * GPU_ENGINE_FACTOR;
        assert_eq!(e.gpu_fp16_bytes, gpu as u64);
        // A quantised pack: int8 weights stay one byte in either estimate.
        let q = w(1_000_000, 99_000_000);
        let e = estimate(&[(Modality::Vision, &q)]);
        assert_eq!(e.weights_bytes, 4_000_000 + 99_000_000);
        assert_eq!(e.weights_fp16_bytes, 2_000_000 + 99_000_000);
        let vision = (CPU_BASE_BYTES + CPU_ENCODER_BYTES + CPU_VISION_BYTES) as f64 + 103e6 * CPU_WEIGHT_FACTOR;
        assert_eq!(e.cpu_fp32_rss_bytes, vision as u64);
    }

    #[test]
    fn the_version_is_read_from_the_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(ort_version(info), "1.31.1");
        assert!(ort_version("something else").starts_with("unknown"));
    }

    #[test]
    fn a_missing_cache_directory_is_empty() {
        assert_eq!(dir_size(Path::new("/nonexistent/trt-cache")), (0, 0));
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a.engine"), [0u8; 10]).unwrap();
        std::fs::write(d.path().join("sub/b.timing"), [0u8; 5]).unwrap();
        assert_eq!(dir_size(d.path()), (2, 15));
    }
}
