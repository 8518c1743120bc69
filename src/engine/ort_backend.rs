//! ONNX Runtime backend (`ort`, loaded dynamically from `libonnxruntime.so`).

use super::{l2_normalise, Encoder, EngineError};
use crate::config::{EngineConfig, Provider};
use crate::modality::Modality;
use crate::pack::{Dtype, EncoderSpec, ModelSource, Pack};
use crate::preprocess::ModelInput;
use ort::ep::{ExecutionProvider, TensorRT, CPU, CUDA};
use ort::session::Session;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

static ENV: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// Log each provider fallback once per process, not once per encoder.
fn warn_fallback_once(provider: &'static str, reason: &str) {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&provider) {
        seen.push(provider);
        tracing::warn!(
            event = crate::telemetry::names::PROVIDER_FALLBACK,
            provider,
            reason,
            "execution provider unusable; falling back to the next configured one"
        );
    }
}

/// Where libonnxruntime is: the config value, else `ORT_DYLIB_PATH`.
pub fn library_path(cfg_path: &str) -> Result<PathBuf, EngineError> {
    let p = if !cfg_path.is_empty() {
        PathBuf::from(cfg_path)
    } else if let Some(v) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        PathBuf::from(v)
    } else {
        return Err(EngineError::Runtime(
            "ONNX Runtime library not configured: set the ORT_DYLIB_PATH environment variable (for the packaged \
             service: in /etc/default/sensebind) or `engine.ort_library` to libonnxruntime.so \
             (e.g. `pip install onnxruntime==1.31.1`, then .../site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)"
                .into(),
        ));
    };
    if !p.is_file() {
        return Err(EngineError::Runtime(format!(
            "ONNX Runtime library not found at {}: point the ORT_DYLIB_PATH environment variable (for the packaged \
             service: in /etc/default/sensebind) or `engine.ort_library` at libonnxruntime.so \
             (pip install onnxruntime==1.31.1 puts it in site-packages/onnxruntime/capi/)",
            p.display()
        )));
    }
    Ok(p)
}

/// Load ONNX Runtime once per process. Later calls return the first result.
pub fn init_runtime(cfg_path: &str) -> Result<&'static ort::environment::Environment, EngineError> {
    let r = ENV.get_or_init(|| {
        let path = library_path(cfg_path).map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {}: {e} (expected libonnxruntime.so of version >= 1.31)",
                path.display()
            )
        })?;
        let env = builder
            .with_name("sensebind")
            .build()
            .map_err(|e| format!("ONNX Runtime at {} failed to start: {e}", path.display()))?;
        Ok((env, path))
    });
    match r {
        Ok((env, _)) => Ok(env),
        Err(e) => Err(EngineError::Runtime(e.clone())),
    }
}

/// The loaded ONNX Runtime's build information ("ORT Build Info: git-branch=rel-1.31.1,
/// ..."); call after [`init_runtime`] succeeded.
pub fn build_info() -> String {
    ort::info().to_string()
}

/// The version of the ONNX Runtime library at `path` (e.g. "1.31.1"), from its C API's
/// `GetVersionString`; call after [`init_runtime`] loaded it (the handle is shared).
pub fn library_version(path: &Path) -> Option<String> {
    type GetBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `path` is the ONNX Runtime library `init_runtime` already loaded and
    // initialised (ort checked its `OrtGetApiBase`), so opening it again returns the
    // same handle; `OrtGetApiBase` and `GetVersionString` are its C entry points, the
    // pointers are checked for null, and the string is static and NUL-terminated.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<GetBase> = lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let s = ((*base).GetVersionString)();
        if s.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}

/// Which of the configured providers this ONNX Runtime build has.
pub fn available_providers() -> Vec<(&'static str, bool)> {
    vec![
        ("tensorrt", TensorRT::is_available().unwrap_or(false)),
        ("cuda", CUDA::is_available().unwrap_or(false)),
        ("cpu", true),
    ]
}

/// Concatenate a batch of same-typed inputs of `per` values each; on a mismatch,
/// the offending input's length.
fn gather<T: Clone>(
    batch: &[ModelInput],
    per: usize,
    get: impl Fn(&ModelInput) -> Option<&[T]>,
) -> Result<Vec<T>, usize> {
    let mut data = Vec::with_capacity(per * batch.len());
    for b in batch {
        match get(b) {
            Some(v) if v.len() == per => data.extend_from_slice(v),
            _ => return Err(b.len()),
        }
    }
    Ok(data)
}

pub struct OrtEncoder {
    modality: Modality,
    spec: EncoderSpec,
    /// The providers registered, in priority order, comma-separated.
    provider: String,
    /// Graph nodes per provider in the warm-up run.
    nodes: Vec<(String, usize)>,
    session: Mutex<Session>,
}

