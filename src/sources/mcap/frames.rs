//! Frames ↔ MCAP messages: Foxglove's well-known schemas for images and audio, ours
//! (`sensebind.Imu`) for IMU samples. Topics are `frames/<modality>/<source>`; a
//! message's log time is the frame's sensor time. Used by `sensebind record` (through
//! `crate::record`) and by the `mcap` replay source.
//!
//! | payload | schema (encoding) | message encoding |
//! |---|---|---|
//! | camera frame | `foxglove.RawImage` `rgb8` (protobuf) | protobuf |
//! | MJPEG camera frame, as captured | `foxglove.CompressedImage` `jpeg` (protobuf) | protobuf |
//! | depth frame (millimetres) | `foxglove.RawImage` `16UC1` (protobuf) | protobuf |
//! | thermal frame (raw counts) | `foxglove.RawImage` `mono16` (protobuf) | protobuf |
//! | audio chunk | `foxglove.RawAudio` `pcm-s16` (protobuf) | protobuf |
//! | IMU sample | `sensebind.Imu` (jsonschema) | json |

use crate::modality::Modality;
use crate::sources::{Frame, FrameData, ImuSample, Nanos};
use foxglove::schemas::{CompressedImage, RawAudio, RawImage, Timestamp};
use prost::Message as _;
use serde::{Deserialize, Serialize};

pub const RAW_IMAGE: &str = "foxglove.RawImage";
pub const COMPRESSED_IMAGE: &str = "foxglove.CompressedImage";
pub const RAW_AUDIO: &str = "foxglove.RawAudio";
pub const IMU: &str = "sensebind.Imu";
/// JSON Schema of `sensebind.Imu`: one 6-axis sample.
pub const IMU_SCHEMA: &str = r#"{"title":"sensebind.Imu","description":"One IMU sample as the driver delivered it (before bias correction and body-frame rotation).","type":"object","properties":{"t_ns":{"type":"integer","description":"sensor time, ns since the Unix epoch"},"accel":{"type":"array","items":{"type":"number"},"minItems":3,"maxItems":3,"description":"m/s², x y z"},"gyro":{"type":"array","items":{"type":"number"},"minItems":3,"maxItems":3,"description":"rad/s, x y z"}},"required":["t_ns","accel","gyro"]}"#;

/// One message ready for a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub topic: String,
    /// Schema name (one of the constants above).
    pub schema: &'static str,
    pub log_time_ns: u64,
    pub data: Vec<u8>,
}

/// The schema of a frame channel's `schema` name (`None` for names that are not ours).
pub fn frame_schema(name: &str) -> Option<foxglove::Schema> {
    use foxglove::Encode;
    match name {
        RAW_IMAGE => RawImage::get_schema(),
        COMPRESSED_IMAGE => CompressedImage::get_schema(),
        RAW_AUDIO => RawAudio::get_schema(),
        IMU => Some(foxglove::Schema::new(IMU, "jsonschema", IMU_SCHEMA.as_bytes())),
        _ => None,
    }
}

/// The message encoding of a schema's channel.
pub fn message_encoding(schema: &str) -> &'static str {
    if schema.starts_with("foxglove.") {
        "protobuf"
    } else {
        "json"
    }
}

fn stamp(t_ns: Nanos) -> Timestamp {
    let t = t_ns.max(0) as u64;
    Timestamp::new(
        (t / 1_000_000_000).min(u32::MAX as u64) as u32,
        (t % 1_000_000_000) as u32,
    )
}

/// The topic of a source's frames of `modality`.
pub fn frame_topic(modality: Modality, source: &str) -> String {
    format!("frames/{modality}/{source}")
}

/// Parse `frames/<modality>/<source>`.
pub fn parse_frame_topic(topic: &str) -> Option<(Modality, &str)> {
    let rest = topic.strip_prefix("frames/")?;
    let (m, source) = rest.split_once('/')?;
    if source.is_empty() || source.contains('/') {
        return None;
    }
    Some((m.parse().ok()?, source))
}

/// f32 in [-1, 1] → s16 (the exact inverse of s16 / 32768).
pub fn to_s16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Sample JSON of `sensebind.Imu`.
#[derive(Debug, Serialize, Deserialize)]
struct ImuJson {
    t_ns: i64,
    accel: [f32; 3],
    gyro: [f32; 3],
}

