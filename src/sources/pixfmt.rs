//! Camera pixel formats → frames. The capture drivers (V4L2 UVC cameras, Y16 thermal
//! cores) hand their buffers here, so every conversion is plain code tested without
//! hardware: `mjpeg`, `yuyv` (YUV 4:2:2, BT.601 limited range, as UVC cameras send it),
//! `rgb3` (packed RGB24), `grey` (8-bit luma) and `y16` (16-bit little-endian counts,
//! e.g. a PureThermal/Lepton core).
//!
//! A buffer whose length does not fit its format and size is [`SourceError::BadData`]:
//! the runner skips that frame and counts it.

use super::{FrameData, ImageLimits, SourceError};
use serde::{Deserialize, Serialize};

/// A capture format, as named in a source's `format` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Rgb3,
    Grey,
    Y16,
}

/// What a converted frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An RGB camera frame (`FrameData::Rgb8`).
    Camera,
    /// Raw thermal counts (`FrameData::Thermal16`).
    Thermal,
}

fn bad(what: &str, reason: impl ToString) -> SourceError {
    SourceError::BadData {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

fn expect_len(what: &str, fmt: PixelFormat, w: u32, h: u32, per_pixel: usize, got: usize) -> Result<(), SourceError> {
    let want = w as usize * h as usize * per_pixel;
    if got < want {
        return Err(bad(
            what,
            format!("{fmt:?} {w}×{h} needs {want} bytes, the buffer has {got}"),
        ));
    }
    Ok(())
}

fn clamp_u8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// BT.601 limited-range YCbCr → RGB, in fixed point (×256).
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = cb as i32 - 128;
    let e = cr as i32 - 128;
    [
        clamp_u8((c + 409 * e + 128) >> 8),
        clamp_u8((c - 100 * d - 208 * e + 128) >> 8),
        clamp_u8((c + 516 * d + 128) >> 8),
    ]
}

/// YUYV (Y0 Cb Y1 Cr per two pixels) → packed RGB.
pub fn yuyv_to_rgb(w: u32, h: u32, buf: &[u8]) -> Result<Vec<u8>, SourceError> {
    if w % 2 != 0 {
        return Err(bad(
            "yuyv",
            format!("width {w} is odd; YUYV packs two pixels per 4 bytes"),
        ));
    }
    expect_len("yuyv", PixelFormat::Yuyv, w, h, 2, buf.len())?;
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    for q in buf[..n * 2].chunks_exact(4) {
        out.extend_from_slice(&ycbcr_to_rgb(q[0], q[1], q[3]));
        out.extend_from_slice(&ycbcr_to_rgb(q[2], q[1], q[3]));
    }
    Ok(out)
}

/// The size a JPEG's header declares (nothing decoded): for a frame kept as captured
/// ([`FrameData::Jpeg`]) and decoded later by the windower.
pub fn jpeg_size(buf: &[u8]) -> Result<(u32, u32), String> {
    image::ImageReader::with_format(std::io::Cursor::new(buf), image::ImageFormat::Jpeg)
        .into_dimensions()
        .map_err(|e| format!("not a JPEG: {e}"))
}

/// Decode a JPEG (baseline or progressive) into RGB8, strictly: a truncated stream, or
/// one whose data ends before the image its header declares (a lenient decoder fills
/// the rest with grey), is refused with the decoder's reason. The header's size is
/// checked against `limits` before any pixel is decoded.
pub fn decode_jpeg_rgb(buf: &[u8], limits: ImageLimits) -> Result<(u32, u32, Vec<u8>), String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    // The size is checked against `limits` below, from the header, before decoding.
    let opts = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut head = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(buf), opts);
    head.decode_headers().map_err(|e| format!("not a valid JPEG: {e}"))?;
    let (w, h) = head.dimensions().ok_or("not a valid JPEG: no image size")?;
    let (w, h) = (w as u32, h as u32);
    limits.check(w, h)?;
    // Every 8×8 block costs at least a bit or two of scan data (a DC code, an end of
    // block): a file far smaller than its declared size is lying about it (a decoder
    // would invent the rest).
    let min_bytes = w as u64 * h as u64 / 512;
    if (buf.len() as u64) < min_bytes {
        return Err(format!(
            "not a valid JPEG: {} bytes cannot hold the {w}×{h} image its header declares (at least {min_bytes})",
            buf.len()
        ));
    }
    let luma = matches!(head.input_colorspace(), Some(ColorSpace::Luma | ColorSpace::LumaA));
    let out = if luma { ColorSpace::Luma } else { ColorSpace::RGB };
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(buf), opts.jpeg_set_out_colorspace(out));
    let px = d.decode().map_err(|e| format!("not a valid JPEG: {e}"))?;
    let n = w as usize * h as usize;
    let rgb = if luma {
        px.iter().take(n).flat_map(|&v| [v, v, v]).collect()
    } else {
        px
    };
    if rgb.len() != n * 3 {
        return Err(format!(
            "not a valid JPEG: {} bytes decoded for a {w}×{h} image",
            rgb.len()
        ));
    }
    Ok((w, h, rgb))
}

