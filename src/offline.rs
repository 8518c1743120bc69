//! Offline embedding of files (`sensebind embed`, parity tests) through exactly the
//! daemon's stages: a file source (as fast as possible, t = 0 at the first sample),
//! the windower, [`dispatch`](crate::pipeline::stages::dispatch) and the one
//! window → embedding path ([`Models::encode_windows`]); the file → windows part,
//! shared with example media in queries, is [`crate::pipeline::models::file_windows`].
//!
//! One difference, as in official ImageBind: a file shorter than one window is
//! embedded as one clip (its fbank padded), where a live stream would drop the window
//! for low coverage. No input yields silently nothing.

use crate::config::Config;
use crate::engine::EngineError;
use crate::modality::{Modality, Sensor};
use crate::pipeline::{window_limits, Models};
use crate::preprocess::PreprocessError;
use crate::sources::file;
use crate::sources::{Frame, FrameData, SourceError};
use crate::window::{Window, WindowData, WindowParams};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Failed(String),
}

/// One embedding of an input (a window of a file, an image or a text).
#[derive(Debug, Clone)]
pub struct Embedding {
    pub modality: Modality,
    pub input: String,
    /// Window span in ns from the file's start (audio only).
    pub span: Option<(i64, i64)>,
    /// Unit L2 norm.
    pub vector: Vec<f32>,
    pub scale: f32,
}

impl Embedding {
    /// `sensebind embed`'s line: modality, input, span in seconds, vector, scale.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "modality": self.modality,
            "input": self.input,
            "t_start": self.span.map(|t| t.0 as f64 / 1e9),
            "t_end": self.span.map(|t| t.1 as f64 / 1e9),
            "embedding": self.vector,
            "scale": self.scale,
        })
    }
}

/// What `sensebind embed` embeds: files by modality, and texts.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub audio: Vec<std::path::PathBuf>,
    pub image: Vec<std::path::PathBuf>,
    pub depth: Vec<std::path::PathBuf>,
    pub thermal: Vec<std::path::PathBuf>,
    pub imu: Vec<std::path::PathBuf>,
    pub text: Vec<String>,
}

/// Embed every input with the configured pack, in the order audio, images, depth,
/// thermal, IMU, texts.
pub fn embed_inputs(cfg: &Config, inp: &Inputs) -> Result<Vec<Embedding>, OfflineError> {
    let files = [
        (Modality::Audio, &inp.audio),
        (Modality::Vision, &inp.image),
        (Modality::Depth, &inp.depth),
        (Modality::Thermal, &inp.thermal),
        (Modality::Imu, &inp.imu),
    ];
    if inp.text.is_empty() && files.iter().all(|(_, f)| f.is_empty()) {
        return Err(OfflineError::Failed(
            "nothing to embed: give --audio, --image, --depth, --thermal or --imu FILE and/or --text STRING".into(),
        ));
    }
    let mods: Vec<Modality> = files.iter().filter(|(_, f)| !f.is_empty()).map(|(m, _)| *m).collect();
    let models = Models::load(cfg, &mods).map_err(|e| OfflineError::Failed(e.to_string()))?;
    let mut all = Vec::new();
    for path in &inp.audio {
        all.extend(embed_audio(&models, cfg, path)?);
    }
    for path in &inp.image {
        all.push(embed_image(&models, cfg, path)?);
    }
    for path in &inp.depth {
        all.push(embed_gray16(&models, cfg, path, Modality::Depth)?);
    }
    for path in &inp.thermal {
        all.push(embed_gray16(&models, cfg, path, Modality::Thermal)?);
    }
    for path in &inp.imu {
        all.extend(embed_imu(&models, cfg, path)?);
    }
    if !inp.text.is_empty() {
        all.extend(embed_texts(&models, &inp.text)?);
    }
    Ok(all)
}

pub use crate::pipeline::models::{audio_windows, FileWindows};

/// Cut an IMU CSV (`t_s,ax,ay,az,gx,gy,gz`, times from its first reading) into the
/// daemon's windows (from t = 0).
pub fn imu_windows(cfg: &Config, path: &Path) -> Result<FileWindows, SourceError> {
    let mut params = WindowParams::from_config(&cfg.window);
    params.origin_ns = 0;
    crate::pipeline::models::file_windows(cfg, path, Sensor::Imu, params)
}

fn encode(models: &Models, m: Modality, windows: &[&Window]) -> Result<Vec<Vec<f32>>, OfflineError> {
    models.encode_windows(m, windows).map_err(OfflineError::Failed)
}

