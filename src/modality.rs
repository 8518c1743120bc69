//! The six ImageBind modalities and the five sensors that feed them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ImageBind modality: one encoder, one embedding topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Vision,
    Text,
    Audio,
    Depth,
    Thermal,
    Imu,
}

impl Modality {
    pub const ALL: [Modality; 6] = [
        Modality::Vision,
        Modality::Text,
        Modality::Audio,
        Modality::Depth,
        Modality::Thermal,
        Modality::Imu,
    ];

    /// The modalities that come from sensors (everything but text).
    pub const SENSED: [Modality; 5] = [
        Modality::Vision,
        Modality::Audio,
        Modality::Depth,
        Modality::Thermal,
        Modality::Imu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Vision => "vision",
            Modality::Text => "text",
            Modality::Audio => "audio",
            Modality::Depth => "depth",
            Modality::Thermal => "thermal",
            Modality::Imu => "imu",
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Modality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Modality::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown modality `{s}` (expected one of vision, text, audio, depth, thermal, imu)"))
    }
}

/// A physical sensor kind. Each feeds exactly one modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensor {
    Camera,
    Depth,
    Thermal,
    Microphone,
    Imu,
}

impl Sensor {
    pub const ALL: [Sensor; 5] = [
        Sensor::Camera,
        Sensor::Depth,
        Sensor::Thermal,
        Sensor::Microphone,
        Sensor::Imu,
    ];

    pub fn modality(self) -> Modality {
        match self {
            Sensor::Camera => Modality::Vision,
            Sensor::Depth => Modality::Depth,
            Sensor::Thermal => Modality::Thermal,
            Sensor::Microphone => Modality::Audio,
            Sensor::Imu => Modality::Imu,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sensor::Camera => "camera",
            Sensor::Depth => "depth",
            Sensor::Thermal => "thermal",
            Sensor::Microphone => "microphone",
            Sensor::Imu => "imu",
        }
    }
}

impl fmt::Display for Sensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
