//! `type = "ros2"`: a ROS 2 topic, received over zenoh with no ROS installation.
//!
//! With `transport = "rmw_zenoh"` (the default) sensebind subscribes to
//! `<domain>/<topic>/*/*` on the daemon's bus, which rmw_zenoh publishers put their
//! samples on (the last two chunks: the type and its hash), and declares an `MS`
//! liveliness token so `ros2 topic info` lists it. With `"ros2dds"` it subscribes to
//! the key `zenoh-bridge-ros2dds` uses (the topic without its leading `/`); the type
//! is then `msg_type`, or read from the bridge's own graph token.
//!
//! Keys: `topic` (required), `sensor` (inferred when the type says: CompressedImage →
//! camera, Imu → imu, audio → microphone; an Image by its first message's encoding),
//! `transport`, `msg_type`, `rate_hz` (the topic's message rate, for window coverage),
//! and for audio `rate`, `channels`, `sample_format` (`S16LE`, `S32LE`, `F32LE`, `U8`).
//!
//! Time is each message's `header.stamp` (clock kind `ros`); an `AudioData` (no header)
//! or a zero stamp is stamped on arrival (audio: by the sample clock). Samples wait in a
//! bounded queue between zenoh's callback and the runner; a full queue drops and
//! counts (`dropped` in the driver status). Every message refused (undecodable CDR, an
//! unknown encoding, short `data`, a type that contradicts `sensor`, an image over
//! `limits.max_image_side`) is a skipped frame with the topic and the reason.

pub mod convert;

use super::sample_clock::SampleClock;
use super::{
    key_error, parse_keys, DriverConfig, Frame, ImageLimits, Source, SourceConfigError, SourceContext, SourceError,
    SourceInfo, StopFlag, StreamInfo,
};
use crate::clock::{realtime_ns, Clock, RosClock};
use crate::modality::Sensor;
use crate::ros2::node::{Endpoint, Participant, Slot};
use crate::ros2::wire::{self, EndpointKind, KnownType};
use convert::{AudioFormat, SampleFormat, SOURCE_TYPES};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use zenoh::Wait;

/// Samples waiting between zenoh's callback and the source thread.
pub const QUEUE: usize = 64;
/// How long a source whose sensor or type must be read from the robot waits for it.
pub const DISCOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-last depth declared in the subscription's graph token.
const DEPTH: u32 = 10;

/// How the topic reaches zenoh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// ROS 2's zenoh middleware: typed keys, attachments, graph tokens.
    #[default]
    RmwZenoh,
    /// `zenoh-bridge-ros2dds` in front of a DDS robot: the topic name as the key.
    Ros2dds,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::RmwZenoh => "rmw_zenoh",
            Transport::Ros2dds => "ros2dds",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    topic: String,
    sensor: Option<Sensor>,
    #[serde(default)]
    transport: Transport,
    msg_type: Option<String>,
    rate_hz: Option<f64>,
    rate: Option<u32>,
    channels: Option<u16>,
    sample_format: Option<String>,
}

/// A `ros2` source's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Ros2Config {
    /// With its leading `/`.
    pub topic: String,
    pub sensor: Option<Sensor>,
    pub transport: Transport,
    pub msg_type: Option<KnownType>,
    pub rate_hz: Option<f64>,
    pub audio: AudioFormat,
}

/// The message rate assumed for coverage when `rate_hz` is not given: low, so a
/// slower topic than usual still fills its windows.
fn default_rate(s: Sensor) -> f64 {
    match s {
        Sensor::Camera | Sensor::Depth => 10.0,
        Sensor::Thermal => 5.0,
        Sensor::Imu => 50.0,
        // Audio coverage is counted in samples, not messages.
        Sensor::Microphone => 10.0,
    }
}

