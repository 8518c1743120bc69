//! ROS 2 messages → sensebind frames. Every size is checked against `limits` and
//! against the bytes there are before anything is allocated; each refusal says why.
//!
//! - `sensor_msgs/Image`: `rgb8`, `bgr8`, `rgba8`, `bgra8`, `mono8` → a camera frame;
//!   `16UC1` (millimetres) and `32FC1` (metres, → mm; NaN, ≤ 0 and ∞ → 0 = invalid) → a
//!   depth frame; `mono16` → thermal (or depth when the source says `depth`). `step`
//!   padding and `is_bigendian` are honoured.
//! - `sensor_msgs/CompressedImage` (`jpeg`; `png`): a camera frame (JPEG kept as
//!   captured and decoded by the windower, PNG decoded here).
//! - `sensor_msgs/Imu`: one reading (accel, gyro).
//! - `audio_common_msgs/AudioData(Stamped)`: a chunk of interleaved samples in the
//!   format the source configures.

use crate::modality::Sensor;
use crate::ros2::msgs::{self, AudioData, AudioDataStamped, CompressedImage, Header, Image, Imu};
use crate::ros2::wire::KnownType;
use crate::sources::{FrameData, ImageLimits, ImuSample};

/// What an `Image`'s encoding is, and which sensor it comes from by default
/// (`mono16` needs the source to say: thermal cameras and some depth cameras use it).
pub fn infer_sensor(encoding: &str) -> Option<Sensor> {
    match encoding {
        "rgb8" | "bgr8" | "rgba8" | "bgra8" | "mono8" => Some(Sensor::Camera),
        "16UC1" | "32FC1" => Some(Sensor::Depth),
        _ => None,
    }
}

/// Bytes per pixel of an encoding sensebind reads.
fn bytes_per_pixel(encoding: &str) -> Option<usize> {
    Some(match encoding {
        "mono8" => 1,
        "16UC1" | "mono16" => 2,
        "rgb8" | "bgr8" => 3,
        "rgba8" | "bgra8" | "32FC1" => 4,
        _ => return None,
    })
}

/// The rows of `img` without their padding: `(row length, rows)`, checked.
fn rows<'a>(img: &Image<'a>, bpp: usize) -> Result<(usize, impl Iterator<Item = &'a [u8]>), String> {
    let (w, h) = (img.width as usize, img.height as usize);
    let row = w * bpp;
    let step = img.step as usize;
    if step < row {
        return Err(format!(
            "`step` {step} is less than a row of {w} `{}` pixels ({row} bytes)",
            img.encoding
        ));
    }
    let need = step.saturating_mul(h.saturating_sub(1)).saturating_add(row);
    if img.data.len() < need {
        return Err(format!(
            "`data` has {} bytes; {w}×{h} `{}` with `step` {step} needs {need}",
            img.data.len(),
            img.encoding
        ));
    }
    let data = img.data;
    Ok((row, (0..h).map(move |r| &data[r * step..r * step + row])))
}

