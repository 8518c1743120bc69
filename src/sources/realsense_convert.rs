//! Intel RealSense data → frames: the plain conversions behind the `realsense` driver
//! ([`super::realsense`], feature `realsense`). Always compiled and tested on byte
//! buffers laid out as librealsense2 delivers them, so all of it is checked on
//! machines without the library or a camera.
//!
//! - Colour: `RS2_FORMAT_RGB8`, `stride` bytes per row (≥ `3·width`) →
//!   [`FrameData::Rgb8`] ([`color_rgb8`]).
//! - Depth: `RS2_FORMAT_Z16` (little-endian u16 per pixel, `stride` bytes per row),
//!   aligned to the colour stream, times the device's depth scale (metres per unit,
//!   `RS2_OPTION_DEPTH_UNITS`) → [`FrameData::Depth16`] in millimetres: 0 stays
//!   invalid, a valid reading never becomes 0, and anything beyond 65.535 m saturates
//!   ([`depth_z16_mm`]).
//! - IMU: accelerometer and gyroscope frames arrive separately, at different rates
//!   (D435i: accel 63/250 Hz, gyro 200/400 Hz; D455: accel 100/200 Hz). The
//!   [`ImuCombiner`] emits one 6-axis [`ImuSample`] per gyro sample, at the gyro's
//!   time, with the acceleration linearly interpolated between the accel samples
//!   around it.
//! - Time: frame timestamps are milliseconds (f64). In the `global_time` domain (the
//!   default on D400 devices: the device clock converted to host time) and the
//!   `system_time` domain they are host realtime, so they become ns directly; a bare
//!   `hardware_clock` is anchored on the host clock at its first frame ([`DeviceTime`]).
//! - Calibration: colour intrinsics, the depth sensor's focal length, the stereo
//!   baseline, the depth scale and the depth → colour extrinsics (librealsense gives
//!   the rotation as a **column-major** 3×3 array, `rs2_extrinsics.rotation`) →
//!   [`RealsenseCalibration`], the fields of [`crate::calibration::Calibration`] in
//!   nalgebra types.

use super::{key_error, parse_keys, FrameData, ImageLimits, ImuSample, Nanos, SourceConfigError, SourceError};
use nalgebra::{Isometry3, Matrix3, Rotation3, Translation3, UnitQuaternion, Vector3};
use serde::Deserialize;
use std::collections::VecDeque;

// ---------------------------------------------------------------- keys

/// `[sources.<id>]` keys of `type = "realsense"` (parsed here so they are checked in
/// every build; the driver itself needs the `realsense` feature).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealsenseConfig {
    /// The device's serial number; unset: the first RealSense found.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Also stream the IMU (accelerometer + gyroscope, D435i/D455).
    #[serde(default = "yes")]
    pub imu: bool,
}

fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> u32 {
    30
}
fn yes() -> bool {
    true
}

impl RealsenseConfig {
    /// Parse and check the keys; errors name `sources.<id>.<key>`.
    pub fn parse(id: &str, keys: toml::Table) -> Result<RealsenseConfig, SourceConfigError> {
        let c: RealsenseConfig = parse_keys(id, keys)?;
        if let Some(s) = &c.serial {
            if s.is_empty() || !s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
                return Err(key_error(
                    id,
                    "serial",
                    format!(
                        "expected a serial number such as `123622270882` (see `rs-enumerate-devices`), got `{}`",
                        crate::ident::clip(s, 40)
                    ),
                ));
            }
        }
        if !(16..=4096).contains(&c.width) || !(16..=4096).contains(&c.height) {
            return Err(key_error(
                id,
                "width",
                format!(
                    "expected width and height in 16..=4096 (a mode the camera has, e.g. 640×480), got {}×{}",
                    c.width, c.height
                ),
            ));
        }
        if !(1..=300).contains(&c.fps) {
            return Err(key_error(id, "fps", format!("expected 1..=300, got {}", c.fps)));
        }
        Ok(c)
    }
}

fn bad(what: &str, reason: impl ToString) -> SourceError {
    SourceError::BadData {
        what: format!("realsense {what}"),
        reason: reason.to_string(),
    }
}

