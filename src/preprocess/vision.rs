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

use super::image_ops::{
    bilinear_torch_crop_rgb8, center_crop_offsets, crop_planar, resize_bilinear_torch, resize_crop_planar,
    resize_crop_rgb8, resize_f32, short_side_size, short_side_size_video, uniform_crop_offsets,
};
use super::{bad, ModelInput, PreprocessError, Preprocessor};
use crate::config::{Crops, DepthPrepConfig, FramePick, ThermalPrepConfig, ThermalRange, VisionMode, VisionPrepConfig};
use crate::modality::Modality;
use crate::sources::{Frame, FrameData};
use crate::window::{Window, WindowData};
use std::sync::Arc;

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

fn frames_of(w: &Window) -> Result<&[Arc<Frame>], PreprocessError> {
    match &w.data {
        WindowData::Frames(f) if !f.is_empty() => Ok(f),
        WindowData::Frames(_) => Err(bad(w, "window holds no frames")),
        _ => Err(bad(w, "expected image frames in this window")),
    }
}

/// Index of the frame of a window that a single-image encoder sees (`frames` non-empty).
fn pick_index(w: &Window, frames: &[Arc<Frame>], pick: FramePick) -> usize {
    let mid = w.t_start_ns + (w.t_end_ns - w.t_start_ns) / 2;
    match pick {
        FramePick::Middle => frames
            .iter()
            .enumerate()
            .min_by_key(|(_, f)| (f.t_ns - mid).abs())
            .map_or(0, |(i, _)| i),
        FramePick::Last => frames.len().saturating_sub(1),
    }
}

/// The frame of a window that a single-image encoder sees.
fn pick_frame(w: &Window, pick: FramePick) -> Result<&Frame, PreprocessError> {
    let frames = frames_of(w)?;
    Ok(&frames[pick_index(w, frames, pick)])
}

/// `w` holding only the frames at `keep(frames)` (sorted, distinct), when that is
/// fewer than it has; any other window is returned as it is.
fn retain_frames(mut w: Window, keep: impl FnOnce(&Window, &[Arc<Frame>]) -> Vec<usize>) -> Window {
    if let WindowData::Frames(frames) = &w.data {
        if !frames.is_empty() {
            let mut idx = keep(&w, frames);
            idx.sort_unstable();
            idx.dedup();
            if idx.len() < frames.len() && idx.iter().all(|&i| i < frames.len()) {
                let kept = idx.iter().map(|&i| frames[i].clone()).collect();
                w.data = WindowData::Frames(kept);
            }
        }
    }
    w
}

/// One 16-bit single-channel frame of a window (depth or thermal) → `map` →
/// short side resized to `size`, centre cropped → `[1, size, size]`.
fn gray16_input(
    w: &Window,
    pick: FramePick,
    size: u32,
    what: &str,
    map: impl Fn(&[u16]) -> Vec<f32>,
) -> Result<ModelInput, PreprocessError> {
    let (width, height, data) = match &pick_frame(w, pick)?.data {
        FrameData::Depth16 { width, height, data } | FrameData::Thermal16 { width, height, data } => {
            (*width, *height, data)
        }
        _ => return Err(bad(w, format!("expected 16-bit {what} frames"))),
    };
    if width == 0 || height == 0 || data.len() != width as usize * height as usize {
        return Err(bad(
            w,
            format!("{what} frame {width}x{height} holds {} values", data.len()),
        ));
    }
    Ok(ModelInput::F32(resize_crop_planar(
        &map(data),
        width,
        height,
        1,
        size,
        |_, v| v,
    )))
}

pub struct VisionPrep {
    cfg: VisionPrepConfig,
}

/// One RGB frame, borrowed from a window.
struct Rgb<'a> {
    width: u32,
    height: u32,
    data: &'a [u8],
}

impl VisionPrep {
    pub fn new(cfg: VisionPrepConfig) -> Self {
        VisionPrep { cfg }
    }

