//! Sources: drivers that produce timestamped sensor frames.
//!
//! A source is configured as `[sources.<id>]`, where the id is the user's name for it
//! (`front`, `mic`, `rs0`) and `type` picks the driver. Each driver module owns its
//! typed keys ([`DriverConfig`]); adding a driver touches its own module plus one line
//! in [`DRIVERS`]. A [`Source`] is a blocking, pull-style driver (`open` →
//! `next_frame`…) that may produce several streams (a RealSense: vision, depth, IMU),
//! at most one per modality, all stamped on one [`Clock`].
//!
//! The [`runner`] gives each source its own OS thread, so a slow or stuck device never
//! blocks another, and lets the error type decide the policy: a bad frame is skipped,
//! a failed read or open is retried after a back-off (doubling up to 30 s), and a
//! driver panic is caught, counted and treated like a failed read.
//! Real drivers (V4L2, ALSA, RealSense, Y16 thermal, IIO IMU) implement the same trait.

#[cfg(feature = "alsa")]
pub mod alsa;
pub mod digit_world;
pub mod file;
#[cfg(feature = "iio")]
pub mod iio;
pub mod mcap;
pub mod pixfmt;
#[cfg(feature = "realsense")]
pub mod realsense;
pub mod realsense_convert;
pub mod ros2;
pub mod runner;
pub mod sample_clock;
pub mod synthetic;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use crate::clock::Nanos;
use crate::clock::{Clock, ReplayClock};
use crate::edge::WhenFull;
use crate::modality::Modality;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Highest audio sample rate a window accepts (drivers refuse to ask for more).
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// Most audio channels a window accepts.
pub const MAX_CHANNELS: u16 = 64;

/// A depth camera's stereo geometry as the device itself reports it (a RealSense's
/// baseline and depth focal length): depth → disparity uses it for that source's
/// windows instead of the calibration file's `[depth]` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthGeometry {
    pub baseline_m: f32,
    pub focal_px: f32,
}

/// Device-reported depth geometry by source id: written by source runners after an
/// open, read by the depth preprocessor.
#[derive(Debug, Clone, Default)]
pub struct DeviceGeometry(Arc<std::sync::RwLock<BTreeMap<String, DepthGeometry>>>);

impl DeviceGeometry {
    pub fn set(&self, source: &str, g: DepthGeometry) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        m.insert(source.to_string(), g);
    }
    pub fn get(&self, source: &str) -> Option<DepthGeometry> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(source).copied()
    }
}

/// One IMU reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImuSample {
    /// Accelerometer, m/s², xyz.
    pub accel: [f32; 3],
    /// Gyroscope, rad/s, xyz.
    pub gyro: [f32; 3],
}

/// The payload of one frame, in the sensor's native format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FrameData {
    /// Packed RGB, 8 bit, row-major, `width*height*3` bytes.
    Rgb8 {
        width: u32,
        height: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A JPEG-compressed RGB image, kept as captured (UVC MJPEG): decoded by the
    /// stream's windower thread, off the capture thread, and recorded as is.
    /// `width`/`height` are what the device said it sends.
    Jpeg {
        width: u32,
        height: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Depth in millimetres, 0 = invalid, row-major.
    Depth16 { width: u32, height: u32, data: Vec<u16> },
    /// Raw Y16 thermal counts, row-major.
    Thermal16 { width: u32, height: u32, data: Vec<u16> },
    /// A chunk of audio, interleaved, normalised to [-1, 1]; `t_ns` is the first sample.
    Audio {
        sample_rate: u32,
        channels: u16,
        samples: Vec<f32>,
    },
    /// One IMU reading.
    Imu(ImuSample),
}

/// A timestamped frame (serialisable, for recorders on the frame tap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub t_ns: Nanos,
    pub data: FrameData,
}

impl FrameData {
    /// The stream (modality) this payload belongs to.
    pub fn modality(&self) -> Modality {
        match self {
            FrameData::Rgb8 { .. } | FrameData::Jpeg { .. } => Modality::Vision,
            FrameData::Depth16 { .. } => Modality::Depth,
            FrameData::Thermal16 { .. } => Modality::Thermal,
            FrameData::Audio { .. } => Modality::Audio,
            FrameData::Imu(_) => Modality::Imu,
        }
    }