impl OrtEncoder {
    /// Create a session for `modality` from `pack`, trying providers in order.
    pub fn load(
        pack: &Pack,
        modality: Modality,
        cfg: &EngineConfig,
        cache_dir: &Path,
    ) -> Result<OrtEncoder, EngineError> {
        let env = init_runtime(&cfg.ort_library)?;
        let spec = pack.spec(modality).cloned().ok_or_else(|| EngineError::Load {
            modality,
            model: pack.location.clone(),
            reason: format!("the pack has no `[{modality}]` encoder"),
        })?;
        let model = format!("{}/{}", pack.location, spec.file);
        let lerr = |reason: String| EngineError::Load {
            modality,
            model: model.clone(),
            reason,
        };
        let mut builder = Session::builder(env).map_err(|e| lerr(e.to_string()))?;
        if cfg.intra_threads > 0 {
            builder = builder
                .with_intra_threads(cfg.intra_threads)
                .map_err(|e| lerr(e.to_string()))?;
        }
        // Every configured provider that registers is kept, in priority order: ONNX
        // Runtime gives each node to the first provider that can run it (TensorRT takes
        // what it can, CUDA the rest, the CPU whatever neither has a kernel for).
        let mut registered: Vec<&'static str> = Vec::new();
        for p in &cfg.providers {
            let (name, dispatch) = match p {
                Provider::Tensorrt => {
                    let dir = if cfg.trt_engine_cache.is_empty() {
                        cache_dir.join("trt-cache")
                    } else {
                        PathBuf::from(&cfg.trt_engine_cache)
                    };
                    let (min, opt, max) = trt_profile_shapes(&spec, modality, cfg.max_batch);
                    let ep = TensorRT::default()
                        .with_device_id(cfg.device_id)
                        .with_fp16(cfg.trt_fp16)
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(dir.display())
                        .with_profile_min_shapes(min)
                        .with_profile_opt_shapes(opt)
                        .with_profile_max_shapes(max);
                    if TensorRT::is_available().unwrap_or(false) {
                        let _ = std::fs::create_dir_all(&dir);
                    }
                    ("TensorrtExecutionProvider", ep.build().error_on_failure())
                }
                Provider::Cuda => (
                    "CUDAExecutionProvider",
                    CUDA::default().with_device_id(cfg.device_id).build().error_on_failure(),
                ),
                Provider::Cpu => ("CPUExecutionProvider", CPU::default().build().error_on_failure()),
            };
            let compiled_in = match p {
                Provider::Tensorrt => TensorRT::is_available().unwrap_or(false),
                Provider::Cuda => CUDA::is_available().unwrap_or(false),
                Provider::Cpu => true,
            };
            if !compiled_in {
                warn_fallback_once(name, "not in this ONNX Runtime build");
                continue;
            }
            match dispatch.register(&mut builder) {
                Ok(()) => registered.push(name),
                Err(e) => warn_fallback_once(name, &e.to_string()),
            }
        }
        // ONNX Runtime always keeps the CPU provider as the last resort.
        if !registered.contains(&"CPUExecutionProvider") {
            registered.push("CPUExecutionProvider");
        }
        let provider = registered.join(",");
        // Profile the warm-up run only: its trace says which provider got each node.
        // The trace is written in a private directory of the state directory (never a
        // shared /tmp) and removed after the warm-up; traces a killed daemon left
        // behind are removed at the next start.
        let (mut builder, profiling) = match profile_dir(cache_dir) {
            Some(dir) => {
                let prefix = dir.join(format!("{PROFILE_PREFIX}{}-{modality}", std::process::id()));
                match builder.with_profiling(&prefix) {
                    Ok(b) => (b, true),
                    Err(e) => (e.recover(), false),
                }
            }
            None => (builder, false),
        };
        let session = match pack.models.get(&modality) {
            Some(ModelSource::File(f)) => builder.commit_from_file(f),
            Some(ModelSource::Embedded(bytes)) => builder.commit_from_memory(bytes),
            None => return Err(lerr("no model file".into())),
        }
        .map_err(|e| lerr(e.to_string()))?;
        if !session.inputs().iter().any(|i| i.name() == spec.input) {
            let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            return Err(lerr(format!(
                "manifest says input `{}`, the model has {names:?}",
                spec.input
            )));
        }
        if !session.outputs().iter().any(|o| o.name() == spec.output) {
            let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            return Err(lerr(format!(
                "manifest says output `{}`, the model has {names:?}",
                spec.output
            )));
        }
        let mut enc = OrtEncoder {
            modality,
            spec,
            provider,
            nodes: Vec::new(),
            session: Mutex::new(session),
        };
        enc.warm_up(profiling).map_err(lerr)?;
        let nodes: Vec<String> = enc.nodes.iter().map(|(p, n)| format!("{p}={n}")).collect();
        tracing::info!(
            event = crate::telemetry::names::ENCODER_LOADED,
            modality = %modality,
            provider = %enc.provider,
            nodes = %nodes.join(","),
            dim = enc.spec.dim,
            "encoder ready"
        );
        Ok(enc)
    }