/// A frame ready for windowing: a compressed image ([`FrameData::Jpeg`]) is decoded,
/// anything else passes through untouched. The error says why the frame is unusable.
pub fn decoded(
    frame: std::sync::Arc<super::Frame>,
    limits: ImageLimits,
) -> Result<std::sync::Arc<super::Frame>, String> {
    match &frame.data {
        FrameData::Jpeg { width, height, data } => {
            let data = convert(PixelFormat::Mjpeg, Target::Camera, *width, *height, data, limits)
                .map_err(|e| e.to_string())?;
            Ok(std::sync::Arc::new(super::Frame { t_ns: frame.t_ns, data }))
        }
        _ => Ok(frame),
    }
}

/// Convert one captured buffer of `fmt`, `w`×`h`, into a frame for `target`.
pub fn convert(
    fmt: PixelFormat,
    target: Target,
    w: u32,
    h: u32,
    buf: &[u8],
    limits: ImageLimits,
) -> Result<FrameData, SourceError> {
    let what = match fmt {
        PixelFormat::Mjpeg => "mjpeg",
        PixelFormat::Yuyv => "yuyv",
        PixelFormat::Rgb3 => "rgb3",
        PixelFormat::Grey => "grey",
        PixelFormat::Y16 => "y16",
    };
    if fmt != PixelFormat::Mjpeg {
        limits.check(w, h).map_err(|e| bad(what, e))?;
    }
    let n = w as usize * h as usize;
    match (fmt, target) {
        (PixelFormat::Y16, Target::Thermal) => {
            expect_len(what, fmt, w, h, 2, buf.len())?;
            let data = buf[..n * 2]
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            Ok(FrameData::Thermal16 {
                width: w,
                height: h,
                data,
            })
        }
        (PixelFormat::Grey, Target::Thermal) => {
            // 8-bit thermal video (AGC already applied by the core): scale to 16 bits.
            expect_len(what, fmt, w, h, 1, buf.len())?;
            Ok(FrameData::Thermal16 {
                width: w,
                height: h,
                data: buf[..n].iter().map(|v| *v as u16 * 257).collect(),
            })
        }
        (_, Target::Thermal) => Err(bad(
            what,
            format!("a thermal stream takes `y16` or `grey`, not `{what}`"),
        )),
        (PixelFormat::Mjpeg, Target::Camera) => {
            let (width, height, data) =
                decode_jpeg_rgb(buf, limits).map_err(|e| bad(what, format!("cannot decode the JPEG frame: {e}")))?;
            Ok(FrameData::Rgb8 { width, height, data })
        }
        (PixelFormat::Yuyv, Target::Camera) => Ok(FrameData::Rgb8 {
            width: w,
            height: h,
            data: yuyv_to_rgb(w, h, buf)?,
        }),
        (PixelFormat::Rgb3, Target::Camera) => {
            expect_len(what, fmt, w, h, 3, buf.len())?;
            Ok(FrameData::Rgb8 {
                width: w,
                height: h,
                data: buf[..n * 3].to_vec(),
            })
        }
        (PixelFormat::Grey, Target::Camera) => {
            expect_len(what, fmt, w, h, 1, buf.len())?;
            Ok(FrameData::Rgb8 {
                width: w,
                height: h,
                data: buf[..n].iter().flat_map(|v| [*v, *v, *v]).collect(),
            })
        }
        (PixelFormat::Y16, Target::Camera) => Err(bad(
            what,
            "`y16` is raw sensor counts: use it with `sensor = \"thermal\"`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(f: FrameData) -> (u32, u32, Vec<u8>) {
        match f {
            FrameData::Rgb8 { width, height, data } => (width, height, data),
            other => panic!("expected RGB, got {other:?}"),
        }
    }

    #[test]
    fn yuyv_reference_colours() {
        // BT.601 limited range: black, white, full red and full blue.
        let cases: [([u8; 3], [u8; 3]); 4] = [
            ([16, 128, 128], [0, 0, 0]),
            ([235, 128, 128], [255, 255, 255]),
            ([81, 90, 240], [255, 0, 0]),
            ([41, 240, 110], [0, 0, 255]),
        ];
        for ((y, cb, cr), want) in cases.map(|(ycc, want)| ((ycc[0], ycc[1], ycc[2]), want)) {
            let buf = [y, cb, y, cr];
            let (w, h, px) =
                rgb(convert(PixelFormat::Yuyv, Target::Camera, 2, 1, &buf, ImageLimits::default()).unwrap());
            assert_eq!((w, h), (2, 1));
            for p in px.chunks(3) {
                for c in 0..3 {
                    assert!(
                        (p[c] as i32 - want[c] as i32).abs() <= 2,
                        "Y{y} Cb{cb} Cr{cr}: {p:?} vs {want:?}"
                    );
                }
            }
        }
        // Two pixels share chroma but keep their own luma.
        let (_, _, px) = rgb(convert(
            PixelFormat::Yuyv,
            Target::Camera,
            2,
            1,
            &[16, 128, 235, 128],
            ImageLimits::default(),
        )
        .unwrap());
        assert_eq!(px, vec![0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn packed_formats_and_thermal_counts() {
        let l = ImageLimits::default();
        let (_, _, px) = rgb(convert(PixelFormat::Rgb3, Target::Camera, 2, 1, &[1, 2, 3, 4, 5, 6], l).unwrap());
        assert_eq!(px, vec![1, 2, 3, 4, 5, 6]);
        let (_, _, px) = rgb(convert(PixelFormat::Grey, Target::Camera, 2, 1, &[7, 200], l).unwrap());
        assert_eq!(px, vec![7, 7, 7, 200, 200, 200]);
        // Y16 little endian: 0x1234 and 0xBEEF.
        match convert(PixelFormat::Y16, Target::Thermal, 2, 1, &[0x34, 0x12, 0xEF, 0xBE], l).unwrap() {
            FrameData::Thermal16 { data, .. } => assert_eq!(data, vec![0x1234, 0xBEEF]),
            other => panic!("{other:?}"),
        }
        match convert(PixelFormat::Grey, Target::Thermal, 1, 1, &[255], l).unwrap() {
            FrameData::Thermal16 { data, .. } => assert_eq!(data, vec![65535]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mjpeg_decodes_to_rgb() {
        let img = image::RgbImage::from_fn(32, 16, |x, _| image::Rgb([(x * 8) as u8, 100, 200]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        let (w, h, px) = rgb(convert(PixelFormat::Mjpeg, Target::Camera, 0, 0, &jpeg, ImageLimits::default()).unwrap());
        assert_eq!((w, h, px.len()), (32, 16, 32 * 16 * 3));
        let i = (8 * 32 + 16) * 3;
        assert!(
            (px[i] as i32 - 128).abs() <= 6 && (px[i + 2] as i32 - 200).abs() <= 6,
            "{:?}",
            &px[i..i + 3]
        );
    }

    #[test]
    fn bad_buffers_are_bad_data_never_a_panic() {
        let l = ImageLimits::default();
        let short = convert(PixelFormat::Yuyv, Target::Camera, 4, 4, &[0; 10], l).unwrap_err();
        assert!(
            matches!(short, SourceError::BadData { .. }) && short.to_string().contains("needs 32 bytes"),
            "{short}"
        );
        assert!(
            convert(PixelFormat::Yuyv, Target::Camera, 3, 1, &[0; 6], l).is_err(),
            "odd YUYV width"
        );
        assert!(convert(PixelFormat::Mjpeg, Target::Camera, 0, 0, b"not a jpeg", l).is_err());
        assert!(convert(PixelFormat::Y16, Target::Camera, 1, 1, &[0, 0], l).is_err());
        assert!(convert(PixelFormat::Mjpeg, Target::Thermal, 1, 1, &[0], l).is_err());
        let e = convert(PixelFormat::Rgb3, Target::Camera, 1, 20000, &[0; 60000], l).unwrap_err();
        assert!(e.to_string().contains("limits.max_image_side"), "{e}");
        // Drivers may hand over padded buffers: the extra bytes are ignored.
        assert!(convert(PixelFormat::Grey, Target::Camera, 1, 1, &[1, 2, 3], l).is_ok());
    }

    /// A JPEG of a gradient, `w`×`h`.
    fn gradient_jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        jpeg
    }

    #[test]
    fn truncated_and_lying_jpegs_are_refused_with_the_reason() {
        let l = ImageLimits::default();
        let jpeg = gradient_jpeg(64, 48);
        // A whole JPEG decodes as the `image` crate decodes it (same pixels).
        let (w, h, px) = decode_jpeg_rgb(&jpeg, l).unwrap();
        let reference = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!((w, h), reference.dimensions());
        assert_eq!(px, reference.into_raw());
        // Cut short: the lenient decoder fills the rest with grey; this one refuses.
        let cut = &jpeg[..jpeg.len() * 6 / 10];
        assert!(image::load_from_memory(cut).is_ok(), "the lenient decoder accepts it");
        let e = decode_jpeg_rgb(cut, l).unwrap_err();
        assert!(e.contains("not a valid JPEG"), "{e}");
        let e = convert(PixelFormat::Mjpeg, Target::Camera, 0, 0, cut, l).unwrap_err();
        assert!(matches!(e, SourceError::BadData { .. }), "{e}");
        // Lying: the header claims 4000×3000 (SOF0 height/width patched), the data
        // holds a 64×48 image.
        let mut lying = jpeg.clone();
        let sof = lying.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        lying[sof + 5..sof + 9].copy_from_slice(&[0x0B, 0xB8, 0x0F, 0xA0]);
        let e = decode_jpeg_rgb(&lying, l).unwrap_err();
        assert!(e.contains("not a valid JPEG"), "{e}");
        // Beyond `limits.max_image_side`: refused from the header.
        let e = decode_jpeg_rgb(&lying, ImageLimits { max_side: 1024, ..l }).unwrap_err();
        assert!(e.contains("limits.max_image_side"), "{e}");
        // File frames and examples take the same path.
        let e = crate::sources::file::decode_image(cut, l, "a PNG or JPEG image").unwrap_err();
        assert!(e.contains("not a valid JPEG"), "{e}");
        // A grey JPEG is expanded to RGB.
        let mut grey = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut grey, 90)
            .encode_image(&image::GrayImage::from_fn(16, 8, |x, _| image::Luma([x as u8 * 10])))
            .unwrap();
        let (_, _, px) = decode_jpeg_rgb(&grey, l).unwrap();
        assert_eq!(px.len(), 16 * 8 * 3);
        assert_eq!(px[30], px[31]);
    }
}