    /// Image size, for image-like payloads.
    pub fn image_size(&self) -> Option<(u32, u32)> {
        match self {
            FrameData::Rgb8 { width, height, .. }
            | FrameData::Jpeg { width, height, .. }
            | FrameData::Depth16 { width, height, .. }
            | FrameData::Thermal16 { width, height, .. } => Some((*width, *height)),
            _ => None,
        }
    }

    /// Bytes the payload holds in memory (what a window's byte budget counts).
    pub fn byte_len(&self) -> u64 {
        let n = match self {
            FrameData::Rgb8 { data, .. } | FrameData::Jpeg { data, .. } => data.len(),
            FrameData::Depth16 { data, .. } | FrameData::Thermal16 { data, .. } => data.len() * 2,
            FrameData::Audio { samples, .. } => samples.len() * 4,
            FrameData::Imu(_) => std::mem::size_of::<ImuSample>(),
        };
        n as u64
    }

    /// An uncompressed image must hold exactly width × height pixels.
    pub fn check_size(&self) -> Result<(), String> {
        let (w, h, have, per) = match self {
            FrameData::Rgb8 { width, height, data } => (*width, *height, data.len(), 3),
            FrameData::Depth16 { width, height, data } | FrameData::Thermal16 { width, height, data } => {
                (*width, *height, data.len(), 1)
            }
            _ => return Ok(()),
        };
        let want = w as usize * h as usize * per;
        if w == 0 || h == 0 || have != want {
            return Err(format!(
                "{w}x{h} {} frame holds {have} values, expected {want}",
                self.modality()
            ));
        }
        Ok(())
    }
}

/// A raw frame as seen on the frame tap: which source it came from.
#[derive(Debug, Clone)]
pub struct TappedFrame {
    pub source: Arc<str>,
    pub frame: Arc<Frame>,
}

/// One stream of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub modality: Modality,
    /// Nominal frame rate (frames/s; audio: chunks/s). Used to judge coverage.
    pub nominal_rate_hz: f64,
}

/// What a source tells about itself before it runs.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Human description for logs, e.g. "synthetic camera 640x480 @ 30 Hz".
    pub description: String,
    /// The streams it produces, at most one per modality.
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The device or file could not be opened (unplugged, missing, permission…).
    #[error("{what}: cannot open: {reason}")]
    Open { what: String, reason: String },
    /// A read failed; the runner reopens the source after a back-off.
    #[error("{what}: read failed: {reason}")]
    Read { what: String, reason: String },
    /// Data arrived that does not match the expected format; the frame is skipped.
    #[error("{what}: bad data: {reason}")]
    BadData { what: String, reason: String },
}

/// A sensor driver.
pub trait Source: Send {
    fn info(&self) -> SourceInfo;
    /// The clock its frames are stamped on.
    fn clock(&self) -> Arc<dyn Clock>;
    /// Open (or reopen after an error) the device or file.
    fn open(&mut self) -> Result<(), SourceError>;
    /// Block until the next frame. `Ok(None)`: the stream has ended for good
    /// (end of a recording, a synthetic source's duration).
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// Driver-specific status for health (`driver`): what the device granted
    /// (format, size, rate), counters such as `xruns`. Polled by the runner after each
    /// open and about once a second; keep it cheap.
    fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// Called once, after the daemon's bus is open and before the graph is wired from
    /// [`Source::info`]: a source whose streams depend on what the robot sends (a
    /// `ros2` source with no `sensor`) finds out here. May block for a few seconds; an
    /// error stops the start and names what to configure.
    fn prepare(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// The depth geometry the device reported at its last open, if it reports one
    /// (read by the runner after each open).
    fn depth_geometry(&self) -> Option<DepthGeometry> {
        None
    }
}

/// Shared stop flag for source threads.
#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Sleep up to `d`, waking early when stopped. Returns false if stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let step = Duration::from_millis(20);
        let mut left = d;
        while !left.is_zero() {
            if self.is_stopped() {
                return false;
            }
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        !self.is_stopped()
    }
}

/// Paces frames against the wall clock through a replay clock: recording time `t` is
/// released no earlier than the clock says it is due.
pub(crate) struct Pacer {
    clock: Arc<ReplayClock>,
    stop: StopFlag,
}

