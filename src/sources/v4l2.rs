//! `type = "v4l2"`: a V4L2 capture device (a UVC camera, or a Y16 thermal core such as a
//! PureThermal/Lepton board), feature `v4l2`.
//!
//! ```toml
//! [sources.front]
//! type = "v4l2"
//! device = "/dev/video0"
//! format = "mjpeg"        # mjpeg | yuyv | rgb3 | grey | y16
//! width = 640
//! height = 480
//! fps = 30
//! sensor = "camera"       # camera | thermal
//! buffers = 4
//!
//! [sources.thermal]
//! type = "v4l2"
//! device = "/dev/video2"
//! sensor = "thermal"
//! format = "y16"
//! width = 160
//! height = 120
//! fps = 9
//! ```
//!
//! Keys:
//! - `device` (default `/dev/video0`): the device node (prefer a stable
//!   `/dev/v4l/by-id/...` link on a robot).
//! - `sensor` (default `camera`): `camera` produces the vision stream, `thermal` the
//!   thermal stream (raw counts, `FrameData::Thermal16`; radiometric scaling is the
//!   calibration's job).
//! - `format` (default `mjpeg` for a camera, `y16` for a thermal core): the pixel
//!   format asked for, as FourCC `MJPG`, `YUYV`, `RGB3`, `GREY`, `Y16 `. A thermal
//!   stream takes `y16` or `grey`; a camera any but `y16`.
//! - `width`, `height` (default 640×480; thermal 160×120) and `fps` (default 30;
//!   thermal 9; fractional rates such as 8.7 are fine): asked with `VIDIOC_S_FMT` and
//!   `VIDIOC_S_PARM`. The driver reads back what was granted, logs it, puts it in the
//!   description and in health (`sources.<id>.driver`: `fourcc`, `width`, `height`,
//!   `fps`, `stride`); it refuses to run (an open error) when the device grants
//!   another pixel format than the one asked, and uses the granted size otherwise.
//! - `buffers` (default 4, 2..=32): mmap buffers queued to the driver.
//!
//! MJPEG frames are not decoded here: they leave as `FrameData::Jpeg` (the stream's
//! windower thread decodes them, and recorders keep them compressed). Other formats
//! are converted by [`super::pixfmt`]; padded rows (`bytesperline` > the packed width)
//! are repacked first. Buffer timestamps are `CLOCK_MONOTONIC` (the UVC driver stamps
//! the start of exposure or the end of transfer) and are mapped onto the daemon's
//! realtime axis; a driver that leaves them unset is stamped at dequeue time. A buffer
//! the driver flags as corrupt, an empty or truncated buffer, or an MJPEG buffer
//! without a JPEG start marker is `SourceError::BadData` (skipped, counted); a device
//! that stops delivering for a while, or is unplugged, is `SourceError::Read` (the
//! runner reopens it).
//!
//! Counters in health: `corrupt` (buffers flagged or malformed) and `sequence_gaps`
//! (frames the driver dropped, from the buffer sequence numbers).

use super::pixfmt::{self, PixelFormat, Target};
use super::{
    key_error, parse_keys, DriverConfig, Frame, FrameData, ImageLimits, Nanos, Source, SourceConfigError,
    SourceContext, SourceError, SourceInfo, StreamInfo,
};
use crate::clock::{Clock, MonotonicClock};
use crate::modality::Modality;
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// What a V4L2 source is: a camera (vision) or a thermal core (thermal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V4l2Sensor {
    Camera,
    Thermal,
}

/// The keys as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    #[serde(default = "default_device")]
    device: String,
    format: Option<PixelFormat>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    #[serde(default = "default_sensor")]
    sensor: V4l2Sensor,
    #[serde(default = "default_buffers")]
    buffers: u32,
}

fn default_device() -> String {
    "/dev/video0".into()
}
fn default_sensor() -> V4l2Sensor {
    V4l2Sensor::Camera
}
fn default_buffers() -> u32 {
    4
}

/// A V4L2 source's settings, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    pub device: String,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub sensor: V4l2Sensor,
    pub buffers: u32,
}

