//! Camera, depth and thermal windows → image tensors.
//!
//! * vision: `frames` frames sampled uniformly from the window (pytorchvideo
//!   `UniformTemporalSubsample`: indices `linspace(0, T-1, n)` truncated), each resized
//!   (short side, PIL bicubic with antialias, result rounded to u8 as PIL does), centre
//!   cropped, `/255`, CLIP mean/std → `[3, frames, size, size]`. A single image is
//!   repeated (official `PadIm2Video`).
//! * depth: the frame nearest the window's centre, millimetres → disparity =
//!   baseline·focal / depth (metres, clipped), invalid pixels 0 → `[1, size, size]`.
//! * thermal: the frame nearest the window's centre, Y16 → [0, 1] (per-frame range or a
//!   fixed one) → `[1, size, size]`.

use super::image_ops::resize_crop_planar;
use super::{bad, ModelInput, PreprocessError, Preprocessor};
use crate::config::{DepthPrepConfig, ThermalPrepConfig, ThermalRange, VisionPrepConfig};
use crate::modality::Modality;
use crate::sources::{Frame, FrameData};
use crate::window::{Window, WindowData};

/// pytorchvideo `UniformTemporalSubsample` indices: `linspace(0, t-1, n).clamp(0, t-1).long()`.
pub fn uniform_indices(t: usize, n: usize) -> Vec<usize> {
    if t == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let v = if n == 1 {
                0.0
            } else {
                i as f64 * (t - 1) as f64 / (n - 1) as f64
            };
            (v as usize).min(t - 1)
        })
        .collect()
}

fn frames_of(w: &Window) -> Result<&[Frame], PreprocessError> {
    match &w.data {
        WindowData::Frames(f) if !f.is_empty() => Ok(f),
        WindowData::Frames(_) => Err(bad(w, "window holds no frames")),
        _ => Err(bad(w, "expected image frames in this window")),
    }
}

/// The frame closest to the window's centre.
fn middle_frame(w: &Window) -> Result<&Frame, PreprocessError> {
    let frames = frames_of(w)?;
    let mid = w.t_start_ns + (w.t_end_ns - w.t_start_ns) / 2;
    Ok(frames.iter().min_by_key(|f| (f.t_ns - mid).abs()).expect("non-empty"))
}

pub struct VisionPrep {
    cfg: VisionPrepConfig,
}

impl VisionPrep {
    pub fn new(cfg: VisionPrepConfig) -> Self {
        VisionPrep { cfg }
    }

    /// One RGB8 image → planar normalised `[3, size, size]`.
    pub fn image(&self, width: u32, height: u32, rgb: &[u8]) -> Vec<f32> {
        let src: Vec<f32> = rgb.iter().map(|&v| v as f32).collect();
        let (mean, std) = (self.cfg.mean, self.cfg.std);
        resize_crop_planar(&src, width, height, 3, self.cfg.size, |c, v| {
            // PIL resizes u8 images to u8: round and clip, then ToTensor's /255.
            let q = v.round().clamp(0.0, 255.0) / 255.0;
            (q - mean[c]) / std[c]
        })
    }

    /// Stack per-frame `[3, S, S]` tensors into `[3, T, S, S]`.
    pub fn stack(&self, per_frame: &[Vec<f32>]) -> Vec<f32> {
        let plane = (self.cfg.size * self.cfg.size) as usize;
        let t = per_frame.len();
        let mut out = vec![0.0f32; 3 * t * plane];
        for (ti, f) in per_frame.iter().enumerate() {
            for c in 0..3 {
                out[(c * t + ti) * plane..(c * t + ti + 1) * plane].copy_from_slice(&f[c * plane..(c + 1) * plane]);
            }
        }
        out
    }
}

impl Preprocessor for VisionPrep {
    fn modality(&self) -> Modality {
        Modality::Vision
    }
    fn shape(&self) -> Vec<usize> {
        let s = self.cfg.size as usize;
        vec![3, self.cfg.frames, s, s]
    }
    fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
        let frames = frames_of(w)?;
        let mut per = Vec::with_capacity(self.cfg.frames);
        for i in uniform_indices(frames.len(), self.cfg.frames) {
            match &frames[i].data {
                FrameData::Rgb8 { width, height, data }
                    if data.len() == (*width as usize) * (*height as usize) * 3 && *width > 0 && *height > 0 =>
                {
                    per.push(self.image(*width, *height, data))
                }
                FrameData::Rgb8 { width, height, data } => {
                    return Err(bad(
                        w,
                        format!(
                            "RGB frame {width}x{height} has {} bytes, expected {}",
                            data.len(),
                            *width as usize * *height as usize * 3
                        ),
                    ))
                }
                _ => return Err(bad(w, "expected RGB8 frames")),
            }
        }
        Ok(ModelInput::F32(self.stack(&per)))
    }
}

pub struct DepthPrep {
    cfg: DepthPrepConfig,
    baseline_m: f32,
    focal_px: f32,
}

impl DepthPrep {
    pub fn new(cfg: DepthPrepConfig, baseline_m: f32, focal_px: f32) -> Self {
        DepthPrep {
            cfg,
            baseline_m,
            focal_px,
        }
    }

    /// Millimetre depth → disparity (pixels × scale), invalid (0) → 0.
    pub fn disparity(&self, mm: &[u16]) -> Vec<f32> {
        let bf = self.baseline_m * self.focal_px * self.cfg.scale;
        mm.iter()
            .map(|&d| {
                if d == 0 {
                    0.0
                } else {
                    let m = (d as f32 / 1000.0).clamp(self.cfg.min_depth_m, self.cfg.max_depth_m);
                    bf / m
                }
            })
            .collect()
    }
}