/// An `Image` as a frame of `sensor`.
pub fn image(img: &Image, sensor: Sensor, limits: ImageLimits) -> Result<FrameData, String> {
    limits.check(img.width, img.height)?;
    let enc = img.encoding;
    let bpp = bytes_per_pixel(enc).ok_or_else(|| {
        format!("`encoding` `{enc}` is not read (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, 32FC1)")
    })?;
    let (width, height) = (img.width, img.height);
    let big = img.is_bigendian != 0;
    let (_, rows) = rows(img, bpp)?;
    let n = width as usize * height as usize;
    // Each row is converted into its slice of a buffer allocated once (indexing fixed
    // strides lets the compiler vectorise; no per-pixel pushes).
    fn words<'r>(
        out: &mut [u16],
        rows: impl Iterator<Item = &'r [u8]>,
        width: usize,
        size: usize,
        f: impl Fn(&[u8]) -> u16,
    ) {
        for (dst, r) in out.chunks_exact_mut(width).zip(rows) {
            for (d, b) in dst.iter_mut().zip(r.chunks_exact(size)) {
                *d = f(b);
            }
        }
    }
    let w = width as usize;
    match (sensor, enc) {
        (Sensor::Camera, "rgb8" | "bgr8" | "rgba8" | "bgra8" | "mono8") => {
            let mut data = vec![0u8; n * 3];
            let row_out = width as usize * 3;
            for (dst, r) in data.chunks_exact_mut(row_out).zip(rows) {
                match enc {
                    "rgb8" => dst.copy_from_slice(r),
                    "mono8" => dst.chunks_exact_mut(3).zip(r).for_each(|(d, v)| d.fill(*v)),
                    "bgr8" | "bgra8" => dst.chunks_exact_mut(3).zip(r.chunks_exact(bpp)).for_each(|(d, p)| {
                        d[0] = p[2];
                        d[1] = p[1];
                        d[2] = p[0];
                    }),
                    _ => dst
                        .chunks_exact_mut(3)
                        .zip(r.chunks_exact(bpp))
                        .for_each(|(d, p)| d.copy_from_slice(&p[..3])),
                }
            }
            Ok(FrameData::Rgb8 { width, height, data })
        }
        (Sensor::Depth | Sensor::Thermal, "16UC1" | "mono16") => {
            let mut data = vec![0u16; n];
            if big {
                words(&mut data, rows, w, 2, |b| u16::from_be_bytes([b[0], b[1]]));
            } else {
                words(&mut data, rows, w, 2, |b| u16::from_le_bytes([b[0], b[1]]));
            }
            Ok(if sensor == Sensor::Depth {
                FrameData::Depth16 { width, height, data }
            } else {
                FrameData::Thermal16 { width, height, data }
            })
        }
        (Sensor::Depth, "32FC1") => {
            let mut data = vec![0u16; n];
            let mm = |b: &[u8]| {
                let bits = [b[0], b[1], b[2], b[3]];
                let m = if big {
                    f32::from_be_bytes(bits)
                } else {
                    f32::from_le_bytes(bits)
                };
                // Metres → millimetres; unknown (NaN, ≤ 0, beyond 65.535 m) → 0.
                let mm = (m * 1000.0).round();
                if mm.is_finite() && mm > 0.0 && mm <= 65535.0 {
                    mm as u16
                } else {
                    0
                }
            };
            words(&mut data, rows, w, 4, mm);
            Ok(FrameData::Depth16 { width, height, data })
        }
        (Sensor::Thermal, "mono8") => {
            let mut data = vec![0u16; n];
            words(&mut data, rows, w, 1, |b| u16::from(b[0]) * 257);
            Ok(FrameData::Thermal16 { width, height, data })
        }
        (s, e) => Err(format!("a `{e}` image is not a {s:?} frame")),
    }
}

/// A `CompressedImage` as a camera frame.
pub fn compressed(img: &CompressedImage, limits: ImageLimits) -> Result<FrameData, String> {
    let format = img.format.to_ascii_lowercase();
    // ROS image_transport writes e.g. "rgb8; jpeg compressed bgr8".
    if format.contains("jpeg") || format.contains("jpg") {
        let (width, height) = crate::sources::pixfmt::jpeg_size(img.data)?;
        limits.check(width, height)?;
        Ok(FrameData::Jpeg {
            width,
            height,
            data: img.data.to_vec(),
        })
    } else if format.contains("png") {
        let rgb = crate::sources::file::decode_image(img.data, limits, "a PNG image")?.to_rgb8();
        let (width, height) = rgb.dimensions();
        Ok(FrameData::Rgb8 {
            width,
            height,
            data: rgb.into_raw(),
        })
    } else {
        Err(format!("`format` `{}`: only jpeg and png are read", img.format))
    }
}

/// An `Imu` message as one reading (orientation and covariances are not used).
pub fn imu(m: &Imu) -> Result<FrameData, String> {
    let a = m.linear_acceleration;
    let g = m.angular_velocity;
    let v = [a.x, a.y, a.z, g.x, g.y, g.z];
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("a reading that is not finite: accel {a:?}, gyro {g:?}"));
    }
    Ok(FrameData::Imu(ImuSample {
        accel: [a.x as f32, a.y as f32, a.z as f32],
        gyro: [g.x as f32, g.y as f32, g.z as f32],
    }))
}

/// How an audio topic's bytes are laid out (`AudioData` does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    S16Le,
    S32Le,
    F32Le,
    U8,
}

impl SampleFormat {
    pub fn parse(s: &str) -> Option<SampleFormat> {
        Some(match s {
            "S16LE" => SampleFormat::S16Le,
            "S32LE" => SampleFormat::S32Le,
            "F32LE" => SampleFormat::F32Le,
            "U8" => SampleFormat::U8,
            _ => return None,
        })
    }
    fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::S16Le => 2,
            SampleFormat::S32Le | SampleFormat::F32Le => 4,
        }
    }
}

