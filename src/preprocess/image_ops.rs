//! Image helpers shared by vision, depth and thermal preprocessing: PIL-compatible
//! antialiased bicubic resize (Catmull-Rom, a = −0.5), torchvision's resize size rule
//! and centre crop.
//!
//! The hot paths never resize a whole frame: a resize followed by a crop is computed as
//! one resize of the crop's *box* in source coordinates, which PIL defines (and
//! `fast_image_resize` implements) so that the filter still reads the pixels around
//! the box. The result equals resize-then-crop up to rounding, and only the source
//! rows and columns under the crop are touched (1080p: the centre 1080×1080, not all
//! 1920 columns). RGB frames stay u8 throughout (fixed-point filters, as PIL itself
//! runs on 8-bit images); only the final 224×224 is normalised to f32.

use fast_image_resize::{
    images::{Image, ImageRef},
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use std::cell::RefCell;

thread_local! {
    /// One resizer per thread: it keeps its scratch buffers between frames.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn bicubic() -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
}

/// The options that make a `size`×`size` output equal the crop at `(left, top)` of the
/// image resized from `w`×`h` to `rw`×`rh`: the crop's box in source coordinates.
fn crop_box(w: u32, h: u32, (rw, rh): (u32, u32), (left, top): (u32, u32), size: u32) -> ResizeOptions {
    let (sx, sy) = (w as f64 / rw as f64, h as f64 / rh as f64);
    let (l, t) = (left as f64 * sx, top as f64 * sy);
    // min(): float rounding must not push the box past the image edge.
    let (bw, bh) = (
        (size as f64 * sx).min(w as f64 - l),
        (size as f64 * sy).min(h as f64 - t),
    );
    bicubic().crop(l, t, bw, bh)
}

/// PIL `Image.resize((rw, rh), BICUBIC)` of interleaved u8 RGB, then the `size`×`size`
/// crop at `(left, top)` of that, written interleaved into `dst` (resized to fit).
/// Requires `left + size <= rw`, `top + size <= rh` and `rgb.len() == w·h·3`.
pub fn resize_crop_rgb8(
    rgb: &[u8],
    w: u32,
    h: u32,
    resized: (u32, u32),
    offset: (u32, u32),
    size: u32,
    dst: &mut Vec<u8>,
) -> Result<(), String> {
    let src = ImageRef::new(w, h, rgb, PixelType::U8x3).map_err(|e| format!("RGB frame {w}x{h}: {e}"))?;
    dst.resize(size as usize * size as usize * 3, 0);
    let mut out =
        Image::from_slice_u8(size, size, dst, PixelType::U8x3).map_err(|e| format!("crop {size}x{size}: {e}"))?;
    let opts = crop_box(w, h, resized, offset, size);
    RESIZER.with(|r| r.borrow_mut().resize(&src, &mut out, &opts).map_err(|e| e.to_string()))
}

/// torchvision `Resize(size)` with an int: the short side becomes `size`, the long side
/// `int(size * long / short)` (truncated). Returns (new_w, new_h).
pub fn short_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size as u64 * long as u64) / short.max(1) as u64) as u32;
    if w <= h {
        (size, new_long.max(1))
    } else {
        (new_long.max(1), size)
    }
}