impl Preprocessor for DepthPrep {
    fn modality(&self) -> Modality {
        Modality::Depth
    }
    fn shape(&self) -> Vec<usize> {
        let s = self.cfg.size as usize;
        vec![1, s, s]
    }
    fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
        match &middle_frame(w)?.data {
            FrameData::Depth16 { width, height, data }
                if data.len() == (*width as usize) * (*height as usize) && *width > 0 && *height > 0 =>
            {
                let disp = self.disparity(data);
                Ok(ModelInput::F32(resize_crop_planar(
                    &disp,
                    *width,
                    *height,
                    1,
                    self.cfg.size,
                    |_, v| v,
                )))
            }
            _ => Err(bad(w, "expected 16-bit depth frames whose size matches width×height")),
        }
    }
}

pub struct ThermalPrep {
    cfg: ThermalPrepConfig,
}

impl ThermalPrep {
    pub fn new(cfg: ThermalPrepConfig) -> Self {
        ThermalPrep { cfg }
    }

    /// Raw Y16 → [0, 1].
    pub fn normalise(&self, raw: &[u16]) -> Vec<f32> {
        let (lo, hi) = match self.cfg.range {
            ThermalRange::Fixed => (self.cfg.raw_min, self.cfg.raw_max),
            ThermalRange::Auto => {
                let lo = raw.iter().copied().min().unwrap_or(0) as f32;
                let hi = raw.iter().copied().max().unwrap_or(0) as f32;
                (lo, hi)
            }
        };
        let span = (hi - lo).max(1.0);
        raw.iter().map(|&v| ((v as f32 - lo) / span).clamp(0.0, 1.0)).collect()
    }
}

impl Preprocessor for ThermalPrep {
    fn modality(&self) -> Modality {
        Modality::Thermal
    }
    fn shape(&self) -> Vec<usize> {
        let s = self.cfg.size as usize;
        vec![1, s, s]
    }
    fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
        match &middle_frame(w)?.data {
            FrameData::Thermal16 { width, height, data }
                if data.len() == (*width as usize) * (*height as usize) && *width > 0 && *height > 0 =>
            {
                let n = self.normalise(data);
                Ok(ModelInput::F32(resize_crop_planar(
                    &n,
                    *width,
                    *height,
                    1,
                    self.cfg.size,
                    |_, v| v,
                )))
            }
            _ => Err(bad(w, "expected Y16 thermal frames whose size matches width×height")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::modality::Sensor;

    #[test]
    fn uniform_subsample_matches_pytorchvideo() {
        assert_eq!(uniform_indices(60, 2), vec![0, 59]);
        assert_eq!(uniform_indices(1, 2), vec![0, 0]);
        assert_eq!(uniform_indices(10, 3), vec![0, 4, 9]);
    }

    fn vcfg() -> VisionPrepConfig {
        VisionPrepConfig {
            size: 224,
            frames: 2,
            mean: [0.48145466, 0.4578275, 0.40821073],
            std: [0.26862954, 0.26130258, 0.27577711],
        }
    }

    #[test]
    fn vision_shape_and_normalisation() {
        let p = VisionPrep::new(vcfg());
        let frame = Frame {
            t_ns: 0,
            data: FrameData::Rgb8 {
                width: 320,
                height: 240,
                data: vec![255; 320 * 240 * 3],
            },
        };
        let w = Window {
            sensor: Sensor::Camera,
            seq: 0,
            t_start_ns: 0,
            t_end_ns: 2,
            coverage: 1.0,
            data: WindowData::Frames(vec![frame]),
        };
        let ModelInput::F32(v) = p.process(&w).unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 3 * 2 * 224 * 224);
        let expect0 = (1.0 - 0.48145466) / 0.26862954;
        assert!((v[0] - expect0).abs() < 1e-5);
        let plane = 224 * 224;
        let expect2 = (1.0 - 0.40821073) / 0.27577711;
        assert!((v[2 * 2 * plane + plane + 5] - expect2).abs() < 1e-5);
    }

    #[test]
    fn depth_disparity_and_invalid() {
        let cfg = DepthPrepConfig {
            size: 224,
            min_depth_m: 0.01,
            max_depth_m: 50.0,
            scale: 1.0,
        };
        let p = DepthPrep::new(cfg, 0.05, 400.0);
        let d = p.disparity(&[0, 1000, 2000, 60000]);
        assert_eq!(d[0], 0.0);
        assert!((d[1] - 20.0).abs() < 1e-4);
        assert!((d[2] - 10.0).abs() < 1e-4);
        assert!((d[3] - 20.0 / 50.0).abs() < 1e-4);
    }

    #[test]
    fn bad_frame_size_is_an_error_not_a_panic() {
        let p = VisionPrep::new(vcfg());
        let frame = Frame {
            t_ns: 0,
            data: FrameData::Rgb8 {
                width: 320,
                height: 240,
                data: vec![0; 10],
            },
        };
        let w = Window {
            sensor: Sensor::Camera,
            seq: 4,
            t_start_ns: 0,
            t_end_ns: 2,
            coverage: 1.0,
            data: WindowData::Frames(vec![frame]),
        };
        let e = p.process(&w).unwrap_err().to_string();
        assert!(e.contains("vision window 4") && e.contains("320x240"), "{e}");
    }
}
