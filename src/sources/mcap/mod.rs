//! `type = "mcap"`: plays the frames of an MCAP recording (`sensebind record`, or any
//! file with `frames/<modality>/<source>` channels in the schemas of
//! [`crate::record::codec`]) into the normal pipeline, one stream per recorded modality,
//! at the recorded sensor times, so windows fall exactly where the live run put them.
//!
//! ```toml
//! [sources.front]
//! type = "mcap"
//! path = "run1.mcap"
//! source = "front"     # which recorded source to play (default: the only one)
//! pace = "realtime"    # or "fast": as fast as the pipeline takes frames (nothing lost)
//! loop = false         # replay again and again, times shifted by the recording's span
//! ```
//!
//! A message that cannot be played (unknown schema, bad size) is skipped and counted; a
//! file cut short plays every message before the cut (those of its complete chunks, and
//! those the chunk torn by the cut still holds whole), then ends.
//!
//! **ROS 2 bags** (rosbag2's MCAP storage: `ros2msg` schemas, `cdr` messages; `path` is
//! the `.mcap` file or the bag directory holding it) play one topic per source:
//!
//! ```toml
//! [sources.front]
//! type = "mcap"
//! path = "bags/run1"            # or bags/run1/run1_0.mcap
//! topic = "/camera/image_raw"
//! sensor = "camera"             # optional, as for `type = "ros2"`; audio: rate, channels, sample_format
//! ```
//!
//! Messages decode exactly as a `ros2` source decodes them live
//! ([`crate::sources::ros2::convert`]), at their `header.stamp` (the bag's log time for
//! `AudioData`, which has no header), so a bag replays to the live embeddings.

pub mod frames;
pub mod reader;

use super::file::Pace;
use super::ros2::convert::{self, AudioFormat, SOURCE_TYPES};
use super::{
    key_error, parse_keys, DriverConfig, Frame, ImageLimits, Nanos, Pacer, Source, SourceConfigError, SourceContext,
    SourceError, SourceInfo, StopFlag, StreamInfo,
};
use crate::clock::{Clock, ReplayClock};
use crate::ident::clip;
use crate::modality::{Modality, Sensor};
use crate::ros2::wire::KnownType;
use frames as codec;
use reader::{ChannelInfo, Messages, ReadError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McapConfig {
    pub path: String,
    /// The recorded source id to play; empty: every frame channel (one per modality).
    #[serde(default)]
    pub source: String,
    #[serde(default = "default_pace")]
    pub pace: Pace,
    #[serde(rename = "loop", default)]
    pub looped: bool,
    /// A ROS 2 bag's topic to play; empty: sensebind's frame channels.
    #[serde(default)]
    pub topic: String,
    /// With `topic`: the sensor (default: inferred as for `type = "ros2"`).
    #[serde(default)]
    pub sensor: Option<Sensor>,
    /// With an audio `topic`: how its bytes are read.
    #[serde(default)]
    pub rate: Option<u32>,
    #[serde(default)]
    pub channels: Option<u16>,
    #[serde(default)]
    pub sample_format: Option<String>,
    #[serde(skip)]
    pub audio: AudioFormat,
}

fn default_pace() -> Pace {
    Pace::Realtime
}

/// Parse `[sources.<id>]` keys of `type = "mcap"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let mut c: McapConfig = parse_keys(id, keys)?;
    if c.path.is_empty() {
        return Err(key_error(id, "path", "expected the path of an .mcap recording"));
    }
    if c.topic.is_empty() {
        for (key, given) in [
            ("sensor", c.sensor.is_some()),
            ("rate", c.rate.is_some()),
            ("channels", c.channels.is_some()),
            ("sample_format", c.sample_format.is_some()),
        ] {
            if given {
                return Err(key_error(id, key, "only for a ROS 2 bag's `topic`"));
            }
        }
    } else {
        if !c.topic.starts_with('/') {
            c.topic.insert(0, '/');
        }
        if !crate::ros2::wire::valid_namespace(&c.topic) || c.topic == "/" {
            return Err(key_error(
                id,
                "topic",
                "expected a ROS topic such as `/camera/image_raw`",
            ));
        }
        if !c.source.is_empty() {
            return Err(key_error(
                id,
                "source",
                "`source` picks a sensebind recording's source; a ROS 2 bag's is `topic` (not both)",
            ));
        }
        c.audio = super::ros2::audio_keys(id, c.sensor, c.rate, c.channels, c.sample_format.as_deref())?;
    }
    Ok(Box::new(c))
}

