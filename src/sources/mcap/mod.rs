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

pub mod frames;
pub mod reader;

use super::file::Pace;
use super::{
    key_error, parse_keys, DriverConfig, Frame, ImageLimits, Nanos, Pacer, Source, SourceConfigError, SourceContext,
    SourceError, SourceInfo, StopFlag, StreamInfo,
};
use crate::clock::{Clock, ReplayClock};
use crate::modality::Modality;
use frames as codec;
use reader::{ChannelInfo, Messages, ReadError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
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
}

fn default_pace() -> Pace {
    Pace::Realtime
}

/// Parse `[sources.<id>]` keys of `type = "mcap"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let c: McapConfig = parse_keys(id, keys)?;
    if c.path.is_empty() {
        return Err(key_error(id, "path", "expected the path of an .mcap recording"));
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
        out.insert(topic.clone(), Stream { modality: m, rate_hz });
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
        let channels = reader::channels(std::path::Path::new(&self.path)).map_err(|e| open_err(e.to_string()))?;
        let streams = select(&self.path, &channels, &self.source).map_err(open_err)?;
        Ok(Box::new(McapSource {
            cfg: self.clone(),
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
        Messages::open(&PathBuf::from(&self.cfg.path)).map_err(|e| SourceError::Open {
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
