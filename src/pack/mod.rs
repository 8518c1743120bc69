//! Model packs: a folder with `pack.toml` and one ONNX encoder per modality, made by
//! `tools/export_imagebind.py`. The MiniBind pack in `packs/minibind` (trained here on
//! the digit world, tools/minibind/) is also compiled into the binary so the demo needs
//! no files; the tiny random-init `packs/tiny-random` serves the parity tests.

pub mod weights;

use crate::modality::Modality;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("model pack {pack}: {reason}")]
pub struct PackError {
    pub pack: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Int64,
}

/// One encoder's entry in `pack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    pub file: String,
    pub input: String,
    pub output: String,
    pub dim: usize,
    pub logit_scale: f32,
    pub input_shape: Vec<usize>,
    pub input_dtype: Dtype,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PackInfo {
    pub name: String,
    #[serde(default)]
    pub format: u32,
    #[serde(default)]
    pub weights: String,
    #[serde(default)]
    pub opset: u32,
    #[serde(default)]
    pub arch: toml::Table,
}

/// `pack.toml`: a `[pack]` table and one table per modality (an unknown table name
/// is rejected as an unknown modality).
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub pack: PackInfo,
    #[serde(flatten)]
    pub encoders: BTreeMap<Modality, EncoderSpec>,
}

/// Where an encoder's ONNX bytes come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    File(PathBuf),
    Embedded(&'static [u8]),
}

#[derive(Debug, Clone)]
pub struct Pack {
    /// Directory, or `builtin:minibind`.
    pub location: String,
    pub manifest: Manifest,
    pub models: BTreeMap<Modality, ModelSource>,
}

mod builtin {
    pub const MANIFEST: &str = include_str!("../../packs/minibind/pack.toml");
    pub const VISION: &[u8] = include_bytes!("../../packs/minibind/vision.onnx");
    pub const TEXT: &[u8] = include_bytes!("../../packs/minibind/text.onnx");
    pub const AUDIO: &[u8] = include_bytes!("../../packs/minibind/audio.onnx");
    pub const DEPTH: &[u8] = include_bytes!("../../packs/minibind/depth.onnx");
    pub const THERMAL: &[u8] = include_bytes!("../../packs/minibind/thermal.onnx");
    pub const IMU: &[u8] = include_bytes!("../../packs/minibind/imu.onnx");
}

pub const BUILTIN: &str = "builtin:minibind";

impl Pack {
    /// Load `dir/pack.toml` (checking every referenced file exists), or the built-in
    /// pack when `dir` is empty.
    pub fn load(dir: &str) -> Result<Pack, PackError> {
        if dir.is_empty() || dir == BUILTIN {
            return Self::builtin();
        }
        let err = |reason: String| PackError {
            pack: dir.to_string(),
            reason,
        };
        let root = Path::new(dir);
        let mpath = root.join("pack.toml");
        let text = std::fs::read_to_string(&mpath).map_err(|e| {
            err(format!(
                "cannot read {}: {e} (expected a folder made by tools/export_imagebind.py)",
                mpath.display()
            ))
        })?;
        let manifest = Self::parse(&text).map_err(|r| err(format!("{}: {r}", mpath.display())))?;
        let mut models = BTreeMap::new();
        for (m, spec) in &manifest.encoders {
            let f = root.join(&spec.file);
            if !f.is_file() {
                return Err(err(format!(
                    "`{m}.file` = \"{}\" but {} does not exist",
                    spec.file,
                    f.display()
                )));
            }
            models.insert(*m, ModelSource::File(f));
        }
        Ok(Pack {
            location: dir.to_string(),
            manifest,
            models,
        })
    }

    pub fn builtin() -> Result<Pack, PackError> {
        let manifest = Self::parse(builtin::MANIFEST).map_err(|reason| PackError {
            pack: BUILTIN.into(),
            reason,
        })?;
        let mut models = BTreeMap::new();
        for m in manifest.encoders.keys() {
            let bytes = match m {
                Modality::Vision => builtin::VISION,
                Modality::Text => builtin::TEXT,
                Modality::Audio => builtin::AUDIO,
                Modality::Depth => builtin::DEPTH,
                Modality::Thermal => builtin::THERMAL,
                Modality::Imu => builtin::IMU,
            };
            models.insert(*m, ModelSource::Embedded(bytes));
        }
        Ok(Pack {
            location: BUILTIN.into(),
            manifest,
            models,
        })
    }

    /// Parse and check a manifest.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        for (modality, s) in &m.encoders {
            if s.dim == 0 {
                return Err(format!("`{modality}.dim` must be > 0"));
            }
            if !(s.logit_scale.is_finite() && s.logit_scale > 0.0) {
                return Err(format!("`{modality}.logit_scale` must be a positive number"));
            }
            let want = match modality {
                Modality::Text => Dtype::Int64,
                _ => Dtype::Float32,
            };
            if s.input_dtype != want {
                return Err(format!("`{modality}.input_dtype` must be {want:?}"));
            }
            if s.input_shape.is_empty() || s.input_shape.contains(&0) {
                return Err(format!("`{modality}.input_shape` must list positive sizes"));
            }
        }
        Ok(m)
    }

    /// What `m`'s encoder weighs (its ONNX initializers; the data is not read). An
    /// error names the file and what is wrong with it.
    pub fn weights(&self, m: Modality) -> Result<weights::WeightStats, String> {
        match self.models.get(&m) {
            None => Err(format!("the pack has no `[{m}]` encoder")),
            Some(ModelSource::Embedded(b)) => {
                weights::inspect(std::io::Cursor::new(*b)).map_err(|e| format!("built-in {m} encoder: {e}"))
            }
            Some(ModelSource::File(f)) => std::fs::File::open(f)
                .map_err(|e| e.to_string())
                .and_then(|f| weights::inspect(std::io::BufReader::new(f)))
                .map_err(|e| format!("{}: {e}", f.display())),
        }
    }

    pub fn spec(&self, m: Modality) -> Option<&EncoderSpec> {
        self.manifest.encoders.get(&m)
    }

    pub fn name(&self) -> &str {
        &self.manifest.pack.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pack_is_complete() {
        let p = Pack::builtin().unwrap();
        for m in Modality::ALL {
            assert!(p.spec(m).is_some(), "{m} missing");
        }
        assert_eq!(p.spec(Modality::Imu).unwrap().input_shape, vec![6, 2000]);
        assert_eq!(p.spec(Modality::Text).unwrap().input_dtype, Dtype::Int64);
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pack.toml"), builtin::MANIFEST).unwrap();
        let e = Pack::load(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains(".onnx") && e.contains("does not exist"), "{e}");
    }
}
