//! Everything loaded before the pipeline starts: the pack, its encoders, the
//! preprocessors, and the check that each preprocessor's output is exactly what the
//! pack's encoder takes (so a mismatched `preprocess.*.size` stops `run` and `check`
//! with one line, instead of failing every window at run time).

use super::window_limits;
use super::PipelineError;
use crate::calibration::Calibration;
use crate::config::{Config, VisionPrepConfig};
use crate::engine::gate::Gate;
use crate::engine::ort_backend::OrtEncoder;
use crate::engine::worker::embed_windows;
use crate::engine::{Encoder, EngineError};
use crate::modality::Modality;
use crate::modality::Sensor;
use crate::pack::Pack;
use crate::preprocess::text::TextPrep;
use crate::preprocess::{self, Preprocessor};
use crate::queries::request::Mime;
use crate::sources::file::{self, FileConfig};
use crate::sources::{SourceError, StopFlag};
use crate::telemetry::{LogLimiter, StreamStats};
use crate::window::{Window, WindowParams, Windower};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Longest a query example waits for an encoder slot.
pub const EXAMPLE_WAIT: Duration = Duration::from_secs(30);

pub struct Models {
    pub pack: Pack,
    pub encoders: BTreeMap<Modality, Arc<dyn Encoder>>,
    pub preprocessors: BTreeMap<Modality, Arc<dyn Preprocessor>>,
    pub text: TextPrep,
    /// Vision settings, for still images (`embed --image`).
    pub vision_config: VisionPrepConfig,
    /// The sensor calibration (IMU correction, radiometry, depth geometry).
    pub calibration: Calibration,
    /// Depth geometry reported by devices (source runners write it, depth reads it).
    pub device_geometry: crate::sources::DeviceGeometry,
}

impl Models {
    /// Load the pack and create encoders for `modalities` (text always), after checking
    /// the preprocessing contract of every sensed modality the pack has.
    pub fn load(cfg: &Config, modalities: &[Modality]) -> Result<Models, PipelineError> {
        let pack = Pack::load(&cfg.pack.path)?;
        let calib = Calibration::load(&cfg.calibration.file)?;
        let device_geometry = crate::sources::DeviceGeometry::default();
        if cfg.preprocess.thermal.range == crate::config::ThermalRange::Kelvin && calib.thermal.is_none() {
            return Err(PipelineError::Setup(format!(
                "`preprocess.thermal.range` = \"kelvin\" needs a `[thermal]` radiometry section in the calibration ({})",
                if cfg.calibration.file.is_empty() { "built-in example" } else { cfg.calibration.file.as_str() }
            )));
        }
        let preprocessors: BTreeMap<Modality, Arc<dyn Preprocessor>> =
            preprocess::build_all(&cfg.preprocess, &calib, &device_geometry)
                .into_iter()
                .map(|p| (p.modality(), p))
                .collect();
        for m in modalities {
            let (Some(prep), Some(spec)) = (preprocessors.get(m), pack.spec(*m)) else {
                continue;
            };
            preprocess::check_contract(prep.as_ref(), spec)
                .map_err(|e| PipelineError::Contract(format!("model pack {}: {e}", pack.location)))?;
        }
        let state = cfg.state_dir();
        let mut encoders: BTreeMap<Modality, Arc<dyn Encoder>> = BTreeMap::new();
        let mut wanted: Vec<Modality> = modalities.to_vec();
        if !wanted.contains(&Modality::Text) {
            wanted.push(Modality::Text);
        }
        for m in wanted {
            encoders.insert(m, Arc::new(OrtEncoder::load(&pack, m, &cfg.engine, &state)?));
        }
        Ok(Models {
            pack,
            encoders,
            preprocessors,
            text: TextPrep::new(),
            vision_config: cfg.preprocess.vision.clone(),
            calibration: calib,
            device_geometry,
        })
    }

    pub fn embed_text(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        let enc = self.encoders.get(&Modality::Text).ok_or_else(|| EngineError::Run {
            modality: Modality::Text,
            reason: "no text encoder loaded".into(),
        })?;
        let inputs: Vec<_> = texts.iter().map(|t| self.text.input(t)).collect();
        enc.encode(&inputs)
    }

    pub fn scale(&self, m: Modality) -> f32 {
        self.encoders.get(&m).map_or(1.0, |e| e.logit_scale())
    }
}

impl Models {
    /// Windows → embeddings through the daemon's one path (preprocess, encode).
    pub fn encode_windows(&self, m: Modality, windows: &[&Window]) -> Result<Vec<Vec<f32>>, String> {
        let (Some(prep), Some(enc)) = (self.preprocessors.get(&m), self.encoders.get(&m)) else {
            return Err(format!("no {m} encoder loaded"));
        };
        embed_windows(prep.as_ref(), enc.as_ref(), windows)
            .into_iter()
            .collect()
    }