/// Parse `[sources.<id>]` keys of `type = "ros2"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let k: Keys = parse_keys(id, keys)?;
    let topic = if k.topic.starts_with('/') {
        k.topic.clone()
    } else {
        format!("/{}", k.topic)
    };
    if topic == "/" || !wire::valid_namespace(&topic) {
        return Err(key_error(
            id,
            "topic",
            format!(
                "expected a ROS topic such as `/camera/image_raw`, got `{}`",
                crate::ident::clip(&k.topic, 80)
            ),
        ));
    }
    let msg_type = match &k.msg_type {
        None => None,
        Some(name) => Some(SOURCE_TYPES.into_iter().find(|t| t.ros_name() == name).ok_or_else(|| {
            let known: Vec<&str> = SOURCE_TYPES.iter().map(|t| t.ros_name()).collect();
            key_error(
                id,
                "msg_type",
                format!(
                    "`{}` is not read (expected one of {})",
                    crate::ident::clip(name, 80),
                    known.join(", ")
                ),
            )
        })?),
    };
    if let (Some(t), Some(s)) = (msg_type, k.sensor) {
        if !convert::type_fits(t, s) {
            return Err(key_error(
                id,
                "sensor",
                format!("a {} source cannot read `{}` messages", s.as_str(), t.ros_name()),
            ));
        }
    }
    if let Some(r) = k.rate_hz {
        if !(r.is_finite() && r > 0.0 && r <= 100_000.0) {
            return Err(key_error(id, "rate_hz", format!("expected 0 < Hz <= 100000, got {r}")));
        }
    }
    let sensor = k.sensor.or_else(|| msg_type.and_then(convert::sensor_of_type));
    let audio = audio_keys(id, sensor, k.rate, k.channels, k.sample_format.as_deref())?;
    Ok(Box::new(Ros2Config {
        topic,
        sensor: k.sensor,
        transport: k.transport,
        msg_type,
        rate_hz: k.rate_hz,
        audio,
    }))
}

/// The audio keys `rate`, `channels` and `sample_format` of a ROS 2 audio topic (also
/// of a rosbag2 `mcap` source), checked; defaults for those not given. `sensor`, when
/// known, must be a microphone for any of them to be given.
pub fn audio_keys(
    id: &str,
    sensor: Option<Sensor>,
    rate: Option<u32>,
    channels: Option<u16>,
    sample_format: Option<&str>,
) -> Result<AudioFormat, SourceConfigError> {
    let given = rate.is_some() || channels.is_some() || sample_format.is_some();
    if given && sensor.is_some_and(|s| s != Sensor::Microphone) {
        return Err(key_error(
            id,
            if rate.is_some() {
                "rate"
            } else if channels.is_some() {
                "channels"
            } else {
                "sample_format"
            },
            "only audio topics have `rate`, `channels` and `sample_format` (did you mean `rate_hz`?)",
        ));
    }
    let mut audio = AudioFormat::default();
    if let Some(r) = rate {
        if !(1..=super::MAX_SAMPLE_RATE).contains(&r) {
            return Err(key_error(
                id,
                "rate",
                format!("expected 1..={} samples/s, got {r}", super::MAX_SAMPLE_RATE),
            ));
        }
        audio.rate = r;
    }
    if let Some(c) = channels {
        if !(1..=super::MAX_CHANNELS).contains(&c) {
            return Err(key_error(
                id,
                "channels",
                format!("expected 1..={}, got {c}", super::MAX_CHANNELS),
            ));
        }
        audio.channels = c;
    }
    if let Some(f) = sample_format {
        audio.format = SampleFormat::parse(f).ok_or_else(|| {
            key_error(
                id,
                "sample_format",
                format!(
                    "expected S16LE, S32LE, F32LE or U8, got `{}`",
                    crate::ident::clip(f, 20)
                ),
            )
        })?;
    }
    Ok(audio)
}

/// A source id for a ROS topic: `/camera/image_raw` → `camera_image_raw`.
pub fn topic_id(topic: &str) -> String {
    wire::sanitize(topic.trim_start_matches('/'))
}