/// The schema a frame is recorded with.
pub fn schema_name(d: &FrameData) -> &'static str {
    match d {
        FrameData::Rgb8 { .. } | FrameData::Depth16 { .. } | FrameData::Thermal16 { .. } => RAW_IMAGE,
        FrameData::Jpeg { .. } => COMPRESSED_IMAGE,
        FrameData::Audio { .. } => RAW_AUDIO,
        FrameData::Imu(_) => IMU,
    }
}

/// A frame of `source` as a message on `frames/<modality>/<source>`.
pub fn encode_frame(source: &str, frame: &Frame) -> Encoded {
    let m = frame.data.modality();
    let ts = Some(stamp(frame.t_ns));
    let raw = |width: u32, height: u32, encoding: &str, step: u32, data: Vec<u8>| RawImage {
        timestamp: ts,
        frame_id: source.to_string(),
        width,
        height,
        encoding: encoding.to_string(),
        step,
        data: data.into(),
    };
    let data = match &frame.data {
        FrameData::Rgb8 { width, height, data } => {
            raw(*width, *height, "rgb8", width * 3, data.clone()).encode_to_vec()
        }
        FrameData::Jpeg { data, .. } => CompressedImage {
            timestamp: ts,
            frame_id: source.to_string(),
            data: data.clone().into(),
            format: "jpeg".into(),
        }
        .encode_to_vec(),
        FrameData::Depth16 { width, height, data } => raw(
            *width,
            *height,
            "16UC1",
            width * 2,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
        .encode_to_vec(),
        FrameData::Thermal16 { width, height, data } => raw(
            *width,
            *height,
            "mono16",
            width * 2,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
        .encode_to_vec(),
        FrameData::Audio {
            sample_rate,
            channels,
            samples,
        } => RawAudio {
            timestamp: ts,
            data: samples
                .iter()
                .flat_map(|x| to_s16(*x).to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
            format: "pcm-s16".into(),
            sample_rate: *sample_rate,
            number_of_channels: *channels as u32,
        }
        .encode_to_vec(),
        FrameData::Imu(s) => serde_json::to_vec(&ImuJson {
            t_ns: frame.t_ns,
            accel: s.accel,
            gyro: s.gyro,
        })
        .unwrap_or_default(),
    };
    Encoded {
        topic: frame_topic(m, source),
        schema: schema_name(&frame.data),
        log_time_ns: frame.t_ns.max(0) as u64,
        data,
    }
}

/// A recorded message that is not a frame we can play; the reason names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn u16_le(bytes: &[u8], w: u32, h: u32, step: u32, what: &str) -> Result<Vec<u16>, DecodeError> {
    let (w, h, step) = (w as usize, h as usize, step as usize);
    let row = w * 2;
    let step = if step == 0 { row } else { step };
    if step < row || bytes.len() < step * h.saturating_sub(1) + row {
        return Err(DecodeError(format!(
            "{what}: {w}×{h} with step {step} needs {} bytes, `data` has {}",
            step * h.saturating_sub(1) + row,
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(w * h);
    for r in 0..h {
        let line = &bytes[r * step..r * step + row];
        out.extend(line.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
    }
    Ok(out)
}

/// Decode a recorded frame of `schema` on a channel of `modality`; `log_time_ns` is the
/// frame's time. Images are bounded by `limits` before anything is allocated: the
/// protobuf is decoded without copying its pixels (`data` stays in the message's
/// buffer), and an unpadded `rgb8` image keeps that buffer as its pixels.
pub fn decode_frame(
    modality: Modality,
    schema: &str,
    encoding: &str,
    data: bytes::Bytes,
    log_time_ns: u64,
    limits: crate::sources::ImageLimits,
) -> Result<Frame, DecodeError> {
    let t_ns = log_time_ns.min(i64::MAX as u64) as i64;
    let need = |want: &str| -> Result<(), DecodeError> {
        if encoding != want {
            return Err(DecodeError(format!(
                "{schema} messages must be `{want}`-encoded, this channel is `{encoding}`"
            )));
        }
        Ok(())
    };
    let frame_data = match (schema, modality) {
        (RAW_IMAGE, Modality::Vision | Modality::Depth | Modality::Thermal) => {
            need("protobuf")?;
            let img = RawImage::decode(data).map_err(|e| DecodeError(format!("{RAW_IMAGE}: {e}")))?;
            limits
                .check(img.width, img.height)
                .map_err(|e| DecodeError(format!("{RAW_IMAGE}: {e}")))?;
            let (w, h) = (img.width, img.height);
            match (modality, img.encoding.as_str()) {
                (Modality::Vision, "rgb8") => {
                    let row = w as usize * 3;
                    let step = if img.step == 0 { row } else { img.step as usize };
                    if step < row || img.data.len() < step * (h as usize - 1) + row {
                        return Err(DecodeError(format!(
                            "{RAW_IMAGE} rgb8 {w}×{h} step {step}: `data` has {} bytes",
                            img.data.len()
                        )));
                    }
                    let out = if step == row {
                        // The message's own buffer (no copy when it holds the only handle).
                        let mut v = Vec::from(img.data);
                        v.truncate(row * h as usize);
                        v
                    } else {
                        let mut out = Vec::with_capacity(row * h as usize);
                        for r in 0..h as usize {
                            out.extend_from_slice(&img.data[r * step..r * step + row]);
                        }
                        out
                    };
                    FrameData::Rgb8 {
                        width: w,
                        height: h,
                        data: out,
                    }
                }
                (Modality::Depth, "16UC1" | "mono16") => FrameData::Depth16 {
                    width: w,
                    height: h,
                    data: u16_le(&img.data, w, h, img.step, "16UC1 depth")?,
                },
                (Modality::Thermal, "mono16" | "16UC1") => FrameData::Thermal16 {
                    width: w,
                    height: h,
                    data: u16_le(&img.data, w, h, img.step, "mono16 thermal")?,
                },
                (m, enc) => {
                    let want = match m {
                        Modality::Vision => "rgb8",
                        Modality::Depth => "16UC1",
                        _ => "mono16",
                    };
                    return Err(DecodeError(format!(
                        "{RAW_IMAGE} `encoding` is `{enc}`; a {m} stream takes `{want}`"
                    )));
                }
            }
        }
        (COMPRESSED_IMAGE, Modality::Vision) => {
            need("protobuf")?;
            let img = CompressedImage::decode(data).map_err(|e| DecodeError(format!("{COMPRESSED_IMAGE}: {e}")))?;
            if !matches!(img.format.as_str(), "jpeg" | "jpg" | "image/jpeg") {
                return Err(DecodeError(format!(
                    "{COMPRESSED_IMAGE} `format` is `{}`; only `jpeg` is played",
                    img.format
                )));
            }
            let (width, height) = crate::sources::pixfmt::jpeg_size(&img.data)
                .map_err(|e| DecodeError(format!("{COMPRESSED_IMAGE}: {e}")))?;
            FrameData::Jpeg {
                width,
                height,
                data: img.data.to_vec(),
            }
        }
        (RAW_AUDIO, Modality::Audio) => {
            need("protobuf")?;
            let a = RawAudio::decode(data).map_err(|e| DecodeError(format!("{RAW_AUDIO}: {e}")))?;
            if a.format != "pcm-s16" {
                return Err(DecodeError(format!(
                    "{RAW_AUDIO} `format` is `{}`; only `pcm-s16` is played",
                    a.format
                )));
            }
            if a.sample_rate == 0 || !(1..=64).contains(&a.number_of_channels) {
                return Err(DecodeError(format!(
                    "{RAW_AUDIO}: `sample_rate` {} / `number_of_channels` {} out of range",
                    a.sample_rate, a.number_of_channels
                )));
            }
            if a.data.len() % (2 * a.number_of_channels as usize) != 0 {
                return Err(DecodeError(format!(
                    "{RAW_AUDIO}: {} bytes is not whole {}-channel s16 frames",
                    a.data.len(),
                    a.number_of_channels
                )));
            }
            FrameData::Audio {
                sample_rate: a.sample_rate,
                channels: a.number_of_channels as u16,
                samples: a
                    .data
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                    .collect(),
            }
        }
        (IMU, Modality::Imu) => {
            need("json")?;
            let s: ImuJson = serde_json::from_slice(&data).map_err(|e| DecodeError(format!("{IMU}: {e}")))?;
            if !s.accel.iter().chain(&s.gyro).all(|v| v.is_finite()) {
                return Err(DecodeError(format!("{IMU}: non-finite value")));
            }
            FrameData::Imu(ImuSample {
                accel: s.accel,
                gyro: s.gyro,
            })
        }
        (s, m) => {
            return Err(DecodeError(format!(
                "schema `{s}` cannot carry {m} frames (expected {})",
                match m {
                    Modality::Vision => "foxglove.RawImage rgb8 or foxglove.CompressedImage jpeg",
                    Modality::Depth => "foxglove.RawImage 16UC1",
                    Modality::Thermal => "foxglove.RawImage mono16",
                    Modality::Audio => "foxglove.RawAudio pcm-s16",
                    Modality::Imu => "sensebind.Imu",
                    Modality::Text => "nothing: text is not a sensor",
                }
            )));
        }
    };
    Ok(Frame { t_ns, data: frame_data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ImageLimits;

    fn roundtrip(f: &Frame) -> Frame {
        let e = encode_frame("cam0", f);
        let (m, src) = parse_frame_topic(&e.topic).unwrap();
        assert_eq!(src, "cam0");
        decode_frame(
            m,
            e.schema,
            message_encoding(e.schema),
            e.data.clone().into(),
            e.log_time_ns,
            ImageLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn every_frame_kind_roundtrips() {
        let t = 1_700_000_000_123_456_789;
        let frames = [
            FrameData::Rgb8 {
                width: 2,
                height: 1,
                data: vec![1, 2, 3, 4, 5, 6],
            },
            FrameData::Depth16 {
                width: 2,
                height: 2,
                data: vec![0, 1000, 65535, 7],
            },
            FrameData::Thermal16 {
                width: 1,
                height: 2,
                data: vec![29000, 31000],
            },
            FrameData::Audio {
                sample_rate: 16000,
                channels: 2,
                samples: vec![0.5, -1.0, 32767.0 / 32768.0, -3.0 / 32768.0],
            },
            FrameData::Imu(ImuSample {
                accel: [0.1, -9.81, 1e-7],
                gyro: [0.5, 0.25, -0.125],
            }),
        ];
        for d in frames {
            let f = Frame { t_ns: t, data: d };
            assert_eq!(roundtrip(&f), f);
        }
    }

    #[test]
    fn jpeg_is_kept_as_captured() {
        let mut jpeg = Vec::new();
        image::RgbImage::from_pixel(16, 8, image::Rgb([200, 10, 10]))
            .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let f = Frame {
            t_ns: 5,
            data: FrameData::Jpeg {
                width: 16,
                height: 8,
                data: jpeg,
            },
        };
        let e = encode_frame("usb", &f);
        assert_eq!(e.schema, COMPRESSED_IMAGE);
        assert_eq!(roundtrip(&f), f);
    }

    #[test]
    fn bad_recordings_name_what_is_wrong() {
        let image_error = |w: u32, h: u32, encoding: &str, step: u32, len: usize| {
            let img = RawImage {
                width: w,
                height: h,
                encoding: encoding.into(),
                step,
                data: vec![0u8; len].into(),
                ..Default::default()
            };
            decode_frame(
                Modality::Vision,
                RAW_IMAGE,
                "protobuf",
                img.encode_to_vec().into(),
                0,
                ImageLimits::default(),
            )
            .unwrap_err()
            .to_string()
        };
        let e = image_error(100, 100, "rgb8", 300, 10);
        assert!(e.contains("`data` has 10 bytes"), "{e}");
        let e = image_error(2, 2, "bgr8", 6, 12);
        assert!(e.contains("`bgr8`") && e.contains("rgb8"), "{e}");
        let e = decode_frame(
            Modality::Imu,
            RAW_AUDIO,
            "protobuf",
            bytes::Bytes::new(),
            0,
            ImageLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sensebind.Imu"), "{e}");
        let e = decode_frame(
            Modality::Imu,
            IMU,
            "json",
            bytes::Bytes::from_static(b"{\"t_ns\":1,\"accel\":[1,2]}"),
            0,
            ImageLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sensebind.Imu"), "{e}");
        assert_eq!(
            parse_frame_topic("frames/vision/front"),
            Some((Modality::Vision, "front"))
        );
        assert_eq!(parse_frame_topic("frames/smell/front"), None);
        assert_eq!(parse_frame_topic("embedding/vision/front"), None);
    }
}