    /// An example's media (from a `queries/<id>` request) embedded through the
    /// daemon's own path: a WAV through the file source, windower and audio
    /// preprocessing (several windows: their mean, renormalised), a PNG/JPEG as a
    /// still image.
    ///
    /// With `gate`, every encoder call waits for a slot at the lowest priority, one
    /// window at a time: a registration delays the sensors' windows by at most one
    /// encoder call (refused when no slot frees within [`EXAMPLE_WAIT`]).
    pub fn embed_media(&self, cfg: &Config, mime: Mime, bytes: &[u8], gate: Option<&Gate>) -> Result<Vec<f32>, String> {
        let slot = || -> Result<Option<crate::engine::gate::Permit>, String> {
            let Some(g) = gate else { return Ok(None) };
            let now = std::time::Instant::now();
            g.acquire_until(i32::MIN, now, Some(now + EXAMPLE_WAIT))
                .map(Some)
                .ok_or_else(|| format!("the encoders stayed busy for {} s; try again", EXAMPLE_WAIT.as_secs()))
        };
        match mime {
            Mime::Wav => {
                // Decoded in memory: no file is written for bytes from the bus.
                let input = file::WavInput::Memory(Arc::from(bytes));
                let header = file::open_wav(&input).map_err(|e| e.to_string())?;
                let seconds = header.frames as f64 / header.sample_rate as f64;
                let max = cfg.queries.max_example_seconds;
                if seconds > max {
                    return Err(format!(
                        "the WAV example is {seconds:.1} s long; `queries.max_example_seconds` is {max}"
                    ));
                }
                let (windows, _) = audio_windows_of(cfg, input).map_err(|e| e.to_string())?;
                if windows.is_empty() {
                    return Err("the WAV example holds no audio".into());
                }
                let mut vs = Vec::with_capacity(windows.len());
                for w in &windows {
                    let _slot = slot()?;
                    vs.extend(self.encode_windows(Modality::Audio, &[w])?);
                }
                Ok(crate::engine::worker::mean_of(vs.into_iter()))
            }
            Mime::Png | Mime::Jpeg => {
                let img = file::decode_image(bytes, window_limits(cfg).image, "a PNG or JPEG image")?;
                let rgb = img.to_rgb8();
                let (width, height) = rgb.dimensions();
                let vprep = crate::preprocess::vision::VisionPrep::new(self.vision_config.clone());
                let input = vprep.still(width, height, rgb.as_raw()).map_err(|e| e.to_string())?;
                let enc = self
                    .encoders
                    .get(&Modality::Vision)
                    .ok_or("no vision encoder loaded: image examples need a camera source")?;
                let _slot = slot()?;
                Ok(enc.encode(&[input]).map_err(|e| e.to_string())?.remove(0))
            }
        }
    }
}

/// Windows of a file, and how many were dropped for low coverage.
pub type FileWindows = (Vec<Window>, u64);

/// Cut a WAV file into the daemon's windows (from t = 0). A file shorter than one
/// window is one clip, as in official ImageBind.
pub fn audio_windows(cfg: &Config, path: &Path) -> Result<FileWindows, SourceError> {
    audio_windows_of(cfg, file::WavInput::Path(path.to_path_buf()))
}

/// [`audio_windows`] of a WAV file or of one held in memory.
pub fn audio_windows_of(cfg: &Config, input: file::WavInput) -> Result<FileWindows, SourceError> {
    let mut params = WindowParams::from_config(&cfg.window);
    params.origin_ns = 0;
    let header = file::open_wav(&input)?;
    if (header.frames as i128 * 1_000_000_000) < (params.length_ns as i128 * header.sample_rate as i128) {
        params.min_coverage = 0.0;
    }
    let src = match input {
        file::WavInput::Path(p) => file::build(
            &FileConfig::fast(Sensor::Microphone, &p, 0),
            0,
            window_limits(cfg).image,
            StopFlag::default(),
        ),
        file::WavInput::Memory(b) => file::build_wav_in_memory(b, 0, StopFlag::default()),
    };
    source_windows(cfg, src, params)
}

/// A recording file (as fast as it reads, t = 0 at its first sample) through the
/// windower and [`dispatch`](super::stages::dispatch), as a live stream would be.
pub fn file_windows(
    cfg: &Config,
    path: &Path,
    sensor: Sensor,
    params: WindowParams,
) -> Result<FileWindows, SourceError> {
    let fcfg = FileConfig::fast(sensor, path, 0);
    source_windows(
        cfg,
        file::build(&fcfg, 0, window_limits(cfg).image, StopFlag::default()),
        params,
    )
}

/// A one-stream source read to its end through the windower.
fn source_windows(
    cfg: &Config,
    mut src: Box<dyn crate::sources::Source>,
    params: WindowParams,
) -> Result<FileWindows, SourceError> {
    src.open()?;
    let info = src.info();
    let (modality, rate) = (info.streams[0].modality, info.streams[0].nominal_rate_hz);
    let mut w = Windower::new("file", modality, params, rate).with_limits(window_limits(cfg));
    let stats = StreamStats::new("file", modality);
    let mut limiter = LogLimiter::new(Duration::from_secs(10));
    let mut windows = Vec::new();
    while let Some(frame) = src.next_frame()? {
        super::stages::dispatch(w.push(frame), &stats, &mut limiter, |win| windows.push(win));
    }
    super::stages::dispatch(w.flush(), &stats, &mut limiter, |win| windows.push(win));
    Ok((windows, stats.dropped_coverage.load(Relaxed)))
}