    /// Crop offsets per view, in the resized frame: one centre crop (rule of the mode)
    /// or the 3 uniform crops.
    fn crop_offsets(&self, w: u32, h: u32) -> Vec<(u32, u32)> {
        let size = self.cfg.size;
        match (self.cfg.crops, self.cfg.mode) {
            (Crops::Center, VisionMode::Image) => vec![center_crop_offsets(w, h, size)],
            (Crops::Center, VisionMode::Video) => vec![uniform_crop_offsets(w, h, size, 1)],
            (Crops::Three, _) => (0..3).map(|i| uniform_crop_offsets(w, h, size, i)).collect(),
        }
    }

    /// The size each frame is resized to before cropping, per `mode`.
    fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        match self.cfg.mode {
            VisionMode::Image => short_side_size(w, h, self.cfg.size),
            VisionMode::Video => short_side_size_video(w, h, self.cfg.size),
        }
    }

    /// Frames → one `[3, T, size, size]` tensor per crop view. Only the pixels under
    /// each crop are resized (see `image_ops`); image mode stays u8 until a lookup
    /// table turns each output byte into its normalised value.
    fn clip_views(&self, frames: &[Rgb]) -> Result<Vec<Vec<f32>>, String> {
        let size = self.cfg.size;
        let plane = (size * size) as usize;
        let t = frames.len();
        let (mean, std) = (self.cfg.mean, self.cfg.std);
        let mut views: Vec<Vec<f32>> = Vec::new();
        // PIL rounds the resized image to u8; /255, then CLIP mean/std, per channel.
        let lut: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - mean[c]) / std[c]));
        let mut crop = Vec::new();
        for (ti, f) in frames.iter().enumerate() {
            let resized = self.resized_size(f.width, f.height);
            let offsets = self.crop_offsets(resized.0, resized.1);
            if views.is_empty() {
                views = vec![vec![0.0f32; 3 * t * plane]; offsets.len()];
            }
            for (view, off) in views.iter_mut().zip(offsets) {
                match self.cfg.mode {
                    VisionMode::Image => {
                        resize_crop_rgb8(f.data, f.width, f.height, resized, off, size, &mut crop)?;
                        for c in 0..3 {
                            let dst = &mut view[(c * t + ti) * plane..(c * t + ti + 1) * plane];
                            for (d, px) in dst.iter_mut().zip(crop.chunks_exact(3)) {
                                *d = lut[c][px[c] as usize];
                            }
                        }
                    }
                    VisionMode::Video => bilinear_torch_crop_rgb8(
                        f.data,
                        f.width,
                        f.height,
                        resized,
                        off,
                        size,
                        &mut view[ti * plane..],
                        t * plane,
                        |c, v| (v - mean[c]) / std[c],
                    ),
                }
            }
        }
        Ok(views)
    }

    /// The implementation `clip_views` replaced, kept as the baseline of
    /// `benches/preprocess.rs` and the reference of the tests: every whole frame
    /// converted to f32, resized, then cropped.
    #[doc(hidden)]
    pub fn clip_views_reference(&self, frames: &[(u32, u32, &[u8])]) -> Vec<Vec<f32>> {
        let plane = (self.cfg.size * self.cfg.size) as usize;
        let t = frames.len();
        let (mean, std) = (self.cfg.mean, self.cfg.std);
        let mut views: Vec<Vec<f32>> = Vec::new();
        for (ti, &(width, height, data)) in frames.iter().enumerate() {
            let (rw, rh) = self.resized_size(width, height);
            let img = match self.cfg.mode {
                VisionMode::Image => {
                    let src: Vec<f32> = data.iter().map(|&v| v as f32).collect();
                    let r = resize_f32(&src, width, height, 3, rw, rh);
                    r.into_iter().map(|v| v.round().clamp(0.0, 255.0) / 255.0).collect()
                }
                VisionMode::Video => {
                    let src: Vec<f32> = data.iter().map(|&v| v as f32 / 255.0).collect();
                    resize_bilinear_torch(&src, width, height, 3, rw, rh)
                }
            };
            let offsets = self.crop_offsets(rw, rh);
            if views.is_empty() {
                views = vec![vec![0.0f32; 3 * t * plane]; offsets.len()];
            }
            for (view, off) in views.iter_mut().zip(offsets) {
                let crop = crop_planar(&img, rw, rh, 3, self.cfg.size, off, |c, v| (v - mean[c]) / std[c]);
                for c in 0..3 {
                    view[(c * t + ti) * plane..(c * t + ti + 1) * plane]
                        .copy_from_slice(&crop[c * plane..(c + 1) * plane]);
                }
            }
        }
        views
    }

    /// `[3, T, size, size]` per crop view for raw RGB frames `(width, height, bytes)`,
    /// as a window of them would give (benchmarks feed frames without a window).
    pub fn frames(&self, frames: &[(u32, u32, &[u8])]) -> Result<Vec<Vec<f32>>, String> {
        let rgb: Vec<Rgb> = frames
            .iter()
            .map(|&(width, height, data)| Rgb { width, height, data })
            .collect();
        for f in &rgb {
            if f.width == 0 || f.height == 0 || f.data.len() != f.width as usize * f.height as usize * 3 {
                return Err(format!("RGB frame {}x{} has {} bytes", f.width, f.height, f.data.len()));
            }
        }
        self.clip_views(&rgb)
    }

    /// A single still image through the official *image* loader (PIL bicubic, u8
    /// rounding, torchvision CenterCrop), repeated to `frames` identical frames as the
    /// official `PadIm2Video` does → `[3, frames, size, size]`.
    pub fn still(&self, width: u32, height: u32, rgb: &[u8]) -> Result<ModelInput, String> {
        let image_mode = VisionPrep {
            cfg: VisionPrepConfig {
                mode: VisionMode::Image,
                crops: Crops::Center,
                ..self.cfg.clone()
            },
        };
        let one = image_mode.frames(&[(width, height, rgb)])?.swap_remove(0);
        let plane = (self.cfg.size * self.cfg.size) as usize;
        let t = self.cfg.frames;
        let mut out = vec![0.0f32; 3 * t * plane];
        for c in 0..3 {
            for ti in 0..t {
                out[(c * t + ti) * plane..(c * t + ti + 1) * plane].copy_from_slice(&one[c * plane..(c + 1) * plane]);
            }
        }
        Ok(ModelInput::F32(out))
    }

    fn sampled<'a>(&self, w: &'a Window) -> Result<Vec<Rgb<'a>>, PreprocessError> {
        let frames = frames_of(w)?;
        uniform_indices(frames.len(), self.cfg.frames)
            .into_iter()
            .map(|i| match &frames[i].data {
                FrameData::Rgb8 { width, height, data }
                    if *width > 0 && *height > 0 && data.len() == (*width as usize) * (*height as usize) * 3 =>
                {
                    Ok(Rgb {
                        width: *width,
                        height: *height,
                        data,
                    })
                }
                FrameData::Rgb8 { width, height, data } => Err(bad(
                    w,
                    format!(
                        "RGB frame {width}x{height} has {} bytes, expected {}",
                        data.len(),
                        *width as usize * *height as usize * 3
                    ),
                )),
                _ => Err(bad(w, "expected RGB8 frames")),
            })
            .collect()
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
        let mut v = self.views(w)?;
        Ok(v.swap_remove(v.len() / 2))
    }
    fn views(&self, w: &Window) -> Result<Vec<ModelInput>, PreprocessError> {
        let frames = self.sampled(w)?;
        let views = self.clip_views(&frames).map_err(|e| bad(w, e))?;
        Ok(views.into_iter().map(ModelInput::F32).collect())
    }
    /// Keeps the `frames` frames the uniform subsample reads (2 of a 1080p camera's 60).
    fn retain(&self, w: Window) -> Window {
        let n = self.cfg.frames;
        retain_frames(w, |_, frames| uniform_indices(frames.len(), n))
    }
}