/// Audio bytes as a chunk of `channels` interleaved samples at `rate`.
pub fn audio(data: &[u8], format: SampleFormat, rate: u32, channels: u16) -> Result<FrameData, String> {
    let frame = format.bytes() * channels as usize;
    if frame == 0 || data.len() % frame != 0 {
        return Err(format!(
            "{} bytes are not whole frames of {channels} × {format:?} samples",
            data.len()
        ));
    }
    let samples = data
        .chunks_exact(format.bytes())
        .map(|b| match format {
            SampleFormat::U8 => (f32::from(b[0]) - 128.0) / 128.0,
            SampleFormat::S16Le => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            SampleFormat::S32Le => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            SampleFormat::F32Le => {
                let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if x.is_finite() {
                    x.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }
        })
        .collect();
    Ok(FrameData::Audio {
        sample_rate: rate,
        channels,
        samples,
    })
}

/// How an audio topic's bytes are read (`AudioData` does not say): the source's
/// `rate`, `channels` and `sample_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub rate: u32,
    pub channels: u16,
    pub format: SampleFormat,
}

impl Default for AudioFormat {
    fn default() -> Self {
        AudioFormat {
            rate: 16_000,
            channels: 1,
            format: SampleFormat::S16Le,
        }
    }
}

/// The message types a source reads.
pub const SOURCE_TYPES: [KnownType; 5] = [
    KnownType::Image,
    KnownType::CompressedImage,
    KnownType::Imu,
    KnownType::AudioData,
    KnownType::AudioDataStamped,
];

/// The sensor a message type implies on its own (`Image` needs its encoding).
pub fn sensor_of_type(t: KnownType) -> Option<Sensor> {
    match t {
        KnownType::CompressedImage => Some(Sensor::Camera),
        KnownType::Imu => Some(Sensor::Imu),
        KnownType::AudioData | KnownType::AudioDataStamped => Some(Sensor::Microphone),
        _ => None,
    }
}

/// Whether a `sensor` source may carry messages of type `t`.
pub fn type_fits(t: KnownType, sensor: Sensor) -> bool {
    match t {
        KnownType::Image => matches!(sensor, Sensor::Camera | Sensor::Depth | Sensor::Thermal),
        _ => sensor_of_type(t) == Some(sensor),
    }
}

/// The sensor one serialized message of type `t` implies (an `Image`: from its
/// encoding; `mono16` is thermal or depth, so the source must say).
pub fn sensor_of_message(t: KnownType, bytes: &[u8]) -> Result<Sensor, String> {
    if let Some(s) = sensor_of_type(t) {
        return Ok(s);
    }
    if t != KnownType::Image {
        return Err(format!("`{}` is not a sensor message", t.ros_name()));
    }
    let img: Image = msgs::decode("sensor_msgs/msg/Image", bytes).map_err(|e| e.to_string())?;
    infer_sensor(img.encoding).ok_or_else(|| {
        format!(
            "an Image with encoding `{}` may come from several sensors: set `sensor` (camera, depth or thermal)",
            crate::ident::clip(img.encoding, 40)
        )
    })
}

/// A decoded message: its header stamp (ns; `None` without a header or with a zero
/// stamp, which drivers leave when they do not stamp) and the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub stamp_ns: Option<i64>,
    pub data: FrameData,
}

fn stamp_of(h: &Header) -> Result<Option<i64>, String> {
    match h.stamp.ns() {
        None => Err(format!("`header.stamp.nanosec` {} is not below 10⁹", h.stamp.nanosec)),
        Some(0) => Ok(None),
        Some(t) => Ok(Some(t)),
    }
}