    /// One batch-1 run on zeros before the first window: ONNX Runtime sizes its arena,
    /// TensorRT builds its engines (minutes the first time; its engine cache makes the
    /// next start fast), and the profiled run tells which provider got how many nodes.
    fn warm_up(&mut self, profiling: bool) -> Result<(), String> {
        let per: usize = self.spec.input_shape.iter().product();
        let input = match self.spec.input_dtype {
            Dtype::Int64 => ModelInput::I64(vec![0; per]),
            Dtype::Float32 => ModelInput::F32(vec![0.0; per]),
        };
        let gpu = self.provider.contains("Tensorrt") || self.provider.contains("CUDA");
        let started = std::time::Instant::now();
        tracing::info!(
            event = crate::telemetry::names::ENCODER_WARMUP,
            modality = %self.modality,
            provider = %self.provider,
            "warming up the encoder{}",
            if self.provider.contains("Tensorrt") { " (TensorRT builds its engines now: minutes on a first start, cached after)" } else { "" }
        );
        // While it runs, say so every 30 s (TensorRT engine builds are long and silent).
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let modality = self.modality;
        let ticker = gpu.then(|| {
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    done_rx.recv_timeout(std::time::Duration::from_secs(30))
                {
                    tracing::info!(
                        event = crate::telemetry::names::ENCODER_WARMUP,
                        modality = %modality,
                        elapsed_s = started.elapsed().as_secs(),
                        "still warming up (building GPU engines)"
                    );
                }
            })
        });
        let result = self.encode(std::slice::from_ref(&input));
        drop(done_tx);
        if let Some(t) = ticker {
            let _ = t.join();
        }
        result.map_err(|e| format!("warm-up run failed: {e}"))?;
        if profiling {
            let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(path) = session.end_profiling() {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    self.nodes = nodes_per_provider(&text);
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        tracing::debug!(modality = %self.modality, ms = started.elapsed().as_millis() as u64, "warm-up done");
        Ok(())
    }
}

/// Names of ONNX Runtime profile traces: `sensebind-ort-<pid>-<modality>…json`.
const PROFILE_PREFIX: &str = "sensebind-ort-";

/// `<state>/ort-profile`, private to the daemon's user (0700), with the traces of
/// processes that are gone removed (a kill -9 during a warm-up leaves its trace).
/// Earlier versions wrote the traces to the temporary directory: those of dead
/// processes are removed there too. `None` (no profiling) if it cannot be made.
pub fn profile_dir(state: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = state.join("ort-profile");
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .is_err()
    {
        return None;
    }
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    }
    sweep_profiles(&dir);
    sweep_profiles(&std::env::temp_dir());
    Some(dir)
}

/// Remove the profile traces in `dir` whose process is gone (regular files only, and
/// in the shared temporary directory only files of this user).
fn sweep_profiles(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PROFILE_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match e.path().symlink_metadata() {
            Ok(m) if m.is_file() && m.uid() == uid => {
                let _ = std::fs::remove_file(e.path());
            }
            _ => {}
        }
    }
}

/// TensorRT optimisation profiles for the batch sizes the daemon sends: 1 (a window at
/// a time, the usual real-time case, optimised for) up to `max_batch` windows (three
/// crops each for vision), so a batch never makes TensorRT rebuild an engine.
fn trt_profile_shapes(spec: &EncoderSpec, modality: Modality, max_batch: usize) -> (String, String, String) {
    let dims: Vec<String> = spec.input_shape.iter().map(|d| d.to_string()).collect();
    let max = max_batch.max(1) * if modality == Modality::Vision { 3 } else { 1 };
    let shape = |b: usize| format!("{}:{}x{}", spec.input, b, dims.join("x"));
    (shape(1), shape(1), shape(max))
}