pub struct DepthPrep {
    cfg: DepthPrepConfig,
    baseline_m: f32,
    focal_px: f32,
    /// What devices report about themselves overrides the calibration, per source.
    device: crate::sources::DeviceGeometry,
}

impl DepthPrep {
    pub fn new(cfg: DepthPrepConfig, baseline_m: f32, focal_px: f32) -> Self {
        DepthPrep {
            cfg,
            baseline_m,
            focal_px,
            device: Default::default(),
        }
    }

    /// Use the geometry devices report (a RealSense's baseline and focal length) for
    /// their sources' windows.
    pub fn with_device_geometry(mut self, device: crate::sources::DeviceGeometry) -> Self {
        self.device = device;
        self
    }

    /// Millimetre depth → disparity (pixels × scale), invalid (0) → 0, with the
    /// calibration's geometry.
    pub fn disparity(&self, mm: &[u16]) -> Vec<f32> {
        self.disparity_with(mm, self.baseline_m, self.focal_px)
    }

    fn disparity_with(&self, mm: &[u16], baseline_m: f32, focal_px: f32) -> Vec<f32> {
        let bf = baseline_m * focal_px * self.cfg.scale;
        mm.iter()
            .map(|&d| {
                if d == 0 {
                    self.cfg.invalid_disparity
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
        let (b, f) = match self.device.get(&w.source) {
            Some(g) => (g.baseline_m, g.focal_px),
            None => (self.baseline_m, self.focal_px),
        };
        gray16_input(w, self.cfg.frame, self.cfg.size, "depth", |d| {
            self.disparity_with(d, b, f)
        })
    }
    /// Keeps the one frame embedded.
    fn retain(&self, w: Window) -> Window {
        let pick = self.cfg.frame;
        retain_frames(w, |w, frames| vec![pick_index(w, frames, pick)])
    }
}

pub struct ThermalPrep {
    cfg: ThermalPrepConfig,
    radiometry: Option<crate::calibration::Radiometry>,
}

impl ThermalPrep {
    pub fn new(cfg: ThermalPrepConfig) -> Self {
        ThermalPrep { cfg, radiometry: None }
    }

    /// With the calibration's radiometry (`range = "kelvin"` needs it).
    pub fn with_radiometry(mut self, r: Option<crate::calibration::Radiometry>) -> Self {
        self.radiometry = r;
        self
    }

    /// Raw Y16 → [0, 1].
    pub fn normalise(&self, raw: &[u16]) -> Vec<f32> {
        let (lo, hi) = match self.cfg.range {
            ThermalRange::Fixed => (self.cfg.raw_min, self.cfg.raw_max),
            ThermalRange::Kelvin => match self.radiometry {
                Some(r) => (
                    r.counts_at(self.cfg.kelvin_min as f64) as f32,
                    r.counts_at(self.cfg.kelvin_max as f64) as f32,
                ),
                // Refused at start (Models::load); counts as a fallback.
                None => (self.cfg.raw_min, self.cfg.raw_max),
            },
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
        gray16_input(w, self.cfg.frame, self.cfg.size, "thermal", |d| self.normalise(d))
    }
    /// Keeps the one frame embedded.
    fn retain(&self, w: Window) -> Window {
        let pick = self.cfg.frame;
        retain_frames(w, |w, frames| vec![pick_index(w, frames, pick)])
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

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
            mode: VisionMode::Image,
            crops: Crops::Center,
            mean: [0.48145466, 0.4578275, 0.40821073],
            std: [0.26862954, 0.26130258, 0.27577711],
        }
    }

    /// A textured frame (gradients, stripes and noise) exercises every filter tap.
    fn textured(w: u32, h: u32) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..w * h * 3)
            .map(|i| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                let (px, py, c) = ((i / 3) % w, (i / 3) / w, i % 3);
                let v = (px * 255 / w) as i32 * (c as i32 + 1) / 3 + if (px / 7 + py / 5) % 2 == 0 { 60 } else { 0 };
                (v + (x >> 28) as i32).clamp(0, 255) as u8
            })
            .collect()
    }