/// Check a `width`×`height` image of `bpp`-byte pixels in rows `stride` apart fits `len`.
fn check_layout(what: &str, w: u32, h: u32, bpp: usize, stride: usize, len: usize) -> Result<usize, SourceError> {
    let row = w as usize * bpp;
    let stride = if stride == 0 { row } else { stride };
    if stride < row {
        return Err(bad(what, format!("stride {stride} is less than {w}×{bpp} bytes")));
    }
    let need = if h == 0 { 0 } else { stride * (h as usize - 1) + row };
    if len < need {
        return Err(bad(
            what,
            format!("{w}×{h} with {stride}-byte rows needs {need} bytes, the frame has {len}"),
        ));
    }
    Ok(stride)
}

/// An `RS2_FORMAT_RGB8` colour frame → packed RGB.
pub fn color_rgb8(w: u32, h: u32, stride: usize, data: &[u8], limits: ImageLimits) -> Result<FrameData, SourceError> {
    limits.check(w, h).map_err(|e| bad("colour", e))?;
    let stride = check_layout("colour", w, h, 3, stride, data.len())?;
    let row = w as usize * 3;
    let out = if stride == row {
        data[..row * h as usize].to_vec()
    } else {
        let mut out = Vec::with_capacity(row * h as usize);
        for r in 0..h as usize {
            out.extend_from_slice(&data[r * stride..r * stride + row]);
        }
        out
    };
    Ok(FrameData::Rgb8 {
        width: w,
        height: h,
        data: out,
    })
}

/// Millimetres for one Z16 unit count at `scale` metres per unit.
fn to_mm(raw: u16, scale_mm: f64) -> u16 {
    if raw == 0 {
        return 0;
    }
    let mm = (raw as f64 * scale_mm).round();
    // A valid reading stays valid (sub-millimetre units, e.g. a D405's 0.1 mm).
    mm.clamp(1.0, u16::MAX as f64) as u16
}

/// A `RS2_FORMAT_Z16` depth frame with the device's depth scale (metres per unit)
/// → millimetres.
pub fn depth_z16_mm(
    w: u32,
    h: u32,
    stride: usize,
    data: &[u8],
    depth_scale_m: f32,
    limits: ImageLimits,
) -> Result<FrameData, SourceError> {
    limits.check(w, h).map_err(|e| bad("depth", e))?;
    if !(depth_scale_m.is_finite() && depth_scale_m > 0.0 && depth_scale_m < 1.0) {
        return Err(bad(
            "depth",
            format!("depth scale {depth_scale_m} m/unit is not a usable scale"),
        ));
    }
    let stride = check_layout("depth", w, h, 2, stride, data.len())?;
    let scale_mm = depth_scale_m as f64 * 1000.0;
    // The usual 1 mm unit (stored as an f32 0.001): the counts are millimetres already.
    let identity = (scale_mm - 1.0).abs() < 1e-6;
    let mut out = Vec::with_capacity(w as usize * h as usize);
    for r in 0..h as usize {
        let row = &data[r * stride..r * stride + w as usize * 2];
        out.extend(row.chunks_exact(2).map(|b| {
            let raw = u16::from_le_bytes([b[0], b[1]]);
            if identity {
                raw
            } else {
                to_mm(raw, scale_mm)
            }
        }));
    }
    Ok(FrameData::Depth16 {
        width: w,
        height: h,
        data: out,
    })
}

// ---------------------------------------------------------------- time

/// A frame timestamp's domain (`rs2_timestamp_domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// The device's own clock (ms since it powered up).
    HardwareClock,
    /// The host's realtime clock when the frame arrived.
    SystemTime,
    /// The device clock converted to host realtime by librealsense.
    GlobalTime,
}

/// Device milliseconds → ns on the daemon's axis.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceTime {
    /// host − device, ns, for the hardware clock (set at its first frame).
    offset: Option<Nanos>,
}

impl DeviceTime {
    pub fn new() -> Self {
        DeviceTime::default()
    }