/// Frame rate assumed for a recorded stream whose rate is neither in its metadata
/// (`nominal_rate_hz`, written by `sensebind record`) nor estimable from the file.
fn default_rate(m: Modality) -> f64 {
    match m {
        Modality::Audio => 50.0,
        Modality::Imu => 200.0,
        Modality::Thermal => 9.0,
        _ => 30.0,
    }
}

/// A recorded frame stream chosen for playing.
#[derive(Debug, Clone)]
struct Stream {
    modality: Modality,
    rate_hz: f64,
    /// A ROS 2 bag's topic: its type and sensor.
    ros: Option<(KnownType, Sensor)>,
}

/// The MCAP file of `path`: the file itself, or the one `.mcap` file of a rosbag2
/// directory.
pub fn bag_file(path: &Path) -> Result<PathBuf, String> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mcap"))
        .collect();
    files.sort();
    match files.len() {
        1 => Ok(files.remove(0)),
        0 => Err(format!(
            "{}: no .mcap file in this directory (rosbag2's sqlite3 storage is not read: `ros2 bag convert` it to MCAP)",
            path.display()
        )),
        n => Err(format!(
            "{}: {n} .mcap files (a split bag); give the one to play as `path`",
            path.display()
        )),
    }
}

/// The ROS 2 topics of a bag (channels of `cdr` messages), with their type when a
/// source can play it.
pub fn ros_topics(path: &Path) -> Result<Vec<(String, Option<KnownType>)>, String> {
    let file = bag_file(path)?;
    let channels = reader::channels(&file).map_err(|e| e.to_string())?;
    Ok(channels
        .values()
        .filter(|c| c.message_encoding == "cdr")
        .map(|c| {
            let t = SOURCE_TYPES.into_iter().find(|t| t.ros_name() == c.schema);
            (c.topic.clone(), t)
        })
        .collect())
}

/// The stream of a ROS 2 bag's `topic`.
fn select_ros(
    file: &Path,
    channels: &BTreeMap<String, ChannelInfo>,
    cfg: &McapConfig,
) -> Result<BTreeMap<String, Stream>, String> {
    let path = file.display();
    let Some(c) = channels.get(&cfg.topic) else {
        let topics: Vec<&str> = channels
            .values()
            .filter(|c| c.message_encoding == "cdr")
            .map(|c| c.topic.as_str())
            .collect();
        return Err(format!(
            "{path} has no topic {} (its ROS 2 topics: {})",
            cfg.topic,
            if topics.is_empty() {
                "none".to_string()
            } else {
                topics.join(", ")
            }
        ));
    };
    if c.message_encoding != "cdr" {
        return Err(format!(
            "{path} {}: messages are `{}`, not ROS 2 `cdr`",
            cfg.topic, c.message_encoding
        ));
    }
    let t = SOURCE_TYPES
        .into_iter()
        .find(|t| t.ros_name() == c.schema)
        .ok_or_else(|| format!("{path} {}: type `{}` is not read", cfg.topic, clip(&c.schema, 80)))?;
    let sensor = match cfg.sensor.or_else(|| convert::sensor_of_type(t)) {
        Some(s) => s,
        None => {
            // An Image: its first message's encoding says.
            let mut msgs = Messages::open(file).map_err(|e| e.to_string())?;
            let first = msgs
                .find_map(|m| m.ok().filter(|m| m.channel.topic == cfg.topic))
                .ok_or_else(|| format!("{path} {}: no message to tell the sensor by; set `sensor`", cfg.topic))?;
            convert::sensor_of_message(t, &first.data).map_err(|e| format!("{path} {}: {e}", cfg.topic))?
        }
    };
    if !convert::type_fits(t, sensor) {
        return Err(format!(
            "{path} {}: a {} source cannot read `{}` messages",
            cfg.topic,
            sensor.as_str(),
            t.ros_name()
        ));
    }
    let m = sensor.modality();
    let rate_hz = c
        .rate_hz
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or_else(|| default_rate(m));
    Ok([(
        cfg.topic.clone(),
        Stream {
            modality: m,
            rate_hz,
            ros: Some((t, sensor)),
        },
    )]
    .into())
}

