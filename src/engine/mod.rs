//! Engine: ImageBind encoders behind one trait, and the batching worker that runs
//! them off the async runtime.
//!
//! [`Encoder`] is what the rest of the daemon sees: a batch of preprocessed inputs in,
//! unit-L2-normalised vectors out. [`ort_backend`] implements it with ONNX Runtime
//! (TensorRT fp16, CUDA and CPU registered together in priority order, as configured). [`worker`] gives each modality its own
//! thread that drains its queue into batches, so a slow encoder never blocks a source;
//! the workers share [`gate`]'s slots (`engine.concurrency`), granted by priority.

pub mod gate;
pub mod ort_backend;
pub mod worker;

use crate::modality::Modality;
use crate::preprocess::ModelInput;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// ONNX Runtime could not be loaded or initialised.
    #[error("{0}")]
    Runtime(String),
    /// An encoder could not be created from its ONNX file.
    #[error("{modality} encoder ({model}): {reason}")]
    Load {
        modality: Modality,
        model: String,
        reason: String,
    },
    /// Running an encoder failed.
    #[error("{modality} encoder: {reason}")]
    Run { modality: Modality, reason: String },
}

/// One modality's encoder.
pub trait Encoder: Send + Sync {
    fn modality(&self) -> Modality;
    /// Embedding size.
    fn dim(&self) -> usize;
    /// The modality's logit scale from the pack manifest (what ImageBind multiplies
    /// the normalised embedding by).
    fn logit_scale(&self) -> f32;
    /// Per-item input shape.
    fn input_shape(&self) -> &[usize];
    /// The execution providers the encoder was given, in priority order,
    /// comma-separated, e.g. "CUDAExecutionProvider,CPUExecutionProvider".
    fn provider(&self) -> &str;
    /// How many graph nodes each provider runs (from the warm-up run), most first;
    /// empty when unknown.
    fn nodes_per_provider(&self) -> Vec<(String, usize)> {
        Vec::new()
    }
    /// Encode a batch; returns one unit-L2-normalised vector per input.
    fn encode(&self, batch: &[ModelInput]) -> Result<Vec<Vec<f32>>, EngineError>;
}

/// Scale `v` to unit L2 norm (a zero vector stays zero).
pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa.sqrt() * bb.sqrt())) as f32
    }
}