/// Resize an interleaved f32 image of `channels` (1 or 3) channels to `dw`×`dh` with
/// `opts` (the whole image, or a crop's box).
fn resize_f32_with(src: &[f32], w: u32, h: u32, channels: usize, dw: u32, dh: u32, opts: &ResizeOptions) -> Vec<f32> {
    let pt = if channels == 3 {
        PixelType::F32x3
    } else {
        PixelType::F32
    };
    let mut s = Image::new(w, h, pt);
    for (dst, v) in s.buffer_mut().chunks_exact_mut(4).zip(src) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
    let mut d = Image::new(dw, dh, pt);
    RESIZER
        .with(|r| r.borrow_mut().resize(&s, &mut d, opts))
        .expect("same pixel type, non-empty sizes, box inside the image");
    d.buffer()
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Resize an interleaved f32 image with `channels` (1 or 3) channels.
pub fn resize_f32(src: &[f32], w: u32, h: u32, channels: usize, dw: u32, dh: u32) -> Vec<f32> {
    if (w, h) == (dw, dh) {
        return src.to_vec();
    }
    resize_f32_with(src, w, h, channels, dw, dh, &bicubic())
}

/// torchvision `CenterCrop`: offsets `int(round((dim - crop) / 2))`, Python rounding
/// (ties to even). Returns (left, top).
pub fn center_crop_offsets(w: u32, h: u32, crop: u32) -> (u32, u32) {
    let off = |d: u32| (((d as f64 - crop as f64) / 2.0).round_ties_even()).max(0.0) as u32;
    (off(w), off(h))
}

/// Resize short side to `size`, centre crop `size`×`size` (one resize of the crop's
/// box), output planar `[channels, size, size]`; `post` maps each resized value.
pub fn resize_crop_planar(
    src: &[f32],
    w: u32,
    h: u32,
    channels: usize,
    size: u32,
    post: impl FnMut(usize, f32) -> f32,
) -> Vec<f32> {
    let (rw, rh) = short_side_size(w, h, size);
    let offsets = center_crop_offsets(rw, rh, size);
    if (w, h) == (rw, rh) {
        return crop_planar(src, w, h, channels, size, offsets, post);
    }
    let opts = crop_box(w, h, (rw, rh), offsets, size);
    let cropped = resize_f32_with(src, w, h, channels, size, size, &opts);
    crop_planar(&cropped, size, size, channels, size, (0, 0), post)
}

/// `resize_bilinear_torch` then the `size`×`size` crop at `(left, top)`, computing only
/// the cropped pixels, straight from u8 RGB (`/255` applied) into planar
/// `post(channel, v)` values written at `dst[c·plane_stride + y·size + x]`.
#[allow(clippy::too_many_arguments)]
pub fn bilinear_torch_crop_rgb8(
    rgb: &[u8],
    w: u32,
    h: u32,
    (dw, dh): (u32, u32),
    (left, top): (u32, u32),
    size: u32,
    dst: &mut [f32],
    plane_stride: usize,
    post: impl Fn(usize, f32) -> f32,
) {
    let (w, h, s) = (w as usize, h as usize, size as usize);
    let xs = bilinear_axis(w, dw as usize, left as usize..left as usize + s);
    let ys = bilinear_axis(h, dh as usize, top as usize..top as usize + s);
    for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, lx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let p = |x: usize, y: usize| rgb[(y * w + x) * 3 + c] as f32 / 255.0;
                let top = (1.0 - lx) * p(x0, y0) + lx * p(x1, y0);
                let bottom = (1.0 - lx) * p(x0, y1) + lx * p(x1, y1);
                dst[c * plane_stride + oy * s + ox] = post(c, (1.0 - ly) * top + ly * bottom);
            }
        }
    }
}

/// pytorchvideo `short_side_scale` output size: `floor(long/short · size)` for the
/// long side (`w < h` picks portrait). Returns (new_w, new_h).
pub fn short_side_size_video(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w < h {
        (size, ((h as f64 / w as f64) * size as f64).floor() as u32)
    } else {
        (((w as f64 / h as f64) * size as f64).floor() as u32, size)
    }
}

/// Source taps of `torch.nn.functional.interpolate(mode="bilinear",
/// align_corners=False)` along one axis of `n_in` → `n_out` pixels, for the output
/// pixels `out`: (first, second, weight of the second).
fn bilinear_axis(n_in: usize, n_out: usize, out: std::ops::Range<usize>) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f32 / n_out as f32;
    out.map(|d| {
        let p = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (p as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, p - i0 as f32)
    })
    .collect()
}