impl DriverConfig for Ros2Config {
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        let sensor = OnceLock::new();
        if let Some(s) = self.sensor.or_else(|| self.msg_type.and_then(convert::sensor_of_type)) {
            let _ = sensor.set(s);
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        Ok(Box::new(Ros2Source {
            cfg: self.clone(),
            slot: ctx.ros2.clone(),
            limits: ctx.image_limits,
            stop: ctx.stop.clone(),
            sensor,
            msg_type: self.msg_type,
            sub: None,
            pending: None,
            tx,
            rx,
            counters: Arc::new(Counters::default()),
            clock: RosClock::new(),
            audio_clock: SampleClock::new(self.audio.rate, 50),
        }))
    }
    fn default_queue(&self) -> usize {
        match self.sensor.or_else(|| self.msg_type.and_then(convert::sensor_of_type)) {
            Some(s) => super::default_queue_for(s),
            None => 64,
        }
    }
}

/// What the source counts (reported in health as the driver status).
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    /// The queue was full: dropped before decoding.
    dropped: AtomicU64,
    /// Samples on the subscription's key that were not this topic.
    foreign: AtomicU64,
    unstamped: AtomicU64,
    /// rmw_zenoh samples without a readable attachment (accepted, as a bridge's are).
    no_attachment: AtomicU64,
}

/// A live subscription and its graph token.
struct Subscription {
    _sub: zenoh::pubsub::Subscriber<()>,
    _token: Option<Endpoint>,
    participant: Arc<Participant>,
}

/// A ROS 2 topic as a source.
pub struct Ros2Source {
    cfg: Ros2Config,
    slot: Slot,
    limits: ImageLimits,
    stop: StopFlag,
    /// Known from the keys, or from the first message.
    sensor: OnceLock<Sensor>,
    /// `msg_type`, or (ros2dds) what the bridge's token says.
    msg_type: Option<KnownType>,
    sub: Option<Subscription>,
    /// A sample read while discovering the sensor, not yet turned into a frame.
    pending: Option<zenoh::sample::Sample>,
    tx: Sender<zenoh::sample::Sample>,
    rx: Receiver<zenoh::sample::Sample>,
    counters: Arc<Counters>,
    clock: Arc<RosClock>,
    audio_clock: SampleClock,
}

impl Ros2Source {
    fn what(&self) -> String {
        format!("ROS 2 topic {}", self.cfg.topic)
    }

