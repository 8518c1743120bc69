//! Everything loaded before the pipeline starts: the pack, its encoders, the
//! preprocessors, and the check that each preprocessor's output is exactly what the
//! pack's encoder takes (so a mismatched `preprocess.*.size` stops `run` and `check`
//! with one line, instead of failing every window at run time).

use super::PipelineError;
use crate::calibration::Calibration;
use crate::config::{Config, VisionPrepConfig};
use crate::engine::ort_backend::OrtEncoder;
use crate::engine::{Encoder, EngineError};
use crate::modality::Modality;
use crate::pack::Pack;
use crate::preprocess::text::TextPrep;
use crate::preprocess::{self, Preprocessor};
use std::collections::BTreeMap;
use std::sync::Arc;

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