/// The frame channels of a recording that `source` selects, by topic.
fn select(
    path: &str,
    channels: &BTreeMap<String, ChannelInfo>,
    source: &str,
) -> Result<BTreeMap<String, Stream>, String> {
    let mut out: BTreeMap<String, Stream> = BTreeMap::new();
    let mut by_modality: BTreeMap<Modality, &str> = BTreeMap::new();
    for (topic, c) in channels {
        let Some((m, src)) = codec::parse_frame_topic(topic) else {
            continue;
        };
        if !source.is_empty() && src != source {
            continue;
        }
        if let Some(other) = by_modality.insert(m, topic) {
            return Err(format!(
                "{path} has two {m} streams ({other} and {topic}): set `source` to the recorded source to play"
            ));
        }
        let rate_hz = c
            .metadata
            .get("nominal_rate_hz")
            .and_then(|v| v.parse::<f64>().ok())
            .or(c.rate_hz)
            .filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or_else(|| default_rate(m));
        out.insert(
            topic.clone(),
            Stream {
                modality: m,
                rate_hz,
                ros: None,
            },
        );
    }
    if out.is_empty() {
        let recorded: Vec<&str> = channels
            .keys()
            .filter(|t| codec::parse_frame_topic(t).is_some())
            .map(|s| s.as_str())
            .collect();
        return Err(if recorded.is_empty() {
            format!("{path} has no frame channels (`frames/<modality>/<source>`)")
        } else {
            format!(
                "{path} has no frames of source `{source}` (it has {})",
                recorded.join(", ")
            )
        });
    }
    Ok(out)
}

/// The recorded source ids of a recording (for `sensebind replay`).
pub fn recorded_sources(path: &std::path::Path) -> Result<Vec<String>, ReadError> {
    let mut ids: Vec<String> = reader::channels(path)?
        .keys()
        .filter_map(|t| codec::parse_frame_topic(t).map(|(_, s)| s.to_string()))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

impl DriverConfig for McapConfig {
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        let open_err = |reason: String| SourceError::Open {
            what: format!("mcap {}", self.path),
            reason,
        };
        let file = bag_file(Path::new(&self.path)).map_err(open_err)?;
        let channels = reader::channels(&file).map_err(|e| open_err(e.to_string()))?;
        let streams = if self.topic.is_empty() {
            select(&self.path, &channels, &self.source)
        } else {
            select_ros(&file, &channels, self)
        }
        .map_err(open_err)?;
        Ok(Box::new(McapSource {
            cfg: self.clone(),
            file,
            streams,
            messages: None,
            limits: ctx.image_limits,
            first_ns: None,
            last_ns: None,
            loop_offset_ns: 0,
            pacer: None,
            clock: ReplayClock::new(),
            stop: ctx.stop.clone(),
            skipped: 0,
            truncated: false,
        }))
    }
    fn default_queue(&self) -> usize {
        1024
    }
    fn default_when_full(&self) -> crate::edge::WhenFull {
        super::default_when_full_for(self.pace == Pace::Fast)
    }
}

struct McapSource {
    cfg: McapConfig,
    /// The MCAP file (`path`, or the one in a bag directory).
    file: PathBuf,
    streams: BTreeMap<String, Stream>,
    messages: Option<Messages>,
    limits: ImageLimits,
    first_ns: Option<Nanos>,
    last_ns: Option<Nanos>,
    loop_offset_ns: Nanos,
    pacer: Option<Pacer>,
    clock: Arc<ReplayClock>,
    stop: StopFlag,
    skipped: u64,
    truncated: bool,
}

impl McapSource {
    fn open_messages(&self) -> Result<Messages, SourceError> {
        Messages::open(&self.file).map_err(|e| SourceError::Open {
            what: format!("mcap {}", self.cfg.path),
            reason: e.to_string(),
        })
    }