    /// A frame stamped `ms` in `domain`, seen at daemon time `now`.
    pub fn map(&mut self, ms: f64, domain: TimeDomain, now: Nanos) -> Nanos {
        if !ms.is_finite() {
            return now;
        }
        // Whole and fractional milliseconds apart: an f64 holding ~1.7e18 ns has
        // 256-ns steps, the milliseconds themselves sub-microsecond ones.
        let whole = ms.trunc();
        let ns = (whole as Nanos)
            .saturating_mul(1_000_000)
            .saturating_add(((ms - whole) * 1e6).round() as Nanos);
        match domain {
            TimeDomain::GlobalTime | TimeDomain::SystemTime => ns,
            TimeDomain::HardwareClock => ns + *self.offset.get_or_insert(now - ns),
        }
    }
}

// ---------------------------------------------------------------- IMU

/// Combines separate accelerometer and gyroscope streams into 6-axis samples at the
/// gyro's timestamps, the acceleration linearly interpolated between the accel
/// samples on either side. A gyro sample waits until an accel sample at or after it
/// has arrived; before the first accel sample the first one is held. When the accel
/// stream stalls for longer than `max_wait_ns` the waiting gyro samples are released
/// with the latest acceleration held, so the IMU stream never stops with it.
/// Samples that go back in time (per stream) are dropped and counted.
#[derive(Debug, Clone)]
pub struct ImuCombiner {
    /// Recent accel samples, oldest first; one at or before every waiting gyro is kept.
    accel: VecDeque<(Nanos, [f32; 3])>,
    /// Gyro samples waiting for an accel sample at or after them.
    waiting: VecDeque<(Nanos, [f32; 3])>,
    max_wait_ns: Nanos,
    last_gyro: Nanos,
    /// Samples dropped because they went back in time.
    pub out_of_order: u64,
    /// Gyro samples released with a held (not interpolated) acceleration.
    pub held: u64,
}

/// Most gyro samples kept waiting (a second at 400 Hz).
const MAX_WAITING: usize = 400;

impl ImuCombiner {
    pub fn new(max_wait_ns: Nanos) -> Self {
        ImuCombiner {
            accel: VecDeque::new(),
            waiting: VecDeque::new(),
            max_wait_ns,
            last_gyro: Nanos::MIN,
            out_of_order: 0,
            held: 0,
        }
    }

    /// Acceleration at `t` by linear interpolation; `None` when `t` is past the
    /// newest accel sample (wait for the next one).
    fn accel_at(&self, t: Nanos) -> Option<[f32; 3]> {
        let (&(t_first, a_first), &(t_last, _)) = (self.accel.front()?, self.accel.back()?);
        if t <= t_first {
            return Some(a_first);
        }
        if t > t_last {
            return None;
        }
        // The pair around t (the deque is short: a few samples).
        let i = self.accel.iter().position(|(ta, _)| *ta >= t)?;
        let (t1, a1) = self.accel[i];
        if t1 == t {
            return Some(a1);
        }
        let (t0, a0) = self.accel[i - 1];
        let f = ((t - t0) as f64 / (t1 - t0) as f64) as f32;
        Some([
            a0[0] + (a1[0] - a0[0]) * f,
            a0[1] + (a1[1] - a0[1]) * f,
            a0[2] + (a1[2] - a0[2]) * f,
        ])
    }

    /// Release what can be released, then forget accel samples no one needs.
    fn drain(&mut self, out: &mut Vec<(Nanos, ImuSample)>) {
        while let Some(&(t, gyro)) = self.waiting.front() {
            let Some(accel) = self.accel_at(t) else { break };
            self.waiting.pop_front();
            out.push((t, ImuSample { accel, gyro }));
        }
        // Keep the newest accel sample at or before the oldest time still to come
        // (before any gyro sample: only the newest).
        let horizon = match self.waiting.front() {
            Some(w) => w.0,
            None if self.last_gyro == Nanos::MIN => self.accel.back().map_or(Nanos::MIN, |a| a.0),
            None => self.last_gyro,
        };
        while self.accel.len() > 1 && self.accel[1].0 <= horizon {
            self.accel.pop_front();
        }
    }

    /// An accelerometer sample (m/s²) at `t`.
    pub fn push_accel(&mut self, t: Nanos, accel: [f32; 3]) -> Vec<(Nanos, ImuSample)> {
        let mut out = Vec::new();
        if self.accel.back().is_some_and(|(tb, _)| t <= *tb) {
            self.out_of_order += 1;
            return out;
        }
        self.accel.push_back((t, accel));
        self.drain(&mut out);
        out
    }