/// Parse `[sources.<id>]` keys of `type = "v4l2"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    Ok(Box::new(parse_config(id, keys)?))
}

/// The typed, validated keys.
pub fn parse_config(id: &str, keys: toml::Table) -> Result<V4l2Config, SourceConfigError> {
    let k: Keys = parse_keys(id, keys)?;
    let thermal = k.sensor == V4l2Sensor::Thermal;
    let c = V4l2Config {
        device: k.device,
        format: k
            .format
            .unwrap_or(if thermal { PixelFormat::Y16 } else { PixelFormat::Mjpeg }),
        width: k.width.unwrap_or(if thermal { 160 } else { 640 }),
        height: k.height.unwrap_or(if thermal { 120 } else { 480 }),
        fps: k.fps.unwrap_or(if thermal { 9.0 } else { 30.0 }),
        sensor: k.sensor,
        buffers: k.buffers,
    };
    if c.device.is_empty() {
        return Err(key_error(id, "device", "expected a device node such as `/dev/video0`"));
    }
    match (c.sensor, c.format) {
        (V4l2Sensor::Thermal, PixelFormat::Y16 | PixelFormat::Grey) => {}
        (V4l2Sensor::Thermal, f) => {
            return Err(key_error(
                id,
                "format",
                format!(
                    "a thermal core sends `y16` (raw counts) or `grey`, not `{}`",
                    format_name(f)
                ),
            ))
        }
        (V4l2Sensor::Camera, PixelFormat::Y16) => {
            return Err(key_error(
                id,
                "format",
                "`y16` is raw sensor counts: use it with `sensor = \"thermal\"`",
            ))
        }
        (V4l2Sensor::Camera, _) => {}
    }
    if c.width == 0 || c.height == 0 || c.width > 8192 || c.height > 8192 {
        return Err(key_error(id, "width", "expected width and height in 1..=8192"));
    }
    if c.format == PixelFormat::Yuyv && c.width % 2 != 0 {
        return Err(key_error(
            id,
            "width",
            format!(
                "YUYV packs two pixels per 4 bytes: the width must be even, got {}",
                c.width
            ),
        ));
    }
    if !(c.fps.is_finite() && c.fps > 0.0 && c.fps <= 1000.0) {
        return Err(key_error(id, "fps", format!("expected 0 < fps <= 1000, got {}", c.fps)));
    }
    if !(2..=32).contains(&c.buffers) {
        return Err(key_error(id, "buffers", format!("expected 2..=32, got {}", c.buffers)));
    }
    Ok(c)
}

impl DriverConfig for V4l2Config {
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(V4l2 {
            cfg: self.clone(),
            limits: ctx.image_limits,
            clock: MonotonicClock::new(),
            open: None,
            corrupt: 0,
            sequence_gaps: 0,
            last_sequence: None,
        }))
    }
}

// ---------------------------------------------------------------- plain logic

/// The key's name of a format.
pub fn format_name(f: PixelFormat) -> &'static str {
    match f {
        PixelFormat::Mjpeg => "mjpeg",
        PixelFormat::Yuyv => "yuyv",
        PixelFormat::Rgb3 => "rgb3",
        PixelFormat::Grey => "grey",
        PixelFormat::Y16 => "y16",
    }
}

/// The V4L2 FourCC of a format.
pub fn fourcc(f: PixelFormat) -> [u8; 4] {
    match f {
        PixelFormat::Mjpeg => *b"MJPG",
        PixelFormat::Yuyv => *b"YUYV",
        PixelFormat::Rgb3 => *b"RGB3",
        PixelFormat::Grey => *b"GREY",
        PixelFormat::Y16 => *b"Y16 ",
    }
}

/// The format of a FourCC, if it is one the driver handles.
pub fn format_of(code: [u8; 4]) -> Option<PixelFormat> {
    [
        PixelFormat::Mjpeg,
        PixelFormat::Yuyv,
        PixelFormat::Rgb3,
        PixelFormat::Grey,
        PixelFormat::Y16,
    ]
    .into_iter()
    .find(|f| fourcc(*f) == code)
}