/// From an ONNX Runtime profile (Chrome trace JSON): how many graph nodes each
/// provider ran, most first. A TensorRT engine counts as one node.
pub fn nodes_per_provider(trace: &str) -> Vec<(String, usize)> {
    let Ok(serde_json::Value::Array(events)) = serde_json::from_str::<serde_json::Value>(trace) else {
        return Vec::new();
    };
    let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for e in &events {
        if e.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let (Some(name), Some(p)) = (
            e.get("name").and_then(|n| n.as_str()),
            e.pointer("/args/provider").and_then(|p| p.as_str()),
        ) else {
            continue;
        };
        let node = name
            .trim_end_matches("_kernel_time")
            .trim_end_matches("_fence_before")
            .trim_end_matches("_fence_after");
        seen.entry(p.to_string()).or_default().insert(node.to_string());
    }
    let mut v: Vec<(String, usize)> = seen.into_iter().map(|(p, s)| (p, s.len())).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

impl Encoder for OrtEncoder {
    fn modality(&self) -> Modality {
        self.modality
    }
    fn dim(&self) -> usize {
        self.spec.dim
    }
    fn logit_scale(&self) -> f32 {
        self.spec.logit_scale
    }
    fn input_shape(&self) -> &[usize] {
        &self.spec.input_shape
    }
    fn provider(&self) -> &str {
        &self.provider
    }
    fn nodes_per_provider(&self) -> Vec<(String, usize)> {
        self.nodes.clone()
    }

    fn encode(&self, batch: &[ModelInput]) -> Result<Vec<Vec<f32>>, EngineError> {
        let m = self.modality;
        let rerr = |reason: String| EngineError::Run { modality: m, reason };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let per: usize = self.spec.input_shape.iter().product();
        let mut shape = vec![batch.len() as i64];
        shape.extend(self.spec.input_shape.iter().map(|&d| d as i64));
        let shape_desc = format!("{:?}", self.spec.input_shape);
        let value = match &batch[0] {
            ModelInput::F32(_) => {
                let data = gather(batch, per, |b| match b {
                    ModelInput::F32(v) => Some(v.as_slice()),
                    _ => None,
                })
                .map_err(|n| rerr(format!("input of {n} values, expected {per} f32 {shape_desc}")))?;
                Tensor::from_array((shape, data))
                    .map_err(|e| rerr(e.to_string()))?
                    .upcast()
            }
            ModelInput::I64(_) => {
                let data = gather(batch, per, |b| match b {
                    ModelInput::I64(v) => Some(v.as_slice()),
                    _ => None,
                })
                .map_err(|n| rerr(format!("input of {n} values, expected {per} i64 {shape_desc}")))?;
                Tensor::from_array((shape, data))
                    .map_err(|e| rerr(e.to_string()))?
                    .upcast()
            }
        };
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![self.spec.input.as_str() => value])
            .map_err(|e| rerr(e.to_string()))?;
        let out = outputs
            .get(&self.spec.output)
            .ok_or_else(|| rerr(format!("no output `{}`", self.spec.output)))?;
        let (oshape, data) = out.try_extract_tensor::<f32>().map_err(|e| rerr(e.to_string()))?;
        let dim = self.spec.dim;
        if oshape.len() != 2 || oshape[0] as usize != batch.len() || oshape[1] as usize != dim {
            return Err(rerr(format!(
                "output shape {:?}, expected [{}, {dim}]",
                &oshape[..],
                batch.len()
            )));
        }
        Ok(data
            .chunks_exact(dim)
            .map(|c| {
                let mut v = c.to_vec();
                l2_normalise(&mut v);
                v
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_counted_per_provider_from_a_profile() {
        let trace = r#"[
            {"cat":"Session","name":"model_loading_uri","args":{}},
            {"cat":"Node","name":"/blocks.0/MatMul_fence_before","args":{"provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"/blocks.0/MatMul_kernel_time","args":{"op_name":"MatMul","provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"/blocks.0/MatMul_fence_after","args":{"provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"/blocks.0/Add_kernel_time","args":{"op_name":"Add","provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"/Shape_kernel_time","args":{"op_name":"Shape","provider":"CPUExecutionProvider"}},
            {"cat":"Node","name":"TRTKernel_graph_main_0_kernel_time","args":{"provider":"TensorrtExecutionProvider"}}
        ]"#;
        assert_eq!(
            nodes_per_provider(trace),
            vec![
                ("CUDAExecutionProvider".to_string(), 2),
                ("CPUExecutionProvider".to_string(), 1),
                ("TensorrtExecutionProvider".to_string(), 1)
            ]
        );
        assert!(nodes_per_provider("not json").is_empty());
    }

    #[test]
    fn tensorrt_profiles_cover_every_batch_the_daemon_sends() {
        let spec = EncoderSpec {
            file: "vision.onnx".into(),
            input: "vision".into(),
            output: "emb".into(),
            dim: 1024,
            logit_scale: 1.0,
            input_shape: vec![3, 2, 224, 224],
            input_dtype: Dtype::Float32,
        };
        let (min, opt, max) = trt_profile_shapes(&spec, Modality::Vision, 8);
        assert_eq!(min, "vision:1x3x2x224x224");
        assert_eq!(opt, "vision:1x3x2x224x224");
        // Three crops per window at most.
        assert_eq!(max, "vision:24x3x2x224x224");
        let text = EncoderSpec {
            input: "text".into(),
            input_shape: vec![77],
            input_dtype: Dtype::Int64,
            ..spec
        };
        assert_eq!(trt_profile_shapes(&text, Modality::Text, 8).2, "text:8x77");
    }
}