    /// The next playable frame of the selected channels (recorded time), `None` at the end.
    fn next_recorded(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            let Some(msgs) = self.messages.as_mut() else {
                return Ok(None);
            };
            let m = match msgs.next() {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(ReadError::Truncated { messages, reason, .. })) => {
                    self.truncated = true;
                    tracing::warn!(event = crate::telemetry::names::REPLAY_TRUNCATED, path = %self.cfg.path, messages, reason = %reason, "recording is cut short; played every message before the cut");
                    return Ok(None);
                }
                Some(Err(e)) => {
                    return Err(SourceError::Read {
                        what: format!("mcap {}", self.cfg.path),
                        reason: e.to_string(),
                    })
                }
            };
            let Some(stream) = self.streams.get(&m.channel.topic) else {
                continue;
            };
            if let Some((t, sensor)) = stream.ros {
                match convert::message(t, &m.data, sensor, self.cfg.audio, self.limits) {
                    Ok(d) => {
                        return Ok(Some(Frame {
                            t_ns: d.stamp_ns.unwrap_or(m.log_time_ns as Nanos),
                            data: d.data,
                        }))
                    }
                    Err(e) => {
                        self.skipped += 1;
                        return Err(SourceError::BadData {
                            what: format!("mcap {} {}", self.cfg.path, m.channel.topic),
                            reason: e,
                        });
                    }
                }
            }
            match codec::decode_frame(
                stream.modality,
                &m.channel.schema,
                &m.channel.message_encoding,
                m.data.into(),
                m.log_time_ns,
                self.limits,
            ) {
                Ok(f) => return Ok(Some(f)),
                Err(e) => {
                    // Skipped and counted; the rest of the recording still plays.
                    self.skipped += 1;
                    return Err(SourceError::BadData {
                        what: format!("mcap {} {}", self.cfg.path, m.channel.topic),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}

impl Source for McapSource {
    fn info(&self) -> SourceInfo {
        let topics: Vec<&str> = self.streams.keys().map(|s| s.as_str()).collect();
        SourceInfo {
            description: format!(
                "mcap {} ({}), {:?}{}",
                self.cfg.path,
                topics.join(", "),
                self.cfg.pace,
                if self.cfg.looped { ", looped" } else { "" }
            ),
            streams: self
                .streams
                .values()
                .map(|s| StreamInfo {
                    modality: s.modality,
                    nominal_rate_hz: s.rate_hz,
                })
                .collect(),
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn open(&mut self) -> Result<(), SourceError> {
        if self.messages.is_none() {
            self.messages = Some(self.open_messages()?);
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let mut frame = self.next_recorded()?;
        if frame.is_none() && self.cfg.looped {
            if let (Some(first), Some(last)) = (self.first_ns, self.last_ns) {
                // Shift by the span rounded up to whole seconds, so every loop keeps the
                // window grid of the first.
                let span = ((last - first) / 1_000_000_000 + 1) * 1_000_000_000;
                self.loop_offset_ns += span;
                self.messages = Some(self.open_messages()?);
                frame = self.next_recorded()?;
            }
        }
        let Some(mut frame) = frame else { return Ok(None) };
        if self.loop_offset_ns == 0 {
            self.first_ns = Some(self.first_ns.map_or(frame.t_ns, |f| f.min(frame.t_ns)));
            self.last_ns = Some(self.last_ns.map_or(frame.t_ns, |l| l.max(frame.t_ns)));
        }
        frame.t_ns += self.loop_offset_ns;
        if self.cfg.pace == Pace::Realtime {
            let pacer = self
                .pacer
                .get_or_insert_with(|| Pacer::new(self.clock.clone(), frame.t_ns, false, self.stop.clone()));
            if !pacer.wait_until(frame.t_ns) {
                return Ok(None);
            }
        }
        self.clock.advance(frame.t_ns);
        Ok(Some(frame))
    }

    fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("skipped".into(), self.skipped.into());
        m.insert("truncated".into(), self.truncated.into());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(topic: &str, rate: Option<&str>) -> (String, ChannelInfo) {
        (
            topic.to_string(),
            ChannelInfo {
                topic: topic.into(),
                schema: codec::RAW_IMAGE.into(),
                message_encoding: "protobuf".into(),
                metadata: rate
                    .map(|r| [("nominal_rate_hz".to_string(), r.to_string())].into())
                    .unwrap_or_default(),
                message_count: None,
                rate_hz: None,
            },
        )
    }

    #[test]
    fn ros_bag_keys_are_checked() {
        let p = |s: &str| {
            parse("bag", toml::from_str(s).unwrap())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(p("path = \"b\"\ntopic = \"camera/image_raw\"\nsensor = \"camera\"").is_ok());
        for (keys, needle) in [
            (
                "path = \"b\"\nsensor = \"camera\"",
                "`sources.bag.sensor`: only for a ROS 2 bag's `topic`",
            ),
            ("path = \"b\"\ntopic = \"/a b\"", "`sources.bag.topic`"),
            (
                "path = \"b\"\ntopic = \"/a\"\nsource = \"front\"",
                "`sources.bag.source`",
            ),
            (
                "path = \"b\"\ntopic = \"/a\"\nsensor = \"imu\"\nrate = 8000",
                "`sources.bag.rate`",
            ),
        ] {
            let e = p(keys).unwrap_err();
            assert!(e.contains(needle), "{keys}: {e}");
        }
    }

    #[test]
    fn streams_are_chosen_by_recorded_source() {
        let chans: BTreeMap<_, _> = [
            ch("frames/vision/front", Some("15")),
            ch("frames/vision/rear", None),
            ch("frames/depth/front", None),
            ch("embedding/vision/front", None),
        ]
        .into_iter()
        .collect();
        let s = select("r.mcap", &chans, "front").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s["frames/vision/front"].rate_hz, 15.0);
        assert_eq!(s["frames/depth/front"].rate_hz, 30.0);
        let e = select("r.mcap", &chans, "").unwrap_err();
        assert!(e.contains("two vision streams") && e.contains("`source`"), "{e}");
        let e = select("r.mcap", &chans, "left").unwrap_err();
        assert!(
            e.contains("no frames of source `left`") && e.contains("frames/vision/rear"),
            "{e}"
        );
    }
}