/// One serialized message (CDR behind its encapsulation header) of type `t`, for a
/// `sensor` source; the error says why it was refused.
pub fn message(
    t: KnownType,
    bytes: &[u8],
    sensor: Sensor,
    audio: AudioFormat,
    limits: ImageLimits,
) -> Result<Decoded, String> {
    if !type_fits(t, sensor) {
        return Err(format!(
            "a `{}` message is not a {} frame",
            t.ros_name(),
            sensor.as_str()
        ));
    }
    let name = t.ros_name();
    let e = |e: msgs::CdrError| e.to_string();
    let (stamp_ns, data) = match t {
        KnownType::Image => {
            let m: Image = msgs::decode(name, bytes).map_err(e)?;
            (stamp_of(&m.header)?, image(&m, sensor, limits)?)
        }
        KnownType::CompressedImage => {
            let m: CompressedImage = msgs::decode(name, bytes).map_err(e)?;
            (stamp_of(&m.header)?, compressed(&m, limits)?)
        }
        KnownType::Imu => {
            let m: Imu = msgs::decode(name, bytes).map_err(e)?;
            (stamp_of(&m.header)?, imu(&m)?)
        }
        KnownType::AudioData => {
            let m: AudioData = msgs::decode(name, bytes).map_err(e)?;
            (None, self::audio(m.data, audio.format, audio.rate, audio.channels)?)
        }
        KnownType::AudioDataStamped => {
            let m: AudioDataStamped = msgs::decode(name, bytes).map_err(e)?;
            let data = self::audio(m.audio.data, audio.format, audio.rate, audio.channels)?;
            (stamp_of(&m.header)?, data)
        }
        KnownType::String | KnownType::DiagnosticArray | KnownType::Embedding => {
            return Err(format!("`{name}` is not a sensor message"));
        }
    };
    Ok(Decoded { stamp_ns, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ros2::msgs::{Header, Time};

    fn img<'a>(w: u32, h: u32, enc: &'a str, step: u32, big: bool, data: &'a [u8]) -> Image<'a> {
        Image {
            header: Header {
                stamp: Time::default(),
                frame_id: "cam",
            },
            height: h,
            width: w,
            encoding: enc,
            is_bigendian: u8::from(big),
            step,
            data,
        }
    }

    #[test]
    fn images_of_each_encoding_become_frames() {
        let l = ImageLimits::default();
        // 2×2, rows padded to 8 bytes.
        let bgr = [1, 2, 3, 4, 5, 6, 0xee, 0xee, 7, 8, 9, 10, 11, 12, 0xee, 0xee];
        let FrameData::Rgb8 { data, .. } = image(&img(2, 2, "bgr8", 8, false, &bgr), Sensor::Camera, l).unwrap() else {
            panic!()
        };
        assert_eq!(data, [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
        let rgba = [1, 2, 3, 99, 4, 5, 6, 99];
        let FrameData::Rgb8 { data, .. } = image(&img(2, 1, "rgba8", 8, false, &rgba), Sensor::Camera, l).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, [1, 2, 3, 4, 5, 6]);
        let FrameData::Rgb8 { data, .. } = image(&img(2, 1, "mono8", 2, false, &[7, 9]), Sensor::Camera, l).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, [7, 7, 7, 9, 9, 9]);
        // Depth: 16UC1 big-endian, 32FC1 metres (NaN and negative are invalid = 0).
        let be = [0x03, 0xe8, 0xff, 0xff];
        let FrameData::Depth16 { data, .. } = image(&img(2, 1, "16UC1", 4, true, &be), Sensor::Depth, l).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, [1000, 65535]);
        let m: Vec<u8> = [1.2345f32, f32::NAN, -1.0, 70.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let FrameData::Depth16 { data, .. } = image(&img(4, 1, "32FC1", 16, false, &m), Sensor::Depth, l).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, [1235, 0, 0, 0]);
        let FrameData::Thermal16 { data, .. } =
            image(&img(1, 1, "mono16", 2, false, &[0x34, 0x12]), Sensor::Thermal, l).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, [0x1234]);
        assert_eq!(infer_sensor("bgra8"), Some(Sensor::Camera));
        assert_eq!(infer_sensor("32FC1"), Some(Sensor::Depth));
        assert_eq!(infer_sensor("mono16"), None);
    }

    #[test]
    fn lying_and_unknown_images_are_refused_with_the_reason() {
        let l = ImageLimits::default();
        let e = image(&img(100, 100, "rgb8", 300, false, &[0; 10]), Sensor::Camera, l).unwrap_err();
        assert!(e.contains("`data` has 10 bytes"), "{e}");
        let e = image(&img(4, 1, "rgb8", 8, false, &[0; 12]), Sensor::Camera, l).unwrap_err();
        assert!(e.contains("`step` 8 is less than"), "{e}");
        // Declared far beyond the limits: refused before anything is allocated.
        let e = image(&img(100_000, 100_000, "rgb8", 300_000, false, &[]), Sensor::Camera, l).unwrap_err();
        assert!(e.contains("limits.max_image_side"), "{e}");
        let e = image(&img(1, 1, "yuv422", 2, false, &[0; 2]), Sensor::Camera, l).unwrap_err();
        assert!(e.contains("yuv422"), "{e}");
        let e = image(&img(1, 1, "rgb8", 3, false, &[0; 3]), Sensor::Depth, l).unwrap_err();
        assert!(e.contains("not a Depth frame"), "{e}");
    }

    #[test]
    fn audio_bytes_become_samples() {
        let pcm: Vec<u8> = [0i16, 16384, -32768, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let FrameData::Audio {
            sample_rate,
            channels,
            samples,
        } = audio(&pcm, SampleFormat::S16Le, 16_000, 2).unwrap()
        else {
            panic!()
        };
        assert_eq!((sample_rate, channels), (16_000, 2));
        assert_eq!(samples, [0.0, 0.5, -1.0, 32767.0 / 32768.0]);
        assert!(audio(&pcm[..6], SampleFormat::S16Le, 16_000, 2).is_err());
        assert_eq!(SampleFormat::parse("F32LE"), Some(SampleFormat::F32Le));
    }
}
