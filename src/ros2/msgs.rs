//! ROS 2 messages as serde types, in CDR through `hiroz-cdr` (XCDR1, as ROS 2 uses).
//! Input types borrow from the sample (`data: &[u8]`: an image's pixels are not
//! copied); every length is checked against the bytes there are before it is used.
//!
//! A serialized message starts with a 4-byte encapsulation header: `00 01 00 00`
//! (little endian, what ROS 2 writes) or `00 00 00 00` (big endian, which a DDS bridge
//! may pass on). More than 3 bytes left over after the message (CDR pads to 4) mean
//! the bytes were not this type.

use serde::{Deserialize, Serialize};

/// Why bytes are not the message they should be.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CdrError {
    #[error("{0} bytes: shorter than the 4-byte CDR encapsulation header")]
    Short(usize),
    #[error("CDR encapsulation {0:02x} {1:02x}: expected 00 01 (little endian) or 00 00 (big endian)")]
    Encapsulation(u8, u8),
    #[error("not a valid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{left} bytes left over after a {what}: not this type")]
    Trailing { what: &'static str, left: usize },
}

/// `builtin_interfaces/msg/Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    /// Nanoseconds since the epoch (`None`: `nanosec` out of range).
    pub fn ns(self) -> Option<i64> {
        (self.nanosec < 1_000_000_000).then(|| i64::from(self.sec) * 1_000_000_000 + i64::from(self.nanosec))
    }
}

/// `std_msgs/msg/Header`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header<'a> {
    pub stamp: Time,
    #[serde(borrow)]
    pub frame_id: &'a str,
}

/// `sensor_msgs/msg/Image`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Image<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    pub height: u32,
    pub width: u32,
    #[serde(borrow)]
    pub encoding: &'a str,
    pub is_bigendian: u8,
    pub step: u32,
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// `sensor_msgs/msg/CompressedImage`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompressedImage<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    #[serde(borrow)]
    pub format: &'a str,
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// `geometry_msgs/msg/Quaternion`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quaternion {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub w: f64,
}

/// `geometry_msgs/msg/Vector3`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Vector3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

/// `sensor_msgs/msg/Imu`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Imu<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    pub orientation: Quaternion,
    pub orientation_covariance: [f64; 9],
    pub angular_velocity: Vector3,
    pub angular_velocity_covariance: [f64; 9],
    pub linear_acceleration: Vector3,
    pub linear_acceleration_covariance: [f64; 9],
}

/// `audio_common_msgs/msg/AudioData` (ros-drivers/audio_common): raw bytes, whose
/// rate, channels and format travel elsewhere.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AudioData<'a> {
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// `audio_common_msgs/msg/AudioDataStamped`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AudioDataStamped<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    #[serde(borrow)]
    pub audio: AudioData<'a>,
}

/// `std_msgs/msg/String`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StringMsg<'a> {
    #[serde(borrow)]
    pub data: &'a str,
}

/// `sensebind_msgs/msg/Embedding` (ros/sensebind_msgs/msg/Embedding.msg).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    pub end: Time,
    pub robot: &'a str,
    pub source: &'a str,
    pub modality: &'a str,
    pub seq: u64,
    pub model: &'a str,
    pub scale: f32,
    pub coverage: f32,
    pub embedding: Vec<f32>,
}

/// `diagnostic_msgs/msg/KeyValue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `diagnostic_msgs/msg/DiagnosticStatus`: `level` 0 OK, 1 WARN, 2 ERROR, 3 STALE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    pub level: u8,
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<KeyValue>,
}

/// `diagnostic_msgs/msg/DiagnosticArray`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticArray<'a> {
    #[serde(borrow)]
    pub header: Header<'a>,
    pub status: Vec<DiagnosticStatus>,
}

impl Time {
    /// `ns` since the epoch as a ROS time (negative times clamp to 0).
    pub fn from_ns(ns: i64) -> Time {
        let ns = ns.max(0);
        Time {
            sec: i32::try_from(ns / 1_000_000_000).unwrap_or(i32::MAX),
            nanosec: (ns % 1_000_000_000) as u32,
        }
    }
}

