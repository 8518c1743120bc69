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
    mut post: impl FnMut(usize, f32) -> f32,
) -> Vec<f32> {
    let (rw, rh) = short_side_size(w, h, size);
    let resized = resize_f32(src, w, h, channels, rw, rh);
    let (left, top) = center_crop_offsets(rw, rh, size);
    let s = size as usize;
    let mut out = vec![0.0f32; channels * s * s];
    for c in 0..channels {
        for y in 0..s {
            let sy = (top as usize + y).min(rh as usize - 1);
            for x in 0..s {
                let sx = (left as usize + x).min(rw as usize - 1);
                let v = resized[(sy * rw as usize + sx) * channels + c];
                out[c * s * s + y * s + x] = post(c, v);
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
    fn constant_image_stays_constant() {
        let src = vec![0.25f32; 37 * 23 * 3];
        let out = resize_crop_planar(&src, 37, 23, 3, 16, |_, v| v);
        assert_eq!(out.len(), 3 * 16 * 16);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-5));
    }
}