    /// A gyroscope sample (rad/s) at `t`.
    pub fn push_gyro(&mut self, t: Nanos, gyro: [f32; 3]) -> Vec<(Nanos, ImuSample)> {
        let mut out = Vec::new();
        if t <= self.last_gyro {
            self.out_of_order += 1;
            return out;
        }
        self.last_gyro = t;
        self.waiting.push_back((t, gyro));
        self.drain(&mut out);
        // The accel stream stalled (or never started): release with the acceleration held.
        while let Some(&(tw, g)) = self.waiting.front() {
            if t - tw <= self.max_wait_ns && self.waiting.len() <= MAX_WAITING {
                break;
            }
            self.waiting.pop_front();
            let Some(&(_, a)) = self.accel.back() else {
                // No acceleration at all yet: nothing to hold; the sample is dropped.
                continue;
            };
            self.held += 1;
            out.push((tw, ImuSample { accel: a, gyro: g }));
        }
        out
    }
}

// ---------------------------------------------------------------- calibration

/// Video stream intrinsics (`rs2_intrinsics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub width: u32,
    pub height: u32,
    pub fx: f32,
    pub fy: f32,
    pub ppx: f32,
    pub ppy: f32,
    /// Brown-Conrady k1, k2, p1, p2, k3 (librealsense's order, as OpenCV's).
    pub coeffs: [f32; 5],
}

/// A rigid transform between two streams (`rs2_extrinsics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extrinsics {
    /// Column-major 3×3 rotation, as librealsense gives it.
    pub rotation: [f32; 9],
    /// Metres.
    pub translation: [f32; 3],
}

impl Extrinsics {
    /// The transform as an isometry (`p_to = R·p_from + t`); an array that is not a
    /// rotation is an error.
    pub fn isometry(&self) -> Result<Isometry3<f64>, String> {
        let r = &self.rotation;
        // Column-major: element (row i, column j) is r[j*3 + i].
        let m = Matrix3::from_fn(|i, j| r[j * 3 + i] as f64);
        let orthonormal = (m.transpose() * m - Matrix3::identity()).abs().max() < 1e-3;
        if !(m.iter().all(|v| v.is_finite()) && orthonormal && (m.determinant() - 1.0).abs() < 1e-3) {
            return Err(format!("extrinsics rotation {r:?} is not a rotation matrix"));
        }
        let q = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix(&m));
        let t = &self.translation;
        if !t.iter().all(|v| v.is_finite()) {
            return Err(format!("extrinsics translation {t:?} is not finite"));
        }
        Ok(Isometry3::from_parts(
            Translation3::new(t[0] as f64, t[1] as f64, t[2] as f64),
            q,
        ))
    }
}

/// A RealSense's calibration as the daemon's [`crate::calibration::Calibration`]
/// holds it. The driver aligns depth to the colour stream, so depth frames share
/// the colour camera's pixel grid: `depth_size` is the colour size,
/// `depth_to_camera` the identity, and the physical depth sensor → colour camera
/// transform is kept in `sensor_depth_to_camera`. `depth_unit_m` is the unit of the
/// delivered `Depth16` frames (mm), `device_depth_unit_m` the device's raw unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RealsenseCalibration {
    pub camera_size: (u32, u32),
    pub camera_k: Matrix3<f64>,
    pub camera_distortion: [f64; 5],
    pub depth_size: (u32, u32),
    pub depth_baseline_m: f32,
    pub depth_focal_px: f32,
    pub depth_unit_m: f64,
    pub device_depth_unit_m: f64,
    pub depth_to_camera: Isometry3<f64>,
    pub sensor_depth_to_camera: Isometry3<f64>,
    /// Accelerometer → colour camera, when the IMU streams are on.
    pub imu_to_camera: Option<Isometry3<f64>>,
}

impl RealsenseCalibration {
    /// The stereo geometry depth → disparity uses for this camera's windows.
    pub fn depth_geometry(&self) -> super::DepthGeometry {
        super::DepthGeometry {
            baseline_m: self.depth_baseline_m,
            focal_px: self.depth_focal_px,
        }
    }