    #[test]
    fn crop_first_paths_match_the_whole_frame_reference() {
        // Landscape 1080p, portrait, and an odd size; both modes, both crop rules.
        for (w, h) in [(1920u32, 1080u32), (480, 640), (333, 251)] {
            let data = textured(w, h);
            for mode in [VisionMode::Image, VisionMode::Video] {
                for crops in [Crops::Center, Crops::Three] {
                    let p = VisionPrep::new(VisionPrepConfig { mode, crops, ..vcfg() });
                    let frames = [(w, h, data.as_slice()), (w, h, data.as_slice())];
                    let fast = p.frames(&frames).unwrap();
                    let reference = p.clip_views_reference(&frames);
                    assert_eq!(fast.len(), reference.len());
                    // Image mode: u8 fixed-point filters rounding between the passes (as
                    // PIL does) vs f32 ones rounding once: most pixels within 1/255,
                    // a few where stripes overshoot up to 4/255 (tests/parity.rs holds
                    // both to PIL itself). Video mode: the same f32 arithmetic.
                    let px = |p: f32| p / 255.0 / 0.26 + 1e-4; // pixel units → normalised
                    for (a, b) in fast.iter().zip(&reference) {
                        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                        let over = a.iter().zip(b).filter(|(x, y)| (*x - *y).abs() > px(1.0)).count();
                        let what = format!("{w}x{h} {mode:?} {crops:?}: max |Δ| {d}, {over} over 1/255");
                        if mode == VisionMode::Image {
                            assert!(d <= px(4.0) && over * 200 <= a.len(), "{what}");
                        } else {
                            assert!(d <= 1e-6, "{what}");
                        }
                    }
                }
            }
        }
    }

