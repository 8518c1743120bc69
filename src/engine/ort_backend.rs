//! ONNX Runtime backend (`ort`, loaded dynamically from `libonnxruntime.so`).

use super::{l2_normalise, Encoder, EngineError};
use crate::config::{EngineConfig, Provider};
use crate::modality::Modality;
use crate::pack::{EncoderSpec, ModelSource, Pack};
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
            "ONNX Runtime library not configured: set `engine.ort_library` or ORT_DYLIB_PATH to libonnxruntime.so \
             (e.g. `pip install onnxruntime==1.31.1`, then .../site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)"
                .into(),
        ));
    };
    if !p.is_file() {
        return Err(EngineError::Runtime(format!(
            "ONNX Runtime library not found at {}: point `engine.ort_library` or ORT_DYLIB_PATH at libonnxruntime.so \
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
    provider: String,
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
        let mut provider = String::from("CPUExecutionProvider");
        for p in &cfg.providers {
            let (name, dispatch) = match p {
                Provider::Tensorrt => {
                    let dir = if cfg.trt_engine_cache.is_empty() {
                        cache_dir.join("trt-cache")
                    } else {
                        PathBuf::from(&cfg.trt_engine_cache)
                    };
                    let ep = TensorRT::default()
                        .with_device_id(cfg.device_id)
                        .with_fp16(cfg.trt_fp16)
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(dir.display());
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
                Ok(()) => {
                    provider = name.to_string();
                    break;
                }
                Err(e) => {
                    warn_fallback_once(name, &e.to_string());
                }
            }
        }
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
        tracing::info!(event = crate::telemetry::names::ENCODER_LOADED, modality = %modality, provider = %provider, dim = spec.dim, "encoder ready");
        Ok(OrtEncoder {
            modality,
            spec,
            provider,
            session: Mutex::new(session),
        })
    }
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