impl Pacer {
    /// `t0` is due now (or, when `catch_up`, `t0` lies on the realtime axis and frames
    /// before the present are released at once).
    pub(crate) fn new(clock: Arc<ReplayClock>, t0: Nanos, catch_up: bool, stop: StopFlag) -> Self {
        let mut at = Instant::now();
        if catch_up {
            let behind = Duration::from_nanos((crate::clock::realtime_ns() - t0).max(0) as u64);
            at = at.checked_sub(behind).unwrap_or(at);
        }
        clock.pace(t0, at);
        Pacer { clock, stop }
    }
    /// Wait until `t_ns` is due. Returns false when stopped.
    pub(crate) fn wait_until(&self, t_ns: Nanos) -> bool {
        let now = Instant::now();
        match self.clock.due(t_ns) {
            Some(due) if due > now => self.stop.sleep(due - now),
            _ => !self.stop.is_stopped(),
        }
    }
}

/// Bounds on image frames (`[limits]`), checked by decoders before they allocate and
/// by the windower for every frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageLimits {
    pub max_side: u32,
    pub max_aspect_ratio: f64,
    /// Most bytes one decoded image may take (any pixel format, also while decoding):
    /// an RGB image of `max_side`², or less when `limits.max_window_bytes` is smaller.
    pub max_decoded_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits::new(8192, 20.0)
    }
}

impl ImageLimits {
    /// Limits of `max_side` and `max_aspect_ratio` whose decoded-size bound is an RGB
    /// image of `max_side`².
    pub fn new(max_side: u32, max_aspect_ratio: f64) -> Self {
        ImageLimits {
            max_side,
            max_aspect_ratio,
            max_decoded_bytes: max_side as u64 * max_side as u64 * 3,
        }
    }