    /// From what librealsense reports: colour intrinsics, depth (sensor) intrinsics,
    /// the stereo baseline (`RS2_OPTION_STEREO_BASELINE`, mm), the depth scale (m/unit),
    /// depth → colour extrinsics and, with the IMU, accel → colour extrinsics.
    pub fn from_device(
        color: &Intrinsics,
        depth: &Intrinsics,
        baseline_mm: f32,
        depth_scale_m: f32,
        depth_to_color: &Extrinsics,
        imu_to_color: Option<&Extrinsics>,
    ) -> Result<RealsenseCalibration, String> {
        let positive = |what: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(format!("{what} {v} must be > 0"))
            }
        };
        positive("colour fx", color.fx)?;
        positive("colour fy", color.fy)?;
        let focal = positive("depth fx", depth.fx)?;
        let baseline = positive("stereo baseline (mm)", baseline_mm)? / 1000.0;
        let unit = positive("depth scale", depth_scale_m)?;
        if color.width == 0 || color.height == 0 {
            return Err(format!("colour size {}×{} is empty", color.width, color.height));
        }
        Ok(RealsenseCalibration {
            camera_size: (color.width, color.height),
            camera_k: Matrix3::new(
                color.fx as f64,
                0.0,
                color.ppx as f64,
                0.0,
                color.fy as f64,
                color.ppy as f64,
                0.0,
                0.0,
                1.0,
            ),
            camera_distortion: color.coeffs.map(|c| c as f64),
            depth_size: (color.width, color.height),
            depth_baseline_m: baseline,
            depth_focal_px: focal,
            depth_unit_m: 0.001,
            device_depth_unit_m: unit as f64,
            depth_to_camera: Isometry3::identity(),
            sensor_depth_to_camera: depth_to_color.isometry()?,
            imu_to_camera: imu_to_color.map(|e| e.isometry()).transpose()?,
        })
    }

    /// Write these values into a [`crate::calibration::Calibration`] (IMU biases, and
    /// `imu_to_camera` when unknown, are left as they are).
    pub fn apply_to(&self, c: &mut crate::calibration::Calibration) {
        c.camera_size = self.camera_size;
        c.camera_k = self.camera_k;
        c.camera_distortion = self.camera_distortion;
        c.depth_size = self.depth_size;
        c.depth_baseline_m = self.depth_baseline_m;
        c.depth_focal_px = self.depth_focal_px;
        c.depth_unit_m = self.depth_unit_m;
        c.depth_to_camera = self.depth_to_camera;
        if let Some(i) = self.imu_to_camera {
            c.imu_to_camera = i;
        }
    }

    /// A summary for health (`sources.<id>.driver.calibration`).
    pub fn to_json(&self) -> serde_json::Value {
        let t = self.sensor_depth_to_camera.translation.vector;
        serde_json::json!({
            "camera_size": [self.camera_size.0, self.camera_size.1],
            "fx": self.camera_k[(0, 0)],
            "fy": self.camera_k[(1, 1)],
            "cx": self.camera_k[(0, 2)],
            "cy": self.camera_k[(1, 2)],
            "distortion": self.camera_distortion,
            "depth_baseline_m": self.depth_baseline_m,
            "depth_focal_px": self.depth_focal_px,
            "device_depth_unit_m": self.device_depth_unit_m,
            "depth_sensor_to_camera_m": [t.x, t.y, t.z],
        })
    }
}