/// A FourCC as text (`MJPG`, `Y16 `; other bytes as `\xNN`).
pub fn fourcc_text(code: [u8; 4]) -> String {
    code.iter()
        .map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                (*b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// Bytes per pixel of an uncompressed format (MJPEG: none).
pub fn bytes_per_pixel(f: PixelFormat) -> Option<usize> {
    match f {
        PixelFormat::Mjpeg => None,
        PixelFormat::Grey => Some(1),
        PixelFormat::Yuyv | PixelFormat::Y16 => Some(2),
        PixelFormat::Rgb3 => Some(3),
    }
}

/// A frame interval (seconds per frame, as V4L2 takes it) for `fps`, reduced.
pub fn interval_for(fps: f64) -> (u32, u32) {
    if fps.fract() == 0.0 && fps >= 1.0 {
        return (1, fps as u32);
    }
    // Millihertz precision covers rates such as 8.7 or 29.97.
    let (mut n, mut d) = (1000u32, (fps * 1000.0).round().max(1.0) as u32);
    let g = gcd(n, d);
    n /= g;
    d /= g;
    (n, d)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// What the device granted (`VIDIOC_G_FMT`, `VIDIOC_G_PARM`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Granted {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Bytes per line (0: packed).
    pub stride: u32,
    /// Frame interval numerator/denominator (seconds per frame); 0/0 when unknown.
    pub interval: (u32, u32),
}

impl Granted {
    /// The granted frame rate, or `None` when the device does not say.
    pub fn fps(&self) -> Option<f64> {
        let (n, d) = self.interval;
        (n > 0 && d > 0).then(|| d as f64 / n as f64)
    }
}

/// Check what the device granted against what was asked: a different pixel format is
/// refused (the message says what to ask instead); anything else is accepted and the
/// returned notes say what differs.
pub fn check_granted(asked: &V4l2Config, g: &Granted) -> Result<Vec<String>, String> {
    let want = fourcc(asked.format);
    if g.fourcc != want {
        let hint = match format_of(g.fourcc) {
            Some(f) => format!(
                " (set `format = \"{}\"`, or check `v4l2-ctl --list-formats-ext`)",
                format_name(f)
            ),
            None => " (list what it supports with `v4l2-ctl --list-formats-ext`)".into(),
        };
        return Err(format!(
            "asked for pixel format {}, the device granted {}{hint}",
            fourcc_text(want),
            fourcc_text(g.fourcc)
        ));
    }
    if g.width == 0 || g.height == 0 {
        return Err(format!(
            "the device granted an empty frame size {}×{}",
            g.width, g.height
        ));
    }
    if let Some(bpp) = bytes_per_pixel(asked.format) {
        if g.stride != 0 && (g.stride as usize) < g.width as usize * bpp {
            return Err(format!(
                "the device granted {} bytes per line, less than {}×{bpp}",
                g.stride, g.width
            ));
        }
    }
    let mut notes = Vec::new();
    if (g.width, g.height) != (asked.width, asked.height) {
        notes.push(format!(
            "asked {}×{}, granted {}×{}",
            asked.width, asked.height, g.width, g.height
        ));
    }
    match g.fps() {
        Some(f) if (f - asked.fps).abs() > 0.01 * asked.fps => {
            notes.push(format!("asked {} fps, granted {f:.3}", asked.fps))
        }
        None => notes.push(format!(
            "the device does not report its frame rate (asked {})",
            asked.fps
        )),
        _ => {}
    }
    Ok(notes)
}

/// `V4L2_BUF_FLAG_TIMESTAMP_MASK` and `_MONOTONIC`.
const TS_MASK: u32 = 0x0000_e000;
const TS_MONOTONIC: u32 = 0x0000_2000;
/// `V4L2_BUF_FLAG_ERROR`: the buffer finished streaming with an error (corrupt data).
pub const FLAG_ERROR: u32 = 0x0000_0040;

/// A buffer's time on the daemon's axis: its `CLOCK_MONOTONIC` stamp mapped through
/// `mono`, or `now` (realtime, at dequeue) when the driver sets no usable stamp or one
/// more than 10 s away from now (a driver bug; a frame cannot be that old).
pub fn frame_time(flags: u32, sec: i64, usec: i64, mono: &MonotonicClock, now: Nanos) -> Nanos {
    if flags & TS_MASK != TS_MONOTONIC || (sec == 0 && usec == 0) {
        return now;
    }
    let t = mono.map(
        sec.saturating_mul(1_000_000_000)
            .saturating_add(usec.saturating_mul(1_000)),
    );
    if (t - now).abs() > 10_000_000_000 {
        now
    } else {
        t
    }
}

/// Rows of `row_bytes` each, `stride` apart, packed together (borrowed when already packed).
pub fn unpad_rows(buf: &[u8], row_bytes: usize, stride: usize, rows: usize) -> Result<Cow<'_, [u8]>, SourceError> {
    let bad = |reason: String| SourceError::BadData {
        what: "v4l2".into(),
        reason,
    };
    if stride <= row_bytes {
        return Ok(Cow::Borrowed(buf));
    }
    // The last row need not be followed by padding.
    let need = stride * (rows.max(1) - 1) + row_bytes;
    if buf.len() < need {
        return Err(bad(format!(
            "{rows} rows of {row_bytes} bytes, {stride} apart, need {need} bytes, the buffer has {}",
            buf.len()
        )));
    }
    let mut out = Vec::with_capacity(row_bytes * rows);
    for r in 0..rows {
        out.extend_from_slice(&buf[r * stride..r * stride + row_bytes]);
    }
    Ok(Cow::Owned(out))
}

/// One dequeued buffer (`bytesused` of it) → frame data.
pub fn frame_data(
    format: PixelFormat,
    sensor: V4l2Sensor,
    g: &Granted,
    buf: &[u8],
    bytesused: u32,
    limits: ImageLimits,
) -> Result<FrameData, SourceError> {
    let bad = |reason: String| SourceError::BadData {
        what: format!("v4l2 {}", fourcc_text(g.fourcc)),
        reason,
    };
    let used = bytesused as usize;
    if used == 0 {
        return Err(bad("empty buffer".into()));
    }
    if used > buf.len() {
        return Err(bad(format!("bytesused {used} exceeds the {}-byte buffer", buf.len())));
    }
    let data = &buf[..used];
    match format {
        PixelFormat::Mjpeg => {
            if !data.starts_with(&[0xFF, 0xD8]) {
                return Err(bad("an MJPEG buffer without a JPEG start-of-image marker".into()));
            }
            limits
                .check(g.width, g.height)
                .map_err(|e| bad(format!("the granted size: {e}")))?;
            Ok(FrameData::Jpeg {
                width: g.width,
                height: g.height,
                data: data.to_vec(),
            })
        }
        f => {
            let bpp = bytes_per_pixel(f).unwrap_or(1);
            let packed = unpad_rows(data, g.width as usize * bpp, g.stride as usize, g.height as usize)?;
            let target = match sensor {
                V4l2Sensor::Camera => Target::Camera,
                V4l2Sensor::Thermal => Target::Thermal,
            };
            pixfmt::convert(f, target, g.width, g.height, &packed, limits)
        }
    }
}

/// How long to wait for one frame before calling the device stuck.
pub fn frame_timeout(fps: f64) -> Duration {
    Duration::from_secs_f64((10.0 / fps.max(0.001)).clamp(2.0, 30.0))
}

// ---------------------------------------------------------------- the device loop

struct Opened {
    // Field order matters: the stream (its mmaps) goes before the device.
    stream: v4l::io::mmap::Stream<'static>,
    _dev: v4l::Device,
    granted: Granted,
}

/// A V4L2 capture source.
pub struct V4l2 {
    cfg: V4l2Config,
    limits: ImageLimits,
    clock: MonotonicClock,
    open: Option<Opened>,
    corrupt: u64,
    sequence_gaps: u64,
    last_sequence: Option<u32>,
}

impl V4l2 {
    fn open_err(&self, reason: impl std::fmt::Display) -> SourceError {
        SourceError::Open {
            what: self.cfg.device.clone(),
            reason: reason.to_string(),
        }
    }

    /// Stop streaming and unmap; `v4l`'s drop panics when `STREAMOFF` fails on a
    /// device that is not gone, so it is contained here.
    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(o)));
        }
    }

    fn modality(&self) -> Modality {
        match self.cfg.sensor {
            V4l2Sensor::Camera => Modality::Vision,
            V4l2Sensor::Thermal => Modality::Thermal,
        }
    }
}