    fn open_error(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Open {
            what: self.what(),
            reason: reason.into(),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> SourceError {
        SourceError::BadData {
            what: self.what(),
            reason: reason.into(),
        }
    }

    /// The subscription's key.
    fn key(&self, p: &Participant) -> String {
        match self.cfg.transport {
            Transport::RmwZenoh => format!("{}/{}/*/*", p.domain(), self.cfg.topic.trim_start_matches('/')),
            Transport::Ros2dds => wire::bridge_key(&self.cfg.topic),
        }
    }

    /// Subscribe (once; kept across reopens).
    fn subscribe(&mut self) -> Result<(), SourceError> {
        if self.sub.is_some() {
            return Ok(());
        }
        let Some(p) = self.slot.get() else {
            return Err(
                self.open_error("the daemon's bus is not open (a `ros2` source runs only inside `sensebind run`)")
            );
        };
        if self.cfg.transport == Transport::Ros2dds && self.msg_type.is_none() {
            self.msg_type = Some(self.bridge_type(&p)?);
        }
        let key = self.key(&p);
        let (tx, counters) = (self.tx.clone(), self.counters.clone());
        let sub = p
            .session()
            .declare_subscriber(key.clone())
            .callback(move |s| {
                counters.received.fetch_add(1, Ordering::Relaxed);
                if tx.try_send(s).is_err() {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            })
            .wait()
            .map_err(|e| self.open_error(format!("subscribing to `{key}`: {e}")))?;
        // The graph token needs the type: known now, or declared with the first message.
        let token = match (self.cfg.transport, self.msg_type) {
            (Transport::RmwZenoh, Some(t)) => Some(
                p.endpoint(EndpointKind::Subscription, &self.cfg.topic, t, DEPTH)
                    .map_err(|e| self.open_error(e))?,
            ),
            _ => None,
        };
        self.sub = Some(Subscription {
            _sub: sub,
            _token: token,
            participant: p,
        });
        Ok(())
    }

    /// The type zenoh-bridge-ros2dds names for the topic in its publisher token
    /// `@/<zid>/@ros2_lv/MP/<key, / as §>/<type, / as §>/<qos>`.
    fn bridge_type(&self, p: &Participant) -> Result<KnownType, SourceError> {
        let ke = wire::bridge_key(&self.cfg.topic).replace('/', "§");
        let sel = format!("@/*/@ros2_lv/MP/{ke}/**");
        let replies = p
            .session()
            .liveliness()
            .get(sel.clone())
            .timeout(Duration::from_secs(3))
            .wait()
            .map_err(|e| self.open_error(format!("asking the bridge for the type of {}: {e}", self.cfg.topic)))?;
        let mut named = None;
        while let Ok(r) = replies.recv() {
            let Ok(s) = r.result() else { continue };
            let chunks: Vec<&str> = s.key_expr().as_str().split('/').collect();
            if let Some(typ) = chunks.get(5) {
                named = Some(typ.replace('§', "/"));
            }
        }
        match named {
            Some(name) => SOURCE_TYPES.into_iter().find(|t| t.ros_name() == name).ok_or_else(|| {
                self.open_error(format!(
                    "the bridge says {} carries `{}`, which is not read",
                    self.cfg.topic,
                    crate::ident::clip(&name, 80)
                ))
            }),
            None => Err(self.open_error(format!(
                "zenoh-bridge-ros2dds names no type for {} (no publisher yet): set `msg_type`",
                self.cfg.topic
            ))),
        }
    }

    /// The type of one sample (from its key with rmw_zenoh), checked against the
    /// topic and `msg_type`.
    fn type_of(&mut self, s: &zenoh::sample::Sample) -> Result<Option<KnownType>, SourceError> {
        if self.cfg.transport == Transport::Ros2dds {
            return Ok(self.msg_type);
        }
        let key = s.key_expr().as_str();
        let Some(k) = wire::parse_data_key(key) else {
            self.counters.foreign.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        if k.topic != self.cfg.topic {
            // `/a/b` also matches `<d>/a/*/*`: another topic's samples.
            self.counters.foreign.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if s.attachment()
            .and_then(|a| wire::Attachment::decode(&a.to_bytes()))
            .is_none()
        {
            self.counters.no_attachment.fetch_add(1, Ordering::Relaxed);
        }
        let Some(t) = k.known_type().filter(|t| SOURCE_TYPES.contains(t)) else {
            return Err(self.bad(format!(
                "type `{}` ({}) is not read",
                crate::ident::clip(&k.dds_type, 80),
                crate::ident::clip(&k.hash, 80)
            )));
        };
        match self.msg_type {
            Some(want) if want != t => Err(self.bad(format!(
                "carries `{}`, but `msg_type` is `{}`",
                t.ros_name(),
                want.ros_name()
            ))),
            Some(_) => Ok(Some(t)),
            None => {
                // The first typed sample: now the graph token can say the type.
                self.msg_type = Some(t);
                if let Some(sub) = &mut self.sub {
                    if sub._token.is_none() {
                        sub._token = sub
                            .participant
                            .endpoint(EndpointKind::Subscription, &self.cfg.topic, t, DEPTH)
                            .ok();
                    }
                }
                Ok(Some(t))
            }
        }
    }

    fn sample_to_frame(&mut self, s: zenoh::sample::Sample) -> Result<Option<Frame>, SourceError> {
        let Some(t) = self.type_of(&s)? else {
            return Ok(None);
        };
        let payload = s.payload().to_bytes();
        let sensor = match self.sensor.get() {
            Some(s) => *s,
            None => {
                let found = convert::sensor_of_message(t, &payload).map_err(|e| self.bad(e))?;
                *self.sensor.get_or_init(|| found)
            }
        };
        let d = convert::message(t, &payload, sensor, self.cfg.audio, self.limits).map_err(|e| self.bad(e))?;
        let t_ns = match d.stamp_ns {
            Some(t) => t,
            None if t == KnownType::AudioData => {
                let frames = match &d.data {
                    super::FrameData::Audio { samples, channels, .. } => samples.len() as u64 / u64::from(*channels),
                    _ => 0,
                };
                self.audio_clock.stamp(frames, 0, realtime_ns()).t_ns
            }
            None => {
                self.counters.unstamped.fetch_add(1, Ordering::Relaxed);
                realtime_ns()
            }
        };
        self.clock.observe(t_ns);
        Ok(Some(Frame { t_ns, data: d.data }))
    }

    /// The type the robot's graph says a publisher of the topic has (rmw_zenoh `MP`
    /// tokens), if any answers within a second or two.
    fn graph_type(&self, p: &Participant) -> Option<KnownType> {
        let replies = p
            .session()
            .liveliness()
            .get(format!("@ros2_lv/{}/**", p.domain()))
            .timeout(Duration::from_secs(2))
            .wait()
            .ok()?;
        let topic = wire::mangle(&self.cfg.topic);
        let mut found = None;
        while let Ok(r) = replies.recv() {
            let Ok(s) = r.result() else { continue };
            let c: Vec<&str> = s.key_expr().as_str().split('/').collect();
            // @ros2_lv/<d>/<zid>/<node>/<entity>/MP/<enclave>/<ns>/<name>/<topic>/<type>/<hash>/<qos>
            if c.len() == 13 && c[5] == "MP" && c[9] == topic {
                let k = wire::DataKey {
                    domain: p.domain(),
                    topic: self.cfg.topic.clone(),
                    dds_type: c[10].to_string(),
                    hash: c[11].to_string(),
                };
                found = k.known_type().filter(|t| SOURCE_TYPES.contains(t)).or(found);
            }
        }
        found
    }

    /// Find out which sensor this is (a source without `sensor`): from the type a
    /// publisher declares in the graph when the type says, else from the first
    /// message (an Image's encoding), which is kept for `next_frame`.
    fn discover(&mut self) -> Result<(), SourceError> {
        if let (Transport::RmwZenoh, None, Some(p)) = (self.cfg.transport, self.msg_type, self.slot.get()) {
            if let Some(t) = self.graph_type(&p) {
                self.msg_type = Some(t);
                if let Some(s) = convert::sensor_of_type(t) {
                    let _ = self.sensor.set(s);
                }
            }
        }
        self.subscribe()?;
        if let Some(s) = self.msg_type.and_then(convert::sensor_of_type) {
            let _ = self.sensor.set(s);
        }
        let deadline = Instant::now() + DISCOVER_TIMEOUT;
        while self.sensor.get().is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.is_stopped() {
                return Err(self.open_error(format!(
                    "no message on {} within {} s to tell which sensor it is: set `sensor` (camera, depth, thermal, microphone or imu)",
                    self.cfg.topic,
                    DISCOVER_TIMEOUT.as_secs()
                )));
            }
            let Ok(s) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) else {
                continue;
            };
            let t = match self.type_of(&s) {
                Ok(Some(t)) => t,
                Ok(None) | Err(_) => continue,
            };
            let payload = s.payload().to_bytes();
            match convert::sensor_of_message(t, &payload) {
                Ok(found) => {
                    let _ = self.sensor.set(found);
                    self.pending = Some(s);
                }
                Err(e) if e.contains("set `sensor`") => return Err(self.open_error(e)),
                Err(_) => continue,
            }
        }
        Ok(())
    }
}

impl Source for Ros2Source {
    fn info(&self) -> SourceInfo {
        let t = self.msg_type.map_or("type from the topic", |t| t.ros_name());
        SourceInfo {
            description: format!("ROS 2 {} ({}, {t})", self.cfg.topic, self.cfg.transport.as_str()),
            streams: self
                .sensor
                .get()
                .map(|s| StreamInfo {
                    modality: s.modality(),
                    nominal_rate_hz: self.cfg.rate_hz.unwrap_or_else(|| default_rate(*s)),
                })
                .into_iter()
                .collect(),
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    fn prepare(&mut self) -> Result<(), SourceError> {
        if self.sensor.get().is_some() {
            return Ok(());
        }
        self.discover()
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.subscribe()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            let s = match self.pending.take() {
                Some(s) => s,
                None => match self.rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(s) => s,
                    Err(RecvTimeoutError::Timeout) if !self.stop.is_stopped() => continue,
                    // Stopping (the runner checks the flag), or the sender is gone.
                    Err(_) => return Ok(None),
                },
            };
            if let Some(f) = self.sample_to_frame(s)? {
                return Ok(Some(f));
            }
        }
    }

    fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let c = &self.counters;
        let mut m = serde_json::Map::new();
        m.insert("topic".into(), self.cfg.topic.clone().into());
        m.insert("transport".into(), self.cfg.transport.as_str().into());
        if let Some(t) = self.msg_type {
            m.insert("msg_type".into(), t.ros_name().into());
        }
        for (k, v) in [
            ("received", &c.received),
            ("dropped", &c.dropped),
            ("foreign", &c.foreign),
            ("unstamped", &c.unstamped),
            ("no_attachment", &c.no_attachment),
        ] {
            m.insert(k.into(), v.load(Ordering::Relaxed).into());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
        parse("front", toml::from_str(s).unwrap())
    }

    #[test]
    fn keys_are_checked_and_errors_name_them() {
        let c = parse_str("topic = \"camera/image_raw\"").unwrap();
        assert!(format!("{c:?}").contains("topic: \"/camera/image_raw\""), "{c:?}");
        for (keys, needle) in [
            ("topic = \"/\"", "`sources.front.topic`"),
            ("topic = \"/a b\"", "`sources.front.topic`"),
            ("topic = \"/9lives\"", "`sources.front.topic`"),
            (
                "topic = \"/a\"\nmsg_type = \"std_msgs/msg/String\"",
                "`sources.front.msg_type`",
            ),
            (
                "topic = \"/a\"\nmsg_type = \"sensor_msgs/msg/Imu\"\nsensor = \"camera\"",
                "`sources.front.sensor`",
            ),
            ("topic = \"/a\"\nsensor = \"imu\"\nrate = 16000", "`sources.front.rate`"),
            (
                "topic = \"/a\"\nsensor = \"microphone\"\nsample_format = \"S24\"",
                "`sources.front.sample_format`",
            ),
            (
                "topic = \"/a\"\nsensor = \"microphone\"\nchannels = 0",
                "`sources.front.channels`",
            ),
            ("topic = \"/a\"\nrate_hz = 0", "`sources.front.rate_hz`"),
            ("topic = \"/a\"\ntransport = \"dds\"", "sources.front"),
            ("topic = \"/a\"\ncolour = 1", "unknown field `colour`"),
            ("sensor = \"camera\"", "missing field `topic`"),
        ] {
            let e = parse_str(keys).unwrap_err().to_string();
            assert!(e.contains(needle), "{keys}: {e}");
        }
    }

    #[test]
    fn streams_are_known_at_build_when_the_keys_say() {
        let ctx = SourceContext {
            id: "x".into(),
            epoch_ns: 0,
            image_limits: ImageLimits::default(),
            stop: StopFlag::default(),
            ros2: Slot::default(),
        };
        let streams = |keys: &str| {
            let s = parse_str(keys).unwrap().build(&ctx).unwrap();
            s.info()
                .streams
                .iter()
                .map(|s| s.modality.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(streams("topic = \"/imu\"\nmsg_type = \"sensor_msgs/msg/Imu\""), ["imu"]);
        assert_eq!(
            streams("topic = \"/c\"\nmsg_type = \"sensor_msgs/msg/CompressedImage\""),
            ["vision"]
        );
        assert_eq!(streams("topic = \"/t\"\nsensor = \"thermal\""), ["thermal"]);
        // An Image topic: from its first message, when the daemon prepares the source.
        assert!(streams("topic = \"/c\"\nmsg_type = \"sensor_msgs/msg/Image\"").is_empty());
        // Without the daemon's bus, opening says why.
        let mut s = parse_str("topic = \"/imu\"\nsensor = \"imu\"")
            .unwrap()
            .build(&ctx)
            .unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("/imu") && e.contains("bus is not open"), "{e}");
    }
}