    /// `retain` keeps only what `views` reads: the same views from fewer frames.
    #[test]
    fn retained_windows_embed_the_same_from_fewer_frames() {
        let window = |t: usize, frame: &dyn Fn(usize) -> FrameData| Window {
            source: "s".into(),
            modality: Modality::Vision,
            seq: 3,
            t_start_ns: 0,
            t_end_ns: 1_000,
            coverage: 1.0,
            // Uneven times, so "middle" is not simply the middle index.
            data: WindowData::Frames(
                (0..t)
                    .map(|i| {
                        Arc::new(Frame {
                            t_ns: (i * i * 1_000 / (t * t)) as i64,
                            data: frame(i),
                        })
                    })
                    .collect(),
            ),
        };
        let n_frames = |w: &Window| match &w.data {
            WindowData::Frames(f) => f.len(),
            _ => 0,
        };
        // Each frame different, so a wrong pick shows.
        let rgb = |i: usize| FrameData::Rgb8 {
            width: 40,
            height: 30,
            data: (0..40 * 30 * 3).map(|k| ((k * 7 + i * 31) % 256) as u8).collect(),
        };
        for frames in [1, 2, 3, 8] {
            let p = VisionPrep::new(VisionPrepConfig {
                size: 24,
                frames,
                ..vcfg()
            });
            for t in [1, 2, 3, 5, 60] {
                let w = window(t, &rgb);
                let r = p.retain(w.clone());
                assert_eq!(
                    p.views(&r).unwrap(),
                    p.views(&w).unwrap(),
                    "{t} frames, {frames} sampled"
                );
                assert_eq!(n_frames(&r), t.min(frames), "{t} frames, {frames} sampled");
            }
        }
        let gray = |i: usize| FrameData::Depth16 {
            width: 16,
            height: 12,
            data: (0..16 * 12).map(|k| (500 + k * 3 + i * 101) as u16).collect(),
        };
        let therm = |i: usize| FrameData::Thermal16 {
            width: 16,
            height: 12,
            data: (0..16 * 12).map(|k| (7000 + k * 5 + i * 211) as u16).collect(),
        };
        for pick in [FramePick::Middle, FramePick::Last] {
            let d = DepthPrep::new(
                DepthPrepConfig {
                    frame: pick,
                    size: 8,
                    ..depth_cfg()
                },
                0.05,
                400.0,
            );
            let th = ThermalPrep::new(ThermalPrepConfig {
                size: 8,
                frame: pick,
                range: ThermalRange::Fixed,
                raw_min: 7000.0,
                raw_max: 9000.0,
                kelvin_min: 250.0,
                kelvin_max: 350.0,
            });
            for t in [1, 4, 9] {
                let w = window(t, &gray);
                let r = d.retain(w.clone());
                assert_eq!(d.views(&r).unwrap(), d.views(&w).unwrap(), "depth {pick:?} {t}");
                assert_eq!(n_frames(&r), 1);
                let w = window(t, &therm);
                let r = th.retain(w.clone());
                assert_eq!(th.views(&r).unwrap(), th.views(&w).unwrap(), "thermal {pick:?} {t}");
                assert_eq!(n_frames(&r), 1);
            }
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
            source: "cam".into(),
            modality: Modality::Vision,
            seq: 0,
            t_start_ns: 0,
            t_end_ns: 2,
            coverage: 1.0,
            data: WindowData::Frames(vec![Arc::new(frame)]),
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
    fn video_mode_three_crops() {
        let mut cfg = vcfg();
        cfg.mode = VisionMode::Video;
        cfg.crops = Crops::Three;
        let p = VisionPrep::new(cfg);
        // Left half black, right half white: crop 0 is darker than crop 2.
        let (w, h) = (320u32, 240u32);
        let data: Vec<u8> = (0..w * h)
            .flat_map(|i| if i % w < w / 2 { [0u8; 3] } else { [255u8; 3] })
            .collect();
        let frames: Vec<Frame> = (0..4)
            .map(|i| Frame {
                t_ns: i,
                data: FrameData::Rgb8 {
                    width: w,
                    height: h,
                    data: data.clone(),
                },
            })
            .collect();
        let win = Window {
            source: "cam".into(),
            modality: Modality::Vision,
            seq: 0,
            t_start_ns: 0,
            t_end_ns: 4,
            coverage: 1.0,
            data: WindowData::Frames(frames.into_iter().map(Arc::new).collect()),
        };
        let views = p.views(&win).unwrap();
        assert_eq!(views.len(), 3);
        let mean = |v: &ModelInput| match v {
            ModelInput::F32(x) => x.iter().sum::<f32>() / x.len() as f32,
            _ => unreachable!(),
        };
        assert!(mean(&views[0]) < mean(&views[1]) && mean(&views[1]) < mean(&views[2]));
        assert_eq!(p.process(&win).unwrap(), views[1]);
    }

    fn depth_cfg() -> DepthPrepConfig {
        DepthPrepConfig {
            size: 224,
            frame: FramePick::Middle,
            min_depth_m: 0.01,
            max_depth_m: 50.0,
            scale: 1.0,
            invalid_disparity: 0.0,
        }
    }

    #[test]
    fn depth_disparity_and_invalid() {
        let cfg = depth_cfg();
        let p = DepthPrep::new(cfg, 0.05, 400.0);
        let d = p.disparity(&[0, 1000, 2000, 60000]);
        assert_eq!(d[0], 0.0);
        assert!((d[1] - 20.0).abs() < 1e-4);
        assert!((d[2] - 10.0).abs() < 1e-4);
        assert!((d[3] - 20.0 / 50.0).abs() < 1e-4);
    }

    #[test]
    fn a_devices_own_depth_geometry_is_used_for_its_windows() {
        let cfg = depth_cfg();
        let device = crate::sources::DeviceGeometry::default();
        let p = DepthPrep::new(cfg, 0.05, 400.0).with_device_geometry(device.clone());
        let win = |source: &str| Window {
            source: source.into(),
            modality: Modality::Depth,
            seq: 0,
            t_start_ns: 0,
            t_end_ns: 2,
            coverage: 1.0,
            data: WindowData::Frames(vec![Arc::new(Frame {
                t_ns: 0,
                data: FrameData::Depth16 {
                    width: 224,
                    height: 224,
                    data: vec![1000; 224 * 224],
                },
            })]),
        };
        let value = |w: &Window| match p.process(w).unwrap() {
            ModelInput::F32(v) => v[0],
            _ => unreachable!(),
        };
        // Calibration file: 0.05 m × 400 px / 1 m = 20 px of disparity.
        assert!((value(&win("rs0")) - 20.0).abs() < 1e-3);
        // The RealSense reported 0.05 m and 382.6 px at open: its windows use that.
        device.set(
            "rs0",
            crate::sources::DepthGeometry {
                baseline_m: 0.05,
                focal_px: 382.6,
            },
        );
        assert!((value(&win("rs0")) - 19.13).abs() < 1e-3);
        assert!(
            (value(&win("other")) - 20.0).abs() < 1e-3,
            "other sources keep the file's"
        );
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
            source: "cam".into(),
            modality: Modality::Vision,
            seq: 4,
            t_start_ns: 0,
            t_end_ns: 2,
            coverage: 1.0,
            data: WindowData::Frames(vec![Arc::new(frame)]),
        };
        let e = p.process(&w).unwrap_err().to_string();
        assert!(e.contains("vision window 4") && e.contains("320x240"), "{e}");
    }

    /// A 6×4 Y16 frame whose centre 4×4 (what a 4-pixel crop keeps: columns 1..=4) is
    /// `THERMAL_INNER`; column 0 holds 100 and column 5 holds 60 000, outside the crop.
    const THERMAL_INNER: [[u16; 4]; 4] = [
        [20000, 20500, 21000, 22000],
        [19000, 23000, 24000, 30000],
        [21500, 21500, 21500, 21500],
        [25000, 20000, 22500, 23500],
    ];

    fn thermal_window() -> Window {
        let mut data = Vec::new();
        for row in THERMAL_INNER {
            data.push(100);
            data.extend(row);
            data.push(60000);
        }
        Window {
            source: "lepton".into(),
            modality: Modality::Thermal,
            seq: 0,
            t_start_ns: 0,
            t_end_ns: 2_000_000_000,
            coverage: 1.0,
            data: WindowData::Frames(vec![Arc::new(Frame {
                t_ns: 1_000_000_000,
                data: FrameData::Thermal16 {
                    width: 6,
                    height: 4,
                    data,
                },
            })]),
        }
    }

    fn thermal_cfg(range: ThermalRange) -> ThermalPrepConfig {
        ThermalPrepConfig {
            size: 4,
            frame: FramePick::Middle,
            range,
            raw_min: 20000.0,
            raw_max: 24000.0,
            kelvin_min: 300.0,
            kelvin_max: 380.0,
        }
    }

    fn thermal_tensor(p: &ThermalPrep) -> Vec<f32> {
        match p.process(&thermal_window()).unwrap() {
            ModelInput::F32(v) => v,
            _ => unreachable!(),
        }
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-6, "{what}: value {i} is {g}, want {w} ({got:?})");
        }
    }

    /// Y16 → [0, 1] in each `range` mode, through `process` (the 4×4 centre crop of
    /// the 6×4 frame), against values worked out by hand.
    #[test]
    fn thermal_counts_map_to_the_unit_range_in_every_mode() {
        // fixed: raw 20 000..24 000 → 0..1 (span 4000), clipped at both ends.
        #[rustfmt::skip]
        let fixed = [
            0.0,   0.125, 0.25,  0.5,
            0.0,   0.75,  1.0,   1.0,
            0.375, 0.375, 0.375, 0.375,
            1.0,   0.0,   0.625, 0.875,
        ];
        let p = ThermalPrep::new(thermal_cfg(ThermalRange::Fixed));
        assert_close(&thermal_tensor(&p), &fixed, "fixed");
        // A radiometry (calibration `[thermal]`) is not used in fixed mode.
        let r = crate::calibration::Radiometry {
            kelvin_per_count: 0.01,
            kelvin_offset: 0.0,
        };
        let p = ThermalPrep::new(thermal_cfg(ThermalRange::Fixed)).with_radiometry(Some(r));
        assert_close(&thermal_tensor(&p), &fixed, "fixed, with a radiometry");

        // kelvin: K = 0.02·counts − 100, so 300 K is 20 000 counts and 380 K 24 000:
        // the same map as fixed above, here from temperatures. The raw range is set
        // elsewhere so that a fall-back to it would show.
        let r = crate::calibration::Radiometry {
            kelvin_per_count: 0.02,
            kelvin_offset: -100.0,
        };
        let cfg = ThermalPrepConfig {
            raw_min: 0.0,
            raw_max: 65535.0,
            ..thermal_cfg(ThermalRange::Kelvin)
        };
        let p = ThermalPrep::new(cfg.clone()).with_radiometry(Some(r));
        assert_close(&thermal_tensor(&p), &fixed, "kelvin");
        // Another scale: 0.05 K per count, offset 0 → 300 K = 6000, 380 K = 7600 counts:
        // every inner value is above 7600 → 1.
        let hot = crate::calibration::Radiometry {
            kelvin_per_count: 0.05,
            kelvin_offset: 0.0,
        };
        let p = ThermalPrep::new(cfg.clone()).with_radiometry(Some(hot));
        assert_close(&thermal_tensor(&p), &[1.0; 16], "kelvin, 0.05 K per count");
        // 300 K..380 K at 0.01 K/count is 30 000..38 000: only 30 000 reaches 0, the
        // rest is below it.
        let cold = crate::calibration::Radiometry {
            kelvin_per_count: 0.01,
            kelvin_offset: 0.0,
        };
        let p = ThermalPrep::new(cfg).with_radiometry(Some(cold));
        assert_close(&thermal_tensor(&p), &[0.0; 16], "kelvin, 0.01 K per count");

        // auto: the WHOLE frame's min and max (100 and 60 000, both outside the crop)
        // → (v − 100) / 59 900.
        #[rustfmt::skip]
        let auto = [
            0.332_220_37, 0.340_567_61, 0.348_914_86, 0.365_609_35,
            0.315_525_88, 0.382_303_84, 0.398_998_33, 0.499_165_28,
            0.357_262_10, 0.357_262_10, 0.357_262_10, 0.357_262_10,
            0.415_692_82, 0.332_220_37, 0.373_956_59, 0.390_651_09,
        ];
        let p = ThermalPrep::new(thermal_cfg(ThermalRange::Auto));
        assert_close(&thermal_tensor(&p), &auto, "auto");
        // A flat frame has no range: everything maps to 0 (no division by zero).
        assert_eq!(p.normalise(&[5000; 6]), vec![0.0; 6]);
        // Two values one count apart: the lower is 0, the higher 1.
        assert_eq!(p.normalise(&[7, 8, 7]), vec![0.0, 1.0, 0.0]);
    }

    /// `build_all` hands the calibration's `[thermal]` radiometry to the thermal
    /// preprocessor: `range = "kelvin"` then maps temperatures, as worked out above.
    #[test]
    fn the_calibrations_radiometry_reaches_the_thermal_preprocessor() {
        let mut cfg = crate::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .preprocess;
        cfg.thermal = ThermalPrepConfig {
            raw_min: 0.0,
            raw_max: 65535.0,
            ..thermal_cfg(ThermalRange::Kelvin)
        };
        let calib = crate::calibration::Calibration::parse(
            &format!(
                "{}\n[thermal]\nkelvin_per_count = 0.02\nkelvin_offset = -100.0\n",
                crate::calibration::EXAMPLE_TOML
            ),
            "cal.toml",
        )
        .unwrap();
        let all = crate::preprocess::build_all(&cfg, &calib, &Default::default());
        let thermal = all.iter().find(|p| p.modality() == Modality::Thermal).unwrap();
        let ModelInput::F32(got) = thermal.process(&thermal_window()).unwrap() else {
            unreachable!()
        };
        #[rustfmt::skip]
        let want = [
            0.0,   0.125, 0.25,  0.5,
            0.0,   0.75,  1.0,   1.0,
            0.375, 0.375, 0.375, 0.375,
            1.0,   0.0,   0.625, 0.875,
        ];
        assert_close(&got, &want, "kelvin through build_all");
    }
}
