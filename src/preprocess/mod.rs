//! Preprocessing: turn a closed window into the exact tensor an ImageBind encoder
//! expects (see `imagebind-contract.md` and docs in each module).
//!
//! One [`Preprocessor`] per sensed modality; text has its own tokenizer. Each is a pure
//! function of the window, so the daemon and `sensebind embed` share it.

pub mod audio;
pub mod image_ops;
pub mod imu;
pub mod text;
pub mod vision;

use crate::calibration::Calibration;
use crate::config::PreprocessConfig;
use crate::modality::Modality;
use crate::window::Window;
use std::sync::Arc;

/// An encoder input for one item (no batch axis).
#[derive(Debug, Clone, PartialEq)]
pub enum ModelInput {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl ModelInput {
    pub fn len(&self) -> usize {
        match self {
            ModelInput::F32(v) => v.len(),
            ModelInput::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("{modality} window {seq}: {reason}")]
    BadWindow {
        modality: Modality,
        seq: i64,
        reason: String,
    },
}

/// Window → model input for one modality.
pub trait Preprocessor: Send + Sync {
    fn modality(&self) -> Modality;
    /// Per-item input shape (batch axis excluded).
    fn shape(&self) -> Vec<usize>;
    fn process(&self, window: &Window) -> Result<ModelInput, PreprocessError>;
    /// Several views of one window whose embeddings are averaged (the official
    /// multi-crop evaluation); one view unless configured otherwise.
    fn views(&self, window: &Window) -> Result<Vec<ModelInput>, PreprocessError> {
        Ok(vec![self.process(window)?])
    }
    /// The window holding only what [`views`](Self::views) reads (a camera window:
    /// the frames it samples), so a window waiting for its encoder holds 2 frames, not
    /// all 60 of a 30 Hz camera. `views` of the result equals `views` of the window.
    fn retain(&self, window: Window) -> Window {
        window
    }
}

/// The config keys that decide a modality's input shape (named in contract errors).
pub fn shape_keys(m: Modality) -> &'static str {
    match m {
        Modality::Vision => "preprocess.vision.size` / `preprocess.vision.frames",
        Modality::Audio => "preprocess.audio.num_mel_bins` / `preprocess.audio.target_length",
        Modality::Depth => "preprocess.depth.size",
        Modality::Thermal => "preprocess.thermal.size",
        Modality::Imu => "preprocess.imu.samples",
        Modality::Text => "the text tokenizer (77 tokens)",
    }
}

/// Check a preprocessor's output against the pack's `input_shape` / `input_dtype`
/// (batch axis excluded), before anything runs. The error names the modality, the
/// config key and what the pack expects.
pub fn check_contract(prep: &dyn Preprocessor, spec: &crate::pack::EncoderSpec) -> Result<(), String> {
    let m = prep.modality();
    let ours = prep.shape();
    let theirs = &spec.input_shape;
    if ours != *theirs || spec.input_dtype != crate::pack::Dtype::Float32 {
        return Err(format!(
            "{m}: preprocessing gives float32 {ours:?} but the pack's {m} encoder expects {:?} {theirs:?} \
             (pack.toml `{m}.input_shape`); set `{}` to match the pack",
            spec.input_dtype,
            shape_keys(m)
        ));
    }
    Ok(())
}

pub(crate) fn bad(w: &Window, reason: impl ToString) -> PreprocessError {
    PreprocessError::BadWindow {
        modality: w.modality(),
        seq: w.seq,
        reason: reason.to_string(),
    }
}

/// Build the preprocessor of every sensed modality.
/// `device` carries the depth geometry devices report at run time (RealSense).
pub fn build_all(
    cfg: &PreprocessConfig,
    calib: &Calibration,
    device: &crate::sources::DeviceGeometry,
) -> Vec<Arc<dyn Preprocessor>> {
    vec![
        Arc::new(vision::VisionPrep::new(cfg.vision.clone())),
        Arc::new(audio::AudioPrep::new(cfg.audio.clone())),
        Arc::new(
            vision::DepthPrep::new(cfg.depth.clone(), calib.depth_baseline_m, calib.depth_focal_px)
                .with_device_geometry(device.clone()),
        ),
        Arc::new(vision::ThermalPrep::new(cfg.thermal.clone()).with_radiometry(calib.thermal)),
        Arc::new(imu::ImuPrep::new(cfg.imu.clone())),
    ]
}