impl Drop for V4l2 {
    fn drop(&mut self) {
        self.close();
    }
}

impl Source for V4l2 {
    fn info(&self) -> SourceInfo {
        let c = &self.cfg;
        let description = match &self.open {
            Some(o) => {
                let g = &o.granted;
                let fps = g.fps().map_or("? fps".to_string(), |f| format!("{f:.3} fps"));
                format!(
                    "V4L2 {} {} {}×{} @ {fps} ({:?})",
                    c.device,
                    fourcc_text(g.fourcc),
                    g.width,
                    g.height,
                    c.sensor
                )
            }
            None => format!(
                "V4L2 {} (asking {} {}×{} @ {} fps, {:?})",
                c.device,
                fourcc_text(fourcc(c.format)),
                c.width,
                c.height,
                c.fps,
                c.sensor
            ),
        };
        let rate = self.open.as_ref().and_then(|o| o.granted.fps()).unwrap_or(c.fps);
        SourceInfo {
            description,
            streams: vec![StreamInfo {
                modality: self.modality(),
                nominal_rate_hz: rate,
            }],
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock)
    }

    fn open(&mut self) -> Result<(), SourceError> {
        use v4l::video::Capture;
        self.close();
        let c = self.cfg.clone();
        let dev = v4l::Device::with_path(&c.device).map_err(|e| self.open_err(e))?;
        let asked = v4l::Format::new(c.width, c.height, v4l::FourCC::new(&fourcc(c.format)));
        let fmt = dev
            .set_format(&asked)
            .map_err(|e| self.open_err(format!("setting format: {e}")))?;
        let (n, d) = interval_for(c.fps);
        // Not every device takes a frame interval (some thermal cores run at a fixed
        // rate): what it grants is read back either way.
        if let Err(e) = dev.set_params(&v4l::video::capture::Parameters::new(v4l::Fraction::new(n, d))) {
            tracing::warn!(device = %c.device, error = %e, "V4L2 device did not take the frame interval");
        }
        let fmt = dev.format().unwrap_or(fmt);
        let interval = dev
            .params()
            .map(|p| (p.interval.numerator, p.interval.denominator))
            .unwrap_or((0, 0));
        let granted = Granted {
            fourcc: fmt.fourcc.repr,
            width: fmt.width,
            height: fmt.height,
            stride: fmt.stride,
            interval,
        };
        let notes = check_granted(&c, &granted).map_err(|e| self.open_err(e))?;
        let mut stream = v4l::io::mmap::Stream::with_buffers(&dev, v4l::buffer::Type::VideoCapture, c.buffers)
            .map_err(|e| self.open_err(format!("mapping {} buffers: {e}", c.buffers)))?;
        stream.set_timeout(frame_timeout(granted.fps().unwrap_or(c.fps)));
        tracing::info!(
            device = %c.device,
            fourcc = %fourcc_text(granted.fourcc),
            width = granted.width,
            height = granted.height,
            fps = granted.fps().unwrap_or(0.0),
            stride = granted.stride,
            differs = %notes.join("; "),
            "V4L2 capture configured"
        );
        self.last_sequence = None;
        self.open = Some(Opened {
            stream,
            _dev: dev,
            granted,
        });
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        use v4l::io::traits::CaptureStream;
        let (format, sensor, limits) = (self.cfg.format, self.cfg.sensor, self.limits);
        let Some(o) = self.open.as_mut() else {
            return Err(SourceError::Read {
                what: self.cfg.device.clone(),
                reason: "not open".into(),
            });
        };
        let granted = o.granted;
        let (buf, meta) = match o.stream.next() {
            Ok(x) => x,
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::TimedOut {
                    format!(
                        "no frame for {:.1} s",
                        frame_timeout(granted.fps().unwrap_or(self.cfg.fps)).as_secs_f64()
                    )
                } else {
                    e.to_string()
                };
                return Err(SourceError::Read {
                    what: self.cfg.device.clone(),
                    reason,
                });
            }
        };
        let now = crate::clock::realtime_ns();
        let flags: u32 = meta.flags.into();
        let t_ns = frame_time(flags, meta.timestamp.sec, meta.timestamp.usec, &self.clock, now);
        if let Some(prev) = self.last_sequence {
            let gap = meta.sequence.wrapping_sub(prev).wrapping_sub(1);
            if gap > 0 && gap < 1 << 20 {
                self.sequence_gaps += gap as u64;
            }
        }
        self.last_sequence = Some(meta.sequence);
        let data = if flags & FLAG_ERROR != 0 {
            Err(SourceError::BadData {
                what: self.cfg.device.clone(),
                reason: "the driver flagged the buffer as corrupt".into(),
            })
        } else {
            frame_data(format, sensor, &granted, buf, meta.bytesused, limits)
        };
        match data {
            Ok(data) => Ok(Some(Frame { t_ns, data })),
            Err(e) => {
                self.corrupt += 1;
                Err(e)
            }
        }
    }

    fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("device".into(), json!(self.cfg.device));
        if let Some(o) = &self.open {
            let g = &o.granted;
            m.insert("fourcc".into(), json!(fourcc_text(g.fourcc)));
            m.insert("width".into(), json!(g.width));
            m.insert("height".into(), json!(g.height));
            m.insert("fps".into(), json!(g.fps()));
            m.insert("stride".into(), json!(g.stride));
        }
        m.insert("corrupt".into(), json!(self.corrupt));
        m.insert("sequence_gaps".into(), json!(self.sequence_gaps));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> Result<V4l2Config, String> {
        parse_config("cam", toml::from_str(s).unwrap()).map_err(|e| e.to_string())
    }

    fn granted(c: &V4l2Config) -> Granted {
        Granted {
            fourcc: fourcc(c.format),
            width: c.width,
            height: c.height,
            stride: 0,
            interval: interval_for(c.fps),
        }
    }

    #[test]
    fn keys_default_per_sensor_and_validate() {
        let c = cfg("").unwrap();
        assert_eq!(
            (
                c.device.as_str(),
                c.format,
                c.width,
                c.height,
                c.fps,
                c.sensor,
                c.buffers
            ),
            ("/dev/video0", PixelFormat::Mjpeg, 640, 480, 30.0, V4l2Sensor::Camera, 4)
        );
        let t = cfg("sensor = \"thermal\"\ndevice = \"/dev/video2\"").unwrap();
        assert_eq!((t.format, t.width, t.height, t.fps), (PixelFormat::Y16, 160, 120, 9.0));
        assert_eq!(
            cfg("sensor = \"thermal\"\nformat = \"grey\"").unwrap().format,
            PixelFormat::Grey
        );
        for (table, needle) in [
            (
                "sensor = \"thermal\"\nformat = \"mjpeg\"",
                "`sources.cam.format`: a thermal core",
            ),
            ("format = \"y16\"", "`sources.cam.format`"),
            ("format = \"h264\"", "unknown variant `h264`"),
            ("sensor = \"depth\"", "unknown variant `depth`"),
            ("width = 0", "`sources.cam.width`"),
            ("format = \"yuyv\"\nwidth = 641", "must be even"),
            ("fps = 0.0", "`sources.cam.fps`"),
            ("buffers = 1", "`sources.cam.buffers`"),
            ("device = \"\"", "`sources.cam.device`"),
            ("rate = 3", "unknown field `rate`"),
        ] {
            let e = cfg(table).unwrap_err();
            assert!(e.contains(needle), "{table}: {e}");
        }
    }

    #[test]
    fn fourccs_and_intervals() {
        for f in [
            PixelFormat::Mjpeg,
            PixelFormat::Yuyv,
            PixelFormat::Rgb3,
            PixelFormat::Grey,
            PixelFormat::Y16,
        ] {
            assert_eq!(format_of(fourcc(f)), Some(f));
        }
        // The kernel's v4l2_fourcc('Y','U','Y','V') as a little-endian u32.
        assert_eq!(u32::from_le_bytes(fourcc(PixelFormat::Yuyv)), 0x5659_5559);
        assert_eq!(u32::from_le_bytes(fourcc(PixelFormat::Mjpeg)), 0x4750_4a4d);
        assert_eq!(fourcc_text(*b"Y16 "), "Y16 ");
        assert_eq!(fourcc_text([b'H', b'2', 0, 1]), "H2\\x00\\x01");
        assert_eq!(format_of(*b"H264"), None);
        assert_eq!(interval_for(30.0), (1, 30));
        assert_eq!(interval_for(8.7), (10, 87));
        assert_eq!(interval_for(29.97), (100, 2997));
        assert_eq!(interval_for(0.5), (2, 1));
        let g = Granted {
            interval: (1001, 30000),
            ..granted(&cfg("").unwrap())
        };
        assert!((g.fps().unwrap() - 29.97).abs() < 0.001);
        assert_eq!(Granted { interval: (0, 0), ..g }.fps(), None);
        assert_eq!(frame_timeout(30.0), Duration::from_secs(2));
        assert_eq!(frame_timeout(1.0), Duration::from_secs(10));
    }

    #[test]
    fn granted_format_must_match_what_was_asked() {
        let c = cfg("format = \"yuyv\"").unwrap();
        assert!(check_granted(&c, &granted(&c)).unwrap().is_empty());
        // A camera that only does MJPEG at this size hands back MJPG.
        let e = check_granted(
            &c,
            &Granted {
                fourcc: *b"MJPG",
                ..granted(&c)
            },
        )
        .unwrap_err();
        assert!(
            e.contains("asked for pixel format YUYV") && e.contains("granted MJPG") && e.contains("format = \"mjpeg\""),
            "{e}"
        );
        let e = check_granted(
            &c,
            &Granted {
                fourcc: *b"H264",
                ..granted(&c)
            },
        )
        .unwrap_err();
        assert!(e.contains("v4l2-ctl --list-formats-ext"), "{e}");
        // Another size or rate is taken, and said.
        let notes = check_granted(
            &c,
            &Granted {
                width: 320,
                height: 240,
                interval: (1, 15),
                ..granted(&c)
            },
        )
        .unwrap();
        assert_eq!(
            notes,
            vec!["asked 640×480, granted 320×240", "asked 30 fps, granted 15.000"]
        );
        let e = check_granted(
            &c,
            &Granted {
                stride: 1000,
                ..granted(&c)
            },
        )
        .unwrap_err();
        assert!(e.contains("bytes per line"), "{e}");
    }

    #[test]
    fn monotonic_buffer_stamps_map_onto_realtime() {
        let mono = MonotonicClock::new();
        let now = crate::clock::realtime_ns();
        let m = crate::clock::monotonic_ns() - 33_000_000; // exposed 33 ms ago
        let (sec, usec) = (m / 1_000_000_000, (m % 1_000_000_000) / 1_000);
        let t = frame_time(TS_MONOTONIC | 0x0001_0000, sec, usec, &mono, now);
        assert!((t - (now - 33_000_000)).abs() < 5_000_000, "{}", t - now);
        assert_eq!(t, mono.map(sec * 1_000_000_000 + usec * 1_000));
        // Unknown or copied stamps, a zero stamp, or nonsense: stamped at dequeue.
        assert_eq!(frame_time(0, sec, usec, &mono, now), now);
        assert_eq!(frame_time(0x4000, sec, usec, &mono, now), now);
        assert_eq!(frame_time(TS_MONOTONIC, 0, 0, &mono, now), now);
        assert_eq!(frame_time(TS_MONOTONIC, sec - 3600, usec, &mono, now), now);
    }

    #[test]
    fn padded_rows_are_repacked() {
        // 3×2 GREY with 4-byte lines (one pad byte), no pad after the last row.
        let buf = [1, 2, 3, 0xEE, 4, 5, 6];
        assert_eq!(&*unpad_rows(&buf, 3, 4, 2).unwrap(), &[1, 2, 3, 4, 5, 6]);
        assert!(matches!(unpad_rows(&buf, 3, 3, 2).unwrap(), Cow::Borrowed(_)));
        assert!(matches!(
            unpad_rows(&buf[..6], 3, 4, 2),
            Err(SourceError::BadData { .. })
        ));
        let c = cfg("format = \"grey\"\nwidth = 3\nheight = 2").unwrap();
        let g = Granted {
            stride: 4,
            ..granted(&c)
        };
        let f = frame_data(c.format, c.sensor, &g, &buf, buf.len() as u32, ImageLimits::default()).unwrap();
        assert_eq!(
            f,
            FrameData::Rgb8 {
                width: 3,
                height: 2,
                data: vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]
            }
        );
    }

    /// Buffers laid out as the devices send them, through `frame_data` (which the
    /// device loop calls with each dequeued buffer and its `bytesused`).
    #[test]
    fn captured_buffers_become_frames() {
        let l = ImageLimits::default();
        // MJPEG: kept compressed, only `bytesused` of the (larger) mmap buffer.
        let img = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([(x * 16) as u8, (y * 32) as u8, 90]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let mut mmap = jpeg.clone();
        mmap.resize(jpeg.len() + 4096, 0); // the mmap buffer is larger than the frame
        let c = cfg("width = 16\nheight = 8").unwrap();
        let f = frame_data(c.format, c.sensor, &granted(&c), &mmap, jpeg.len() as u32, l).unwrap();
        assert_eq!(
            f,
            FrameData::Jpeg {
                width: 16,
                height: 8,
                data: jpeg.clone()
            }
        );
        // …which the windower's decoder turns into the image.
        let frame = Arc::new(Frame { t_ns: 0, data: f });
        let decoded = pixfmt::decoded(frame, l).unwrap();
        assert_eq!(decoded.data.image_size(), Some((16, 8)));
        // A truncated transfer or garbage: bad data, never a panic.
        for (buf, used) in [(&mmap[..], 0u32), (&mmap[..], 10_000), (&[0u8; 64][..], 64)] {
            let e = frame_data(c.format, c.sensor, &granted(&c), buf, used, l).unwrap_err();
            assert!(matches!(e, SourceError::BadData { .. }), "{e}");
        }
        // YUYV 2×1: black and white sharing neutral chroma.
        let c = cfg("format = \"yuyv\"\nwidth = 2\nheight = 1").unwrap();
        let f = frame_data(c.format, c.sensor, &granted(&c), &[16, 128, 235, 128], 4, l).unwrap();
        assert_eq!(
            f,
            FrameData::Rgb8 {
                width: 2,
                height: 1,
                data: vec![0, 0, 0, 255, 255, 255]
            }
        );
        // RGB3 passes through.
        let c = cfg("format = \"rgb3\"\nwidth = 1\nheight = 2").unwrap();
        let f = frame_data(c.format, c.sensor, &granted(&c), &[1, 2, 3, 4, 5, 6], 6, l).unwrap();
        assert_eq!(f.image_size(), Some((1, 2)));
        // Y16 from a Lepton: little-endian raw counts, kept raw.
        let c = cfg("sensor = \"thermal\"\nwidth = 2\nheight = 1").unwrap();
        let f = frame_data(c.format, c.sensor, &granted(&c), &[0xD4, 0x1E, 0x10, 0x20], 4, l).unwrap();
        assert_eq!(
            f,
            FrameData::Thermal16 {
                width: 2,
                height: 1,
                data: vec![0x1ED4, 0x2010]
            }
        );
        // A short Y16 buffer is bad data.
        assert!(frame_data(c.format, c.sensor, &granted(&c), &[0xD4, 0x1E, 0x10], 3, l).is_err());
    }
}