    /// Whether a `w`×`h` image may be processed; the error says which limit it breaks.
    pub fn check(&self, w: u32, h: u32) -> Result<(), String> {
        if w == 0 || h == 0 {
            return Err(format!("{w}×{h} image has no pixels"));
        }
        if w > self.max_side || h > self.max_side {
            return Err(format!(
                "{w}×{h} image is larger than `limits.max_image_side` = {}",
                self.max_side
            ));
        }
        let ratio = w.max(h) as f64 / w.min(h) as f64;
        if ratio > self.max_aspect_ratio {
            return Err(format!(
                "{w}×{h} image has aspect ratio {ratio:.0}, above `limits.max_aspect_ratio` = {}",
                self.max_aspect_ratio
            ));
        }
        let rgb = w as u64 * h as u64 * 3;
        if rgb > self.max_decoded_bytes {
            return Err(format!(
                "{w}×{h} image decodes to {rgb} bytes, above the {} a frame may take (`limits.max_window_bytes`)",
                self.max_decoded_bytes
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ configuration

/// A `[sources.<id>]` table that is wrong; the message names the key path.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceConfigError(pub String);

/// What a driver needs to build its source.
#[derive(Clone)]
pub struct SourceContext {
    pub id: String,
    /// A grid point at or before now: where live sources start their timelines.
    pub epoch_ns: Nanos,
    pub image_limits: ImageLimits,
    pub stop: StopFlag,
    /// The daemon's ROS 2 node, once its bus is open (`ros2` sources).
    pub ros2: crate::ros2::node::Slot,
}

/// A driver's own typed configuration.
pub trait DriverConfig: Send + Sync + std::fmt::Debug {
    /// Build the source (it is opened by the runner).
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError>;
    /// Frames buffered between driver and windower unless `queue` says otherwise.
    fn default_queue(&self) -> usize {
        64
    }
    /// The source → windower policy unless `when_full` says otherwise: a live sensor
    /// cannot wait (`drop_newest`); a replay can (`block`, and so loses nothing).
    fn default_when_full(&self) -> WhenFull {
        WhenFull::DropNewest
    }
}

/// Default source → windower queue length for a sensor's frame rate.
pub fn default_queue_for(sensor: crate::modality::Sensor) -> usize {
    use crate::modality::Sensor;
    match sensor {
        Sensor::Microphone => 256,
        Sensor::Imu => 1024,
        _ => 64,
    }
}

/// Default source → windower policy: a replay can wait, a live sensor cannot.
pub fn default_when_full_for(replay: bool) -> WhenFull {
    if replay {
        WhenFull::Block
    } else {
        WhenFull::DropNewest
    }
}

/// Parse a driver's keys (the common keys and `type` removed).
pub type ParseDriver = fn(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError>;

/// The driver registry: `type` value → parser of that driver's keys.
pub const DRIVERS: &[(&str, ParseDriver)] = &[
    ("synthetic", synthetic::parse),
    ("file", file::parse),
    ("mcap", mcap::parse),
    ("ros2", ros2::parse),
    #[cfg(feature = "iio")]
    ("iio", iio::parse),
    #[cfg(feature = "alsa")]
    ("alsa", alsa::parse),
    #[cfg(feature = "v4l2")]
    ("v4l2", v4l2::parse),
    #[cfg(feature = "realsense")]
    ("realsense", realsense::parse),
];

/// Drivers behind cargo features: `type` value → feature.
const FEATURE_DRIVERS: &[(&str, &str)] = &[
    ("iio", "iio"),
    ("alsa", "alsa"),
    ("v4l2", "v4l2"),
    ("realsense", "realsense"),
];

/// The drivers feature `robot` enables (every one that builds on Debian).
const ROBOT_DRIVERS: &[&str] = &["iio", "alsa", "v4l2"];

/// The longest source → windower queue, in frames.
pub const MAX_QUEUE: usize = 1 << 20;

/// Keys every source has, whatever its driver.
const COMMON_KEYS: [&str; 3] = ["restart_backoff_s", "queue", "when_full"];

/// One configured source.
#[derive(Debug)]
pub struct SourceConfig {
    pub id: String,
    /// The driver's name (`type`).
    pub kind: String,
    pub restart_backoff_s: f64,
    pub queue: usize,
    pub when_full: WhenFull,
    /// `None` for `type = "off"`.
    pub driver: Option<Box<dyn DriverConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    #[serde(default = "default_backoff")]
    restart_backoff_s: f64,
    queue: Option<usize>,
    when_full: Option<WhenFull>,
}

fn default_backoff() -> f64 {
    1.0
}

/// Deserialize a driver's keys, naming `sources.<id>` in any error.
pub fn parse_keys<T: serde::de::DeserializeOwned>(id: &str, keys: toml::Table) -> Result<T, SourceConfigError> {
    toml::Value::Table(keys)
        .try_into::<T>()
        .map_err(|e| SourceConfigError(format!("`sources.{id}`: {}", e.to_string().trim())))
}

/// A `sources.<id>.<key>` error.
pub fn key_error(id: &str, key: &str, what: impl std::fmt::Display) -> SourceConfigError {
    SourceConfigError(format!("`sources.{id}.{key}`: {what}"))
}

/// Parse one `[sources.<id>]` table.
pub fn parse(id: &str, table: &toml::Table) -> Result<SourceConfig, SourceConfigError> {
    crate::ident::validate_chunk(id)
        .map_err(|e| SourceConfigError(format!("`sources.{}`: source id {e}", crate::ident::clip(id, 80))))?;
    let mut keys = table.clone();
    let kind = match keys.remove("type") {
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            return Err(key_error(id, "type", format!("expected a driver name, got {other}")));
        }
        None => return Err(key_error(id, "type", "missing: expected one of off, synthetic, file")),
    };
    let mut common = toml::Table::new();
    for k in COMMON_KEYS {
        if let Some(v) = keys.remove(k) {
            common.insert(k.to_string(), v);
        }
    }
    let c: CommonKeys = parse_keys(id, common)?;
    if let Err(e) = crate::config::RESTART_BACKOFF.check(c.restart_backoff_s) {
        return Err(key_error(id, "restart_backoff_s", e));
    }
    if let Some(q) = c.queue.filter(|q| !(1..=MAX_QUEUE).contains(q)) {
        return Err(key_error(
            id,
            "queue",
            format!("expected 1..={MAX_QUEUE} frames, got {q}"),
        ));
    }
    let driver = if kind == "off" {
        None
    } else {
        let Some((_, parse)) = DRIVERS.iter().find(|(name, _)| *name == kind) else {
            if let Some((_, feature)) = FEATURE_DRIVERS.iter().find(|(name, _)| *name == kind) {
                return Err(key_error(
                    id,
                    "type",
                    format!(
                        "driver `{kind}` is not in this build (rebuild with `--features {feature}`{})",
                        if ROBOT_DRIVERS.contains(&kind.as_str()) {
                            " or `robot`"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            let known: Vec<&str> = std::iter::once("off").chain(DRIVERS.iter().map(|d| d.0)).collect();
            return Err(key_error(
                id,
                "type",
                format!(
                    "unknown driver `{}` (expected one of {})",
                    crate::ident::clip(&kind, 40),
                    known.join(", ")
                ),
            ));
        };
        Some(parse(id, keys)?)
    };
    let queue = c
        .queue
        .unwrap_or_else(|| driver.as_ref().map_or(64, |d| d.default_queue()));
    let when_full = c
        .when_full
        .unwrap_or_else(|| driver.as_ref().map_or(WhenFull::DropNewest, |d| d.default_when_full()));
    Ok(SourceConfig {
        id: id.to_string(),
        kind,
        restart_backoff_s: c.restart_backoff_s,
        queue,
        when_full,
        driver,
    })
}

/// Parse every `[sources.<id>]` table (graph building): the first error.
pub fn parse_all(tables: &BTreeMap<String, toml::Table>) -> Result<Vec<SourceConfig>, SourceConfigError> {
    parse_all_errors(tables).map_err(|mut e| e.remove(0))
}

/// Parse every `[sources.<id>]` table (config validation): every error, in id order.
pub fn parse_all_errors(tables: &BTreeMap<String, toml::Table>) -> Result<Vec<SourceConfig>, Vec<SourceConfigError>> {
    let (ok, errors): (Vec<_>, Vec<_>) = tables.iter().map(|(id, t)| parse(id, t)).partition(Result::is_ok);
    if errors.is_empty() {
        Ok(ok.into_iter().filter_map(Result::ok).collect())
    } else {
        Err(errors.into_iter().filter_map(Result::err).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_serialisable_for_recorders() {
        let frames = [
            Frame {
                t_ns: 5,
                data: FrameData::Rgb8 {
                    width: 1,
                    height: 1,
                    data: vec![1, 2, 3],
                },
            },
            Frame {
                t_ns: 6,
                data: FrameData::Audio {
                    sample_rate: 16000,
                    channels: 1,
                    samples: vec![0.5, -0.25],
                },
            },
            Frame {
                t_ns: 7,
                data: FrameData::Imu(ImuSample {
                    accel: [0.0, 0.0, 9.81],
                    gyro: [0.1, 0.2, 0.3],
                }),
            },
        ];
        for f in frames {
            let mut cbor = Vec::new();
            ciborium::into_writer(&f, &mut cbor).unwrap();
            let back: Frame = ciborium::from_reader(&cbor[..]).unwrap();
            assert_eq!(back, f);
        }
    }

    #[test]
    fn feature_drivers_say_when_they_are_not_built() {
        let t: toml::Table = toml::from_str("type = \"iio\"\ndevice = \"iio:device3\"").unwrap();
        let r = parse("imu0", &t);
        if cfg!(feature = "iio") {
            assert_eq!(r.unwrap().kind, "iio");
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("not in this build") && e.contains("--features iio"), "{e}");
        }
        if !cfg!(feature = "realsense") {
            let t: toml::Table = toml::from_str("type = \"realsense\"").unwrap();
            let e = parse("rs0", &t).unwrap_err().to_string();
            assert!(e.contains("--features realsense") && !e.contains("robot"), "{e}");
        }
    }

    #[test]
    fn source_tables_name_the_key_path() {
        let t = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
        let c = parse("front", &t("type = \"synthetic\"\nsensor = \"camera\"")).unwrap();
        assert_eq!((c.queue, c.when_full), (64, WhenFull::DropNewest));
        let c = parse(
            "rec",
            &t("type = \"file\"\nsensor = \"imu\"\npath = \"x.csv\"\npace = \"fast\""),
        )
        .unwrap();
        assert_eq!(
            (c.queue, c.when_full),
            (1024, WhenFull::Block),
            "replays default to block"
        );
        assert!(parse("off1", &t("type = \"off\"")).unwrap().driver.is_none());
        for (id, table, needle) in [
            ("front", "sensor = \"camera\"", "`sources.front.type`"),
            ("front", "type = \"v4l3\"", "unknown driver `v4l3`"),
            (
                "front",
                "type = \"synthetic\"\nsensor = \"camera\"\nqueue = 0",
                "`sources.front.queue`",
            ),
            (
                "front",
                "type = \"synthetic\"\nsensor = \"camera\"\nwhen_full = \"later\"",
                "sources.front",
            ),
            (
                "rec",
                "type = \"file\"\nsensor = \"camera\"\npath = \"\"",
                "`sources.rec.path`",
            ),
            ("rec", "type = \"file\"\nsensor = \"camera\"", "missing field `path`"),
            ("a/b", "type = \"off\"", "source id"),
        ] {
            let e = parse(id, &t(table)).unwrap_err().to_string();
            assert!(e.contains(needle), "{table}: {e}");
        }
    }
}