/// Decode `bytes` (encapsulation header included) as `T`, named `what` in errors.
pub fn decode<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, CdrError> {
    let (head, body) = bytes.split_at_checked(4).ok_or(CdrError::Short(bytes.len()))?;
    let invalid = |e: hiroz_cdr::Error| CdrError::Invalid {
        what,
        reason: e.to_string(),
    };
    let (value, used) = match (head[0], head[1]) {
        (0, 1) => hiroz_cdr::from_bytes::<T, hiroz_cdr::LittleEndian>(body).map_err(invalid)?,
        (0, 0) => hiroz_cdr::from_bytes::<T, hiroz_cdr::BigEndian>(body).map_err(invalid)?,
        (a, b) => return Err(CdrError::Encapsulation(a, b)),
    };
    let left = body.len().saturating_sub(used);
    if left > 3 {
        return Err(CdrError::Trailing { what, left });
    }
    Ok(value)
}

/// `value` as little-endian CDR behind its encapsulation header.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![0, 1, 0, 0];
    // Serializing plain structs into a Vec cannot fail.
    out.extend(hiroz_cdr::to_vec::<T, hiroz_cdr::LittleEndian>(value, 256).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages serialized by rosbags (tools/ros2_fixtures.py).
    fn fixture(name: &str) -> &'static [u8] {
        std::fs::read(format!("{}/tests/fixtures/ros2/{name}.cdr", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .leak()
    }

    #[test]
    fn embeddings_and_diagnostics_encode_as_rosbags_does() {
        let e = Embedding {
            header: Header {
                stamp: Time::from_ns(1_000_000_500),
                frame_id: "front",
            },
            end: Time::from_ns(3_000_000_500),
            robot: "r1",
            source: "front",
            modality: "vision",
            seq: 7,
            model: "minibind",
            scale: 100.0,
            coverage: 0.75,
            embedding: vec![0.6, 0.8],
        };
        assert_eq!(encode(&e), fixture("embedding"));
        assert_eq!(decode::<Embedding>("Embedding", fixture("embedding")).unwrap(), e);
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: v.into(),
        };
        let d = DiagnosticArray {
            header: Header {
                stamp: Time::from_ns(10_000_000_000),
                frame_id: "",
            },
            status: vec![
                DiagnosticStatus {
                    level: 1,
                    name: "sensebind/r1/front".into(),
                    message: "stalled".into(),
                    hardware_id: "r1".into(),
                    values: vec![kv("frames", "12"), kv("errors", "0")],
                },
                DiagnosticStatus {
                    level: 0,
                    name: "sensebind/r1/front/vision".into(),
                    message: "ok".into(),
                    hardware_id: "r1".into(),
                    values: vec![],
                },
            ],
        };
        assert_eq!(encode(&d), fixture("diagnostics"));
    }

    #[test]
    fn images_decode_without_copying_their_pixels() {
        let bytes = fixture("image_rgb8_padded");
        let img: Image = decode("sensor_msgs/msg/Image", bytes).unwrap();
        assert_eq!(img.header.stamp.ns(), Some(1_200_000_000));
        assert_eq!(img.header.frame_id, "cam");
        assert_eq!(
            (img.width, img.height, img.encoding, img.step, img.is_bigendian),
            (3, 2, "rgb8", 12, 0)
        );
        assert_eq!(&img.data[..9], &(0..9).collect::<Vec<u8>>()[..]);
        assert_eq!(&img.data[9..12], &[0xee; 3]);
        // The pixels are the sample's own bytes.
        let range = bytes.as_ptr_range();
        assert!(range.contains(&img.data.as_ptr()));
        // Big-endian CDR (a DDS bridge may pass it on), big-endian pixels.
        let bytes = fixture("image_16uc1_be");
        let d: Image = decode("sensor_msgs/msg/Image", bytes).unwrap();
        assert_eq!(
            (d.width, d.height, d.encoding, d.is_bigendian, d.step),
            (2, 2, "16UC1", 1, 4)
        );
        assert_eq!(d.header.stamp, Time { sec: 7, nanosec: 5 });
        assert_eq!(&d.data[..2], &1000u16.to_be_bytes());
        let c: CompressedImage = decode("sensor_msgs/msg/CompressedImage", fixture("compressed_jpeg")).unwrap();
        assert_eq!((c.format, &c.data[..2]), ("jpeg", &[0xff, 0xd8][..]));
    }

    #[test]
    fn imu_and_audio_decode() {
        let imu: Imu = decode("sensor_msgs/msg/Imu", fixture("imu")).unwrap();
        assert_eq!(imu.header.stamp.ns(), Some(12_345_678_901));
        assert_eq!(imu.header.frame_id, "imu_link");
        assert_eq!(
            imu.angular_velocity,
            Vector3 {
                x: 0.1,
                y: -0.2,
                z: 0.3
            }
        );
        assert_eq!(
            imu.linear_acceleration,
            Vector3 {
                x: 0.5,
                y: -9.81,
                z: 1.25
            }
        );
        assert_eq!(imu.orientation.w, 1.0);
        assert_eq!(imu.linear_acceleration_covariance[8], 8.0);
        let pcm: Vec<u8> = [0i16, 1000, -1000, 32767, -32768]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let a: AudioData = decode("audio_common_msgs/msg/AudioData", fixture("audio_data")).unwrap();
        assert_eq!(a.data, &pcm[..]);
        let s: AudioDataStamped =
            decode("audio_common_msgs/msg/AudioDataStamped", fixture("audio_data_stamped")).unwrap();
        assert_eq!(
            (s.header.stamp.ns(), s.header.frame_id, s.audio.data),
            (Some(5_000_000_500), "mic", &pcm[..])
        );
    }

    #[test]
    fn a_string_encodes_as_rosbags_does() {
        let bytes = fixture("string");
        let s: StringMsg = decode("std_msgs/msg/String", bytes).unwrap();
        assert_eq!(s.data, r#"{"robot":"r1","top":[]}"#);
        assert_eq!(encode(&s), bytes);
    }

    #[test]
    fn bad_bytes_are_refused_with_the_reason() {
        let img = fixture("image_rgb8_padded").to_vec();
        assert_eq!(decode::<StringMsg>("x", &[0, 1]).unwrap_err(), CdrError::Short(2));
        let mut odd = img.clone();
        odd[1] = 7;
        assert!(matches!(
            decode::<Image>("sensor_msgs/msg/Image", &odd),
            Err(CdrError::Encapsulation(0, 7))
        ));
        // Cut short: the declared `data` length is more than there is.
        let e = decode::<Image>("sensor_msgs/msg/Image", &img[..img.len() - 5]).unwrap_err();
        assert!(matches!(e, CdrError::Invalid { .. }), "{e}");
        // A lying length: 4 GiB of pixels declared, nothing allocated, refused.
        let mut lying = img.clone();
        let at = lying.len() - 24 - 4;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::<Image>("sensor_msgs/msg/Image", &lying).is_err());
        // Another type's bytes: an Imu read as a String has bytes left over, or fails.
        assert!(decode::<StringMsg>("std_msgs/msg/String", fixture("imu")).is_err());
        // Every prefix of every fixture is refused or decoded, never a panic.
        for name in [
            "image_rgb8_padded",
            "image_16uc1_be",
            "compressed_jpeg",
            "imu",
            "audio_data_stamped",
        ] {
            let b = fixture(name);
            for n in 0..b.len() {
                let _ = decode::<Image>("x", &b[..n]);
                let _ = decode::<Imu>("x", &b[..n]);
                let _ = decode::<AudioDataStamped>("x", &b[..n]);
            }
        }
    }
}