/// Every window of a WAV file that passes `window.min_coverage` (at least one).
pub fn embed_audio(models: &Models, cfg: &Config, path: &Path) -> Result<Vec<Embedding>, OfflineError> {
    let (windows, dropped) = audio_windows(cfg, path)?;
    if dropped > 0 {
        tracing::warn!(event = crate::telemetry::names::WINDOW_DROPPED, file = %path.display(), dropped, "windows below window.min_coverage skipped");
    }
    if windows.is_empty() {
        return Err(OfflineError::Failed(format!("{}: no audio to embed", path.display())));
    }
    embed_file_windows(models, Modality::Audio, path, &windows)
}

/// Every window of an IMU CSV that passes `window.min_coverage` (at least one).
pub fn embed_imu(models: &Models, cfg: &Config, path: &Path) -> Result<Vec<Embedding>, OfflineError> {
    let (windows, _) = imu_windows(cfg, path)?;
    if windows.is_empty() {
        return Err(OfflineError::Failed(format!(
            "{}: no window of IMU readings covers window.min_coverage",
            path.display()
        )));
    }
    embed_file_windows(models, Modality::Imu, path, &windows)
}

/// One embedding per window of a file, with the window's span.
fn embed_file_windows(
    models: &Models,
    m: Modality,
    path: &Path,
    windows: &[Window],
) -> Result<Vec<Embedding>, OfflineError> {
    let refs: Vec<&Window> = windows.iter().collect();
    let vectors = encode(models, m, &refs)?;
    Ok(windows
        .iter()
        .zip(vectors)
        .map(|(win, vector)| Embedding {
            modality: m,
            input: path.display().to_string(),
            span: Some((win.t_start_ns, win.t_end_ns)),
            vector,
            scale: models.scale(m),
        })
        .collect())
}

/// One 16-bit PNG (depth in millimetres, or thermal Y16 counts) as a one-frame
/// window, through the configured depth/thermal preprocessing.
pub fn embed_gray16(models: &Models, cfg: &Config, path: &Path, modality: Modality) -> Result<Embedding, OfflineError> {
    let (width, height, data) = file::load_gray16(path, window_limits(cfg).image)?;
    let data = match modality {
        Modality::Depth => FrameData::Depth16 { width, height, data },
        Modality::Thermal => FrameData::Thermal16 { width, height, data },
        m => return Err(OfflineError::Failed(format!("{m} is not a 16-bit image modality"))),
    };
    let length = (cfg.window.length_s * 1e9) as i64;
    let win = Window {
        source: "file".into(),
        modality,
        seq: 0,
        t_start_ns: 0,
        t_end_ns: length,
        coverage: 1.0,
        data: WindowData::Frames(vec![std::sync::Arc::new(Frame { t_ns: length / 2, data })]),
    };
    Ok(Embedding {
        modality,
        input: path.display().to_string(),
        span: None,
        vector: encode(models, modality, &[&win])?.remove(0),
        scale: models.scale(modality),
    })
}

/// One image file through the official image loader.
pub fn embed_image(models: &Models, cfg: &Config, path: &Path) -> Result<Embedding, OfflineError> {
    let FrameData::Rgb8 { width, height, data } = file::load_rgb(path, window_limits(cfg).image)? else {
        return Err(OfflineError::Failed("decoder returned no RGB image".into()));
    };
    let vprep = crate::preprocess::vision::VisionPrep::new(models.vision_config.clone());
    let input = vprep
        .still(width, height, &data)
        .map_err(|e| OfflineError::Failed(format!("{}: {e}", path.display())))?;
    let enc = models
        .encoders
        .get(&Modality::Vision)
        .ok_or_else(|| OfflineError::Failed("no vision encoder loaded".into()))?;
    Ok(Embedding {
        modality: Modality::Vision,
        input: path.display().to_string(),
        span: None,
        vector: enc.encode(&[input])?.remove(0),
        scale: models.scale(Modality::Vision),
    })
}

/// A camera clip (frames with times) as one window, through the configured video path.
pub fn embed_clip(
    models: &Models,
    frames: Vec<Frame>,
    t_start_ns: i64,
    t_end_ns: i64,
) -> Result<Vec<f32>, OfflineError> {
    let win = Window {
        source: "clip".into(),
        modality: Modality::Vision,
        seq: 0,
        t_start_ns,
        t_end_ns,
        coverage: 1.0,
        data: WindowData::Frames(frames.into_iter().map(std::sync::Arc::new).collect()),
    };
    Ok(encode(models, Modality::Vision, &[&win])?.remove(0))
}

pub fn embed_texts(models: &Models, texts: &[String]) -> Result<Vec<Embedding>, OfflineError> {
    let vs = models.embed_text(texts)?;
    Ok(texts
        .iter()
        .zip(vs)
        .map(|(t, vector)| Embedding {
            modality: Modality::Text,
            input: t.clone(),
            span: None,
            vector,
            scale: models.scale(Modality::Text),
        })
        .collect())
}