/// The translation of an isometry (convenience for callers and tests).
pub fn translation(i: &Isometry3<f64>) -> Vector3<f64> {
    i.translation.vector
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn keys_default_and_validate() {
        let p = |s: &str| RealsenseConfig::parse("rs0", toml::from_str(s).unwrap()).map_err(|e| e.to_string());
        assert_eq!(
            p("").unwrap(),
            RealsenseConfig {
                serial: None,
                width: 640,
                height: 480,
                fps: 30,
                imu: true
            }
        );
        let c = p("serial = \"123622270882\"\nwidth = 848\nheight = 480\nfps = 15\nimu = false").unwrap();
        assert_eq!(
            (c.serial.as_deref(), c.width, c.fps, c.imu),
            (Some("123622270882"), 848, 15, false)
        );
        for (table, needle) in [
            ("serial = \"\"", "`sources.rs0.serial`"),
            ("serial = \"12 34\"", "`sources.rs0.serial`"),
            ("width = 0", "`sources.rs0.width`"),
            ("fps = 0", "`sources.rs0.fps`"),
            ("imu = \"yes\"", "sources.rs0"),
            ("depth = true", "unknown field `depth`"),
        ] {
            let e = p(table).unwrap_err();
            assert!(e.contains(needle), "{table}: {e}");
        }
    }

    #[test]
    fn colour_rows_are_unpadded() {
        // 2×2 RGB8 in 8-byte rows (librealsense pads some resolutions to an aligned stride).
        let mut buf = Vec::new();
        buf.extend_from_slice(&[1, 2, 3, 4, 5, 6, 0xAA, 0xAA]);
        buf.extend_from_slice(&[7, 8, 9, 10, 11, 12, 0xAA, 0xAA]);
        let f = color_rgb8(2, 2, 8, &buf, ImageLimits::default()).unwrap();
        assert_eq!(
            f,
            FrameData::Rgb8 {
                width: 2,
                height: 2,
                data: (1..=12).collect()
            }
        );
        // Packed (stride = 3·width, or 0 = packed).
        let f = color_rgb8(2, 1, 0, &[1, 2, 3, 4, 5, 6], ImageLimits::default()).unwrap();
        assert_eq!(f.image_size(), Some((2, 1)));
        // Short frames, a stride below the row, absurd sizes: bad data.
        for (w, h, stride, len) in [(2, 2, 8, 13), (2, 2, 5, 100), (20000, 1, 0, 60000)] {
            let e = color_rgb8(w, h, stride, &vec![0; len], ImageLimits::default()).unwrap_err();
            assert!(matches!(e, SourceError::BadData { .. }), "{e}");
        }
    }

    fn z16(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn depth_becomes_millimetres() {
        let l = ImageLimits::default();
        let mm = |f: FrameData| match f {
            FrameData::Depth16 { data, .. } => data,
            other => panic!("{other:?}"),
        };
        // D435: 1 mm units (the f32 0.001); values pass through, 0 stays invalid.
        let raw = [0u16, 1, 1234, 65535];
        assert_eq!(mm(depth_z16_mm(4, 1, 0, &z16(&raw), 0.001, l).unwrap()), raw.to_vec());
        // D405: 0.1 mm units; rounding, and a valid reading never rounds to invalid.
        assert_eq!(
            mm(depth_z16_mm(4, 1, 0, &z16(&[0, 3, 12346, 65534]), 0.0001, l).unwrap()),
            vec![0, 1, 1235, 6553]
        );
        // Coarse units saturate at 65.535 m.
        assert_eq!(
            mm(depth_z16_mm(3, 1, 0, &z16(&[0, 100, 40000]), 0.0025, l).unwrap()),
            vec![0, 250, 65535]
        );
        // Row padding (stride 8 bytes for 3 pixels), rows in order.
        let mut buf = z16(&[1, 2, 3]);
        buf.extend_from_slice(&[0xFF, 0xFF]);
        buf.extend(z16(&[4, 5, 6]));
        assert_eq!(
            mm(depth_z16_mm(3, 2, 8, &buf, 0.001, l).unwrap()),
            vec![1, 2, 3, 4, 5, 6]
        );
        for scale in [0.0, -0.001, f32::NAN, 2.0] {
            assert!(depth_z16_mm(1, 1, 0, &[1, 0], scale, l).is_err(), "{scale}");
        }
        assert!(depth_z16_mm(2, 2, 0, &[0; 7], 0.001, l).is_err());
    }

    #[test]
    fn device_timestamps_become_ns() {
        let mut d = DeviceTime::new();
        // Global time: host realtime in ms, with sub-ms precision.
        assert_eq!(
            d.map(1_700_000_000_123.25, TimeDomain::GlobalTime, 0),
            1_700_000_000_123_250_000
        );
        assert_eq!(d.map(5.0, TimeDomain::SystemTime, 0), 5 * MS);
        // Hardware clock: anchored at the first frame, then advancing with the device.
        let now = 1_700_000_000_000 * MS;
        assert_eq!(d.map(1000.0, TimeDomain::HardwareClock, now), now);
        assert_eq!(
            d.map(1033.3, TimeDomain::HardwareClock, now + 50 * MS),
            now + 33_300_000
        );
        assert_eq!(d.map(f64::NAN, TimeDomain::GlobalTime, 42), 42);
    }

    /// Accel at 100 Hz and gyro at 200 Hz (rates of a D455 at its lowest settings),
    /// as librealsense delivers them: the two streams interleaved, accel sometimes
    /// arriving a little after the gyro samples it brackets.
    #[test]
    fn imu_streams_combine_at_gyro_times() {
        let t0 = 1_000_000 * MS;
        let accel_of = |t: Nanos| {
            let s = (t - t0) as f32 / 1e9;
            [s, 9.81 - s, 2.0 * s]
        };
        let gyro_of = |t: Nanos| [0.1, (t / MS) as f32 * 1e-3, -0.2];
        let mut arrivals: Vec<(Nanos, bool)> = Vec::new(); // (time, is accel)
        for k in 0..50 {
            arrivals.push((t0 + k * 10 * MS, true));
        }
        for k in 0..100 {
            arrivals.push((t0 + 1_000_000 + k * 5 * MS, false)); // gyro offset by 1 ms
        }
        // Delivery order: by time, but each accel sample 7 ms late.
        arrivals.sort_by_key(|(t, a)| if *a { t + 7 * MS } else { *t });
        let mut c = ImuCombiner::new(100 * MS);
        let mut out = Vec::new();
        for (t, is_accel) in arrivals {
            out.extend(if is_accel {
                c.push_accel(t, accel_of(t))
            } else {
                c.push_gyro(t, gyro_of(t))
            });
        }
        // Every gyro sample up to the last accel sample (t0 + 490 ms) came out, in order.
        let times: Vec<Nanos> = out.iter().map(|(t, _)| *t).collect();
        let want: Vec<Nanos> = (0..98).map(|k| t0 + 1_000_000 + k * 5 * MS).collect();
        assert_eq!(times, want);
        for (t, s) in &out {
            assert_eq!(s.gyro, gyro_of(*t));
            let a = accel_of(*t);
            for i in 0..3 {
                assert!((s.accel[i] - a[i]).abs() < 1e-4, "t {t}: {:?} vs {a:?}", s.accel);
            }
        }
        assert_eq!((c.out_of_order, c.held), (0, 0));
        assert!(c.accel.len() <= 2, "old accel samples are forgotten: {}", c.accel.len());
    }

    #[test]
    fn imu_edges_stalls_and_disorder() {
        let mut c = ImuCombiner::new(50 * MS);
        // Gyro before any accel waits; the first accel sample is held for it.
        assert!(c.push_gyro(10 * MS, [1.0; 3]).is_empty());
        let out = c.push_accel(20 * MS, [2.0; 3]);
        assert_eq!(
            out,
            vec![(
                10 * MS,
                ImuSample {
                    accel: [2.0; 3],
                    gyro: [1.0; 3]
                }
            )]
        );
        // Exactly on an accel sample: that sample.
        c.push_accel(30 * MS, [3.0; 3]);
        assert_eq!(c.push_gyro(30 * MS, [0.0; 3])[0].1.accel, [3.0; 3]);
        // Going back in time is dropped and counted.
        assert!(c.push_gyro(25 * MS, [0.0; 3]).is_empty());
        assert!(c.push_accel(30 * MS, [9.0; 3]).is_empty());
        assert_eq!(c.out_of_order, 2);
        // The accel stream stalls: gyro samples wait 50 ms, then go out with it held.
        let mut out = Vec::new();
        for k in 1..=13 {
            out.extend(c.push_gyro(30 * MS + k * 5 * MS, [k as f32; 3]));
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].0, 35 * MS);
        assert_eq!(out[0].1.accel, [3.0; 3]);
        assert_eq!(c.held, 2);
        // Accel resumes: the rest are interpolated between 30 ms and 100 ms.
        let out = c.push_accel(100 * MS, [10.0; 3]);
        assert_eq!(out.len(), 11);
        assert_eq!(out[0].0, 45 * MS);
        assert!((out[0].1.accel[0] - 4.5).abs() < 1e-5, "{:?}", out[0]);
        // Never an accel sample: gyro samples are dropped, not held forever.
        let mut c = ImuCombiner::new(10 * MS);
        for k in 0..10 {
            assert!(c.push_gyro(k * 5 * MS, [0.0; 3]).is_empty());
        }
        assert!(c.waiting.len() <= 3);
    }

    fn d435_like() -> (Intrinsics, Intrinsics, Extrinsics) {
        let color = Intrinsics {
            width: 640,
            height: 480,
            fx: 615.1,
            fy: 615.3,
            ppx: 321.5,
            ppy: 242.25,
            coeffs: [0.0; 5],
        };
        let depth = Intrinsics {
            width: 640,
            height: 480,
            fx: 382.6,
            fy: 382.6,
            ppx: 318.9,
            ppy: 237.1,
            coeffs: [0.0; 5],
        };
        // A 90° turn about z (x → y), stored column-major: columns are R·e_x, R·e_y, R·e_z.
        let e = Extrinsics {
            rotation: [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            translation: [0.015, 0.0001, -0.0003],
        };
        (color, depth, e)
    }

    #[test]
    fn calibration_from_device_values() {
        let (color, depth, e) = d435_like();
        let cal = RealsenseCalibration::from_device(&color, &depth, 50.02, 0.001, &e, None).unwrap();
        assert_eq!(cal.camera_size, (640, 480));
        assert_eq!(cal.depth_size, (640, 480));
        assert!((cal.camera_k[(0, 0)] - 615.1).abs() < 1e-4 && (cal.camera_k[(1, 2)] - 242.25).abs() < 1e-9);
        assert_eq!(cal.camera_k[(2, 2)], 1.0);
        assert!((cal.depth_baseline_m - 0.05002).abs() < 1e-7);
        assert!((cal.depth_focal_px - 382.6).abs() < 1e-4);
        assert_eq!(cal.depth_unit_m, 0.001);
        assert!((cal.device_depth_unit_m - 0.001).abs() < 1e-9);
        assert_eq!(cal.depth_to_camera, Isometry3::identity());
        // Column-major: the depth x axis maps to the colour y axis.
        let p = cal.sensor_depth_to_camera * nalgebra::Point3::new(1.0, 0.0, 0.0);
        assert!((p - nalgebra::Point3::new(0.015, 1.0001, -0.0003)).norm() < 1e-6, "{p}");
        assert!((translation(&cal.sensor_depth_to_camera).x - 0.015).abs() < 1e-7);
        // Into the daemon's calibration: the example's IMU values are kept.
        let mut c = crate::calibration::Calibration::load("").unwrap();
        let imu = c.imu_to_camera;
        cal.apply_to(&mut c);
        assert_eq!(c.camera_size, (640, 480));
        assert!((c.depth_focal_px - 382.6).abs() < 1e-4);
        assert_eq!(c.imu_to_camera, imu);
        let (u, v) = c.project(&Vector3::new(0.0, 0.0, 1.0)).unwrap();
        assert!((u - 321.5).abs() < 1e-9 && (v - 242.25).abs() < 1e-9);
        assert_eq!(cal.to_json()["camera_size"], serde_json::json!([640, 480]));
        // With the IMU extrinsics, those replace the file's.
        let ident = Extrinsics {
            rotation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            translation: [-0.005, 0.0, 0.0],
        };
        let cal = RealsenseCalibration::from_device(&color, &depth, 50.0, 0.001, &e, Some(&ident)).unwrap();
        cal.apply_to(&mut c);
        assert!((c.imu_to_camera.translation.vector.x + 0.005).abs() < 1e-9);
    }

    #[test]
    fn bad_calibration_values_are_refused() {
        let (color, depth, e) = d435_like();
        let scaled = Extrinsics {
            rotation: [2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0],
            ..e
        };
        let mirror = Extrinsics {
            rotation: [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            ..e
        };
        for (c, d, b, s, x) in [
            (color, depth, 50.0, 0.001, scaled),
            (color, depth, 50.0, 0.001, mirror),
            (color, depth, 0.0, 0.001, e),
            (color, depth, 50.0, f32::NAN, e),
            (Intrinsics { fx: 0.0, ..color }, depth, 50.0, 0.001, e),
            (color, Intrinsics { fx: -1.0, ..depth }, 50.0, 0.001, e),
        ] {
            assert!(RealsenseCalibration::from_device(&c, &d, b, s, &x, None).is_err());
        }
    }
}