/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` (no
/// antialias) on an interleaved f32 image with `channels` channels.
pub fn resize_bilinear_torch(src: &[f32], w: u32, h: u32, channels: usize, dw: u32, dh: u32) -> Vec<f32> {
    let (w, h, dw, dh) = (w as usize, h as usize, dw as usize, dh as usize);
    let xs = bilinear_axis(w, dw, 0..dw);
    let ys = bilinear_axis(h, dh, 0..dh);
    let mut out = vec![0.0f32; dw * dh * channels];
    for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, lx)) in xs.iter().enumerate() {
            for c in 0..channels {
                let p = |x: usize, y: usize| src[(y * w + x) * channels + c];
                let top = (1.0 - lx) * p(x0, y0) + lx * p(x1, y0);
                let bottom = (1.0 - lx) * p(x0, y1) + lx * p(x1, y1);
                out[(oy * dw + ox) * channels + c] = (1.0 - ly) * top + ly * bottom;
            }
        }
    }
    out
}

/// pytorchvideo `uniform_crop` offsets for crop `index` of 3 (0: left/top, 1: centre,
/// 2: right/bottom along the long side; the centre uses `ceil((dim - size) / 2)`).
/// Returns (left, top).
pub fn uniform_crop_offsets(w: u32, h: u32, size: u32, index: usize) -> (u32, u32) {
    let mut x = (w.saturating_sub(size) as f64 / 2.0).ceil() as u32;
    let mut y = (h.saturating_sub(size) as f64 / 2.0).ceil() as u32;
    if h > w {
        match index {
            0 => y = 0,
            2 => y = h.saturating_sub(size),
            _ => {}
        }
    } else {
        match index {
            0 => x = 0,
            2 => x = w.saturating_sub(size),
            _ => {}
        }
    }
    (x, y)
}

/// Crop `size`×`size` at (left, top) from an interleaved image into planar
/// `[channels, size, size]`, mapping each value through `post(channel, v)`.
pub fn crop_planar(
    img: &[f32],
    w: u32,
    h: u32,
    channels: usize,
    size: u32,
    (left, top): (u32, u32),
    mut post: impl FnMut(usize, f32) -> f32,
) -> Vec<f32> {
    let s = size as usize;
    let mut out = vec![0.0f32; channels * s * s];
    for c in 0..channels {
        for y in 0..s {
            let sy = (top as usize + y).min(h as usize - 1);
            for x in 0..s {
                let sx = (left as usize + x).min(w as usize - 1);
                out[c * s * s + y * s + x] = post(c, img[(sy * w as usize + sx) * channels + c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_sizes() {
        assert_eq!(short_side_size(640, 480, 224), (298, 224));
        assert_eq!(short_side_size(480, 640, 224), (224, 298));
        assert_eq!(short_side_size(100, 100, 224), (224, 224));
        assert_eq!(center_crop_offsets(298, 224, 224), (37, 0));
        // (299-224)/2 = 37.5 → 38 (ties to even), (301-224)/2 = 38.5 → 38.
        assert_eq!(center_crop_offsets(299, 224, 224).0, 38);
        assert_eq!(center_crop_offsets(301, 224, 224).0, 38);
    }

    #[test]
    fn pytorchvideo_rules() {
        assert_eq!(short_side_size_video(320, 240, 224), (298, 224));
        assert_eq!(short_side_size_video(240, 320, 224), (224, 298));
        assert_eq!(uniform_crop_offsets(298, 224, 224, 0), (0, 0));
        assert_eq!(uniform_crop_offsets(298, 224, 224, 1), (37, 0));
        assert_eq!(uniform_crop_offsets(299, 224, 224, 1), (38, 0));
        assert_eq!(uniform_crop_offsets(298, 224, 224, 2), (74, 0));
        assert_eq!(uniform_crop_offsets(224, 300, 224, 2), (0, 76));
    }

    #[test]
    fn bilinear_matches_torch_on_a_ramp() {
        // 4 → 2 pixels: torch gives the means of pairs for align_corners=False.
        let out = resize_bilinear_torch(&[0.0, 1.0, 2.0, 3.0], 4, 1, 1, 2, 1);
        assert_eq!(out, vec![0.5, 2.5]);
        // Upscale 2 → 4: [0, 0.25, 0.75, 1].
        let out = resize_bilinear_torch(&[0.0, 1.0], 2, 1, 1, 4, 1);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![0.25f32; 37 * 23 * 3];
        let out = resize_crop_planar(&src, 37, 23, 3, 16, |_, v| v);
        assert_eq!(out.len(), 3 * 16 * 16);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-5));
    }
}

#[cfg(test)]
mod crop_box_tests {
    use super::*;

    /// The crop-box resize equals resize-then-crop on f32 (depth and thermal sizes, up-
    /// and downscaling): the filter reads the pixels around the box, as PIL's does.
    #[test]
    fn crop_box_equals_resize_then_crop() {
        for (w, h) in [(160u32, 120u32), (848, 480), (120, 160), (333, 251)] {
            let src: Vec<f32> = (0..w * h)
                .map(|i| ((i % w) as f32 * 0.37).sin() * 100.0 + ((i / w) as f32 * 0.23).cos() * 50.0)
                .collect();
            let (rw, rh) = short_side_size(w, h, 224);
            let whole = resize_f32(&src, w, h, 1, rw, rh);
            let old = crop_planar(&whole, rw, rh, 1, 224, center_crop_offsets(rw, rh, 224), |_, v| v);
            let new = resize_crop_planar(&src, w, h, 1, 224, |_, v| v);
            let d = old.iter().zip(&new).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(d < 1e-3, "{w}x{h}: max |Δ| {d}");
        }
    }
}
