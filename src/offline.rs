//! Offline embedding of files (`sensebind embed`, parity tests) through exactly the
//! daemon's stages: a file source (as fast as possible, t = 0 at the first sample),
//! the windower, the preprocessors and the encoders.

use crate::config::{Config, FileSourceConfig, Pace};
use crate::daemon::Models;
use crate::engine::worker::mean_of;
use crate::engine::EngineError;
use crate::modality::{Modality, Sensor};
use crate::preprocess::PreprocessError;
use crate::sources::{file, Frame, FrameData, SourceError, StopFlag};
use crate::window::{Outcome, Window, WindowData, Windower};
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
    Missing(String),
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

/// Windows of a file, and (seq, coverage) of each window dropped for low coverage.
pub type FileWindows = (Vec<Window>, Vec<(i64, f64)>);

/// Cut a WAV file into the daemon's windows.
pub fn audio_windows(cfg: &Config, path: &Path) -> Result<FileWindows, SourceError> {
    let params = cfg.window_params();
    let fcfg = FileSourceConfig {
        path: path.display().to_string(),
        fps: 1.0,
        pace: Pace::Fast,
        looped: false,
        chunk_ms: cfg.sources.microphone.file.chunk_ms.max(1),
    };
    let mut src = file::build(Sensor::Microphone, &fcfg, params.origin_ns, StopFlag::default())?;
    src.open()?;
    let mut w = Windower::new(Sensor::Microphone, params, src.info().nominal_rate_hz);
    let (mut windows, mut dropped) = (Vec::new(), Vec::new());
    let mut collect = |o: Vec<Outcome>| {
        for x in o {
            match x {
                Outcome::Ready(win) => windows.push(win),
                Outcome::Dropped { seq, coverage, .. } => dropped.push((seq, coverage)),
                Outcome::Rejected { reason } => {
                    tracing::warn!(event = "frame_rejected", file = %path.display(), reason = %reason, "audio chunk discarded")
                }
                Outcome::LateFrames { .. } => {}
            }
        }
    };
    while let Some(frame) = src.next_frame()? {
        collect(w.push(frame));
    }
    collect(w.flush());
    Ok((windows, dropped))
}

fn encode_window(models: &Models, m: Modality, win: &Window) -> Result<Vec<f32>, OfflineError> {
    let prep = models
        .preprocessors
        .get(&m)
        .ok_or_else(|| OfflineError::Missing(format!("no {m} preprocessor")))?;
    let enc = models
        .encoders
        .get(&m)
        .ok_or_else(|| OfflineError::Missing(format!("no {m} encoder loaded")))?;
    let views = prep.views(win)?;
    Ok(mean_of(enc.encode(&views)?.into_iter()))
}

fn scale(models: &Models, m: Modality) -> f32 {
    models.encoders.get(&m).map_or(1.0, |e| e.logit_scale())
}

/// Every window of a WAV file that passes `window.min_coverage`.
pub fn embed_audio(models: &Models, cfg: &Config, path: &Path) -> Result<Vec<Embedding>, OfflineError> {
    let (windows, dropped) = audio_windows(cfg, path)?;
    for (seq, cov) in dropped {
        tracing::warn!(event = "window_dropped", file = %path.display(), seq, coverage = cov, "window below window.min_coverage");
    }
    windows
        .iter()
        .map(|win| {
            Ok(Embedding {
                modality: Modality::Audio,
                input: path.display().to_string(),
                span: Some((win.t_start_ns, win.t_end_ns)),
                vector: encode_window(models, Modality::Audio, win)?,
                scale: scale(models, Modality::Audio),
            })
        })
        .collect()
}

/// One image file through the official image loader.
pub fn embed_image(models: &Models, path: &Path) -> Result<Embedding, OfflineError> {
    let FrameData::Rgb8 { width, height, data } = file::load_rgb(path)? else {
        return Err(OfflineError::Missing("decoder returned no RGB image".into()));
    };
    let vprep = crate::preprocess::vision::VisionPrep::new(models.vision_config.clone());
    let input = vprep.still(width, height, &data);
    let enc = models
        .encoders
        .get(&Modality::Vision)
        .ok_or_else(|| OfflineError::Missing("no vision encoder loaded".into()))?;
    Ok(Embedding {
        modality: Modality::Vision,
        input: path.display().to_string(),
        span: None,
        vector: enc.encode(&[input])?.remove(0),
        scale: scale(models, Modality::Vision),
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
        sensor: Sensor::Camera,
        seq: 0,
        t_start_ns,
        t_end_ns,
        coverage: 1.0,
        data: WindowData::Frames(frames.into_iter().map(std::sync::Arc::new).collect()),
    };
    encode_window(models, Modality::Vision, &win)
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
            scale: scale(models, Modality::Text),
        })
        .collect())
}
