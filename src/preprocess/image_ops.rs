//! Image helpers shared by vision, depth and thermal preprocessing: PIL-compatible
//! antialiased bicubic resize (Catmull-Rom, a = −0.5, on f32), torchvision's resize
//! size rule and centre crop.

use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

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

/// Resize an interleaved f32 image with `channels` (1 or 3) channels.
pub fn resize_f32(src: &[f32], w: u32, h: u32, channels: usize, dw: u32, dh: u32) -> Vec<f32> {
    if (w, h) == (dw, dh) {
        return src.to_vec();
    }
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
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new()
        .resize(&s, &mut d, &opts)
        .expect("same pixel type and non-empty sizes");
    d.buffer()
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// torchvision `CenterCrop`: offsets `int(round((dim - crop) / 2))`, Python rounding
/// (ties to even). Returns (left, top).
pub fn center_crop_offsets(w: u32, h: u32, crop: u32) -> (u32, u32) {
    let off = |d: u32| (((d as f64 - crop as f64) / 2.0).round_ties_even()).max(0.0) as u32;
    (off(w), off(h))
}

/// Resize short side to `size`, centre crop `size`×`size`, output planar
/// `[channels, size, size]`; `post` maps each resized value (e.g. PIL's u8 rounding and
/// normalisation).
pub fn resize_crop_planar(
    src: &[f32],
    w: u32,
    h: u32,
    channels: usize,
    size: u32,
    post: impl FnMut(usize, f32) -> f32,
) -> Vec<f32> {
    let (rw, rh) = short_side_size(w, h, size);
    let resized = resize_f32(src, w, h, channels, rw, rh);
    let offsets = center_crop_offsets(rw, rh, size);
    crop_planar(&resized, rw, rh, channels, size, offsets, post)
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

/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` (no
/// antialias) on an interleaved f32 image with `channels` channels.
pub fn resize_bilinear_torch(src: &[f32], w: u32, h: u32, channels: usize, dw: u32, dh: u32) -> Vec<f32> {
    let (w, h, dw, dh) = (w as usize, h as usize, dw as usize, dh as usize);
    let axis = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|d| {
                let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (s as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let xs = axis(w, dw);
    let ys = axis(h, dh);
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
