//! The six ImageBind modalities and the five sensors that feed them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ImageBind modality: one encoder, one embedding topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
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

/// What a stream of embeddings is: one modality's encoder output, or the fused
/// stream (`embedding/fused`: the normalised weighted sum of every stream's embedding
/// of one window). Queries and searches target these; on the bus and in JSON it is
/// the modality's name or `fused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Modality(Modality),
    Fused,
}

impl Target {
    /// Every sensed modality, then `fused`.
    pub const ALL: [Target; 6] = [
        Target::Modality(Modality::Vision),
        Target::Modality(Modality::Audio),
        Target::Modality(Modality::Depth),
        Target::Modality(Modality::Thermal),
        Target::Modality(Modality::Imu),
        Target::Fused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Modality(m) => m.as_str(),
            Target::Fused => "fused",
        }
    }

    /// The modality, unless this is the fused stream.
    pub fn modality(self) -> Option<Modality> {
        match self {
            Target::Modality(m) => Some(m),
            Target::Fused => None,
        }
    }
}

impl From<Modality> for Target {
    fn from(m: Modality) -> Self {
        Target::Modality(m)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "fused" {
            return Ok(Target::Fused);
        }
        match s.parse::<Modality>() {
            Ok(Modality::Text) => {
                Err("`text` is not a stream: expected one of vision, audio, depth, thermal, imu, fused".into())
            }
            Ok(m) => Ok(Target::Modality(m)),
            Err(_) => Err(format!(
                "unknown stream kind `{s}` (expected one of vision, audio, depth, thermal, imu, fused)"
            )),
        }
    }
}

/// On the bus: a modality's name or `fused`.
impl schemars::JsonSchema for Target {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<String> = Modality::ALL
            .iter()
            .map(|m| m.to_string())
            .chain(["fused".to_string()])
            .collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_and_write_as_names() {
        for t in Target::ALL {
            assert_eq!(t.as_str().parse::<Target>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        assert!("text".parse::<Target>().unwrap_err().contains("not a stream"));
        assert!(serde_json::from_str::<Target>("\"smell\"")
            .unwrap_err()
            .to_string()
            .contains("fused"));
    }
}
