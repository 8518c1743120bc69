//! `type = "realsense"`: an Intel RealSense depth camera (D415/D435/D435i/D455…)
//! through librealsense2 (realsense-rust 1.3), feature `realsense`.
//!
//! ```toml
//! [sources.rs0]
//! type = "realsense"
//! # serial = "123622270882"  # unset: the first RealSense found
//! width = 640
//! height = 480
//! fps = 30
//! imu = true                  # D435i/D455: accelerometer + gyroscope
//! ```
//!
//! Keys ([`RealsenseConfig`]): `serial` (optional; `rs-enumerate-devices` lists it),
//! `width`, `height` (default 640×480), `fps` (default 30) for both the colour and the
//! depth stream (a mode the camera has), and `imu` (default true; a camera without an
//! IMU fails to open with it: set `imu = false`).
//!
//! One source, three streams: vision (`RS2_FORMAT_RGB8` colour → `FrameData::Rgb8`),
//! depth (`Z16` aligned to the colour stream with librealsense's `align` block, scaled
//! by the device's depth unit → `FrameData::Depth16` in millimetres) and, with `imu`,
//! the IMU (accel and gyro frames combined into 6-axis samples at the gyro's times).
//! Every conversion lives in [`super::realsense_convert`] (always compiled, tested
//! without the library); this module only talks to librealsense2. Frame timestamps are
//! in librealsense's `global_time` domain (host realtime) and become ns directly.
//! What was granted (serial, firmware-less name, stream rates, depth unit, the colour
//! intrinsics, baseline) is logged at open and in health (`sources.<id>.driver`).
//!
//! librealsense2 is not packaged by Debian: build it on the robot (see the README),
//! then `cargo build --release --features realsense`.

use super::realsense_convert::{
    color_rgb8, depth_z16_mm, DeviceTime, Extrinsics, ImuCombiner, Intrinsics, RealsenseCalibration, RealsenseConfig,
    TimeDomain,
};
use super::{
    DriverConfig, Frame, FrameData, ImageLimits, Nanos, Source, SourceConfigError, SourceContext, SourceError,
    SourceInfo, StreamInfo,
};
use crate::clock::{Clock, SystemClock};
use crate::modality::Modality;
use realsense_rust::{
    config::Config,
    context::Context,
    frame::{AccelFrame, ColorFrame, DepthFrame, FrameEx, GyroFrame, ImageFrame},
    kind::{Rs2CameraInfo, Rs2Format, Rs2Option, Rs2StreamKind, Rs2TimestampDomain},
    pipeline::{ActivePipeline, InactivePipeline},
    processing_blocks::align::Align,
};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Parse `[sources.<id>]` keys of `type = "realsense"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    Ok(Box::new(RealsenseConfig::parse(id, keys)?))
}

impl DriverConfig for RealsenseConfig {
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(Realsense {
            cfg: self.clone(),
            limits: ctx.image_limits,
            dev: None,
            pending: VecDeque::new(),
            granted: None,
            video_time: DeviceTime::new(),
            motion_time: DeviceTime::new(),
            imu: ImuCombiner::new(100_000_000),
        }))
    }
    fn default_queue(&self) -> usize {
        // Its IMU stream runs at hundreds of Hz.
        if self.imu {
            super::default_queue_for(crate::modality::Sensor::Imu)
        } else {
            64
        }
    }
}

/// The align block, moved to the source's thread with it.
struct SendAlign(Align);
// SAFETY: `Align` owns a librealsense processing block and frame queue, which
// librealsense lets any thread use; the source uses it from one thread at a time
// (the runner's), and never shares it.
unsafe impl Send for SendAlign {}

/// The running device. Field order is drop order: align, pipeline, then context.
struct Device {
    align: SendAlign,
    pipeline: ActivePipeline,
    _context: Context,
}

/// What the device reported at open.
#[derive(Debug, Clone)]
struct Granted {
    name: String,
    serial: String,
    color_fps: i32,
    depth_fps: i32,
    gyro_hz: i32,
    accel_hz: i32,
    depth_scale_m: f32,
    calibration: Option<RealsenseCalibration>,
}

/// A RealSense camera.
pub struct Realsense {
    cfg: RealsenseConfig,
    limits: ImageLimits,
    dev: Option<Device>,
    /// Frames (or per-frame errors) of the last frameset not handed out yet.
    pending: VecDeque<Result<Frame, SourceError>>,
    granted: Option<Granted>,
    video_time: DeviceTime,
    motion_time: DeviceTime,
    imu: ImuCombiner,
}

fn domain(d: Rs2TimestampDomain) -> TimeDomain {
    match d {
        Rs2TimestampDomain::HardwareClock => TimeDomain::HardwareClock,
        Rs2TimestampDomain::SystemTime => TimeDomain::SystemTime,
        Rs2TimestampDomain::GlobalTime => TimeDomain::GlobalTime,
    }
}

/// The bytes of an image frame.
fn bytes<K>(f: &ImageFrame<K>) -> &[u8] {
    // SAFETY: librealsense guarantees `get_data_size()` readable bytes at the frame's
    // data pointer for as long as the frame is held, which the borrow of `f` ensures.
    unsafe {
        std::slice::from_raw_parts(
            (f.get_data() as *const std::os::raw::c_void).cast::<u8>(),
            f.get_data_size(),
        )
    }
}

fn intrinsics(i: &realsense_rust::base::Rs2Intrinsics) -> Intrinsics {
    Intrinsics {
        width: i.width() as u32,
        height: i.height() as u32,
        fx: i.fx(),
        fy: i.fy(),
        ppx: i.ppx(),
        ppy: i.ppy(),
        coeffs: i.distortion().coeffs,
    }
}

fn extrinsics(e: &realsense_rust::base::Rs2Extrinsics) -> Extrinsics {
    Extrinsics {
        rotation: e.rotation(),
        translation: e.translation(),
    }
}

impl Realsense {
    fn what(&self) -> String {
        match &self.cfg.serial {
            Some(s) => format!("RealSense {s}"),
            None => "RealSense".into(),
        }
    }

    fn open_err(&self, reason: impl std::fmt::Display) -> SourceError {
        SourceError::Open {
            what: self.what(),
            reason: reason.to_string(),
        }
    }

    /// What the started pipeline reports: names, rates, depth unit, calibration.
    fn read_granted(&self, pipeline: &ActivePipeline) -> Result<Granted, SourceError> {
        let profile = pipeline.profile();
        let device = profile.device();
        let info = |k: Rs2CameraInfo| {
            device
                .info(k)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let streams = profile.streams();
        let find = |k: Rs2StreamKind| streams.iter().find(|s| s.kind() == k);
        let rate = |k: Rs2StreamKind| find(k).map_or(0, |s| s.framerate());
        let sensors = device.sensors();
        let depth_scale_m = sensors
            .iter()
            .find_map(|s| s.get_option(Rs2Option::DepthUnits))
            .ok_or_else(|| self.open_err("the device reports no depth unit (RS2_OPTION_DEPTH_UNITS)"))?;
        let baseline_mm = sensors.iter().find_map(|s| s.get_option(Rs2Option::StereoBaseline));
        let calibration = match (find(Rs2StreamKind::Color), find(Rs2StreamKind::Depth), baseline_mm) {
            (Some(c), Some(d), Some(b)) => {
                let imu = find(Rs2StreamKind::Accel).and_then(|a| a.extrinsics(c).ok());
                match (c.intrinsics(), d.intrinsics(), d.extrinsics(c)) {
                    (Ok(ci), Ok(di), Ok(e)) => RealsenseCalibration::from_device(
                        &intrinsics(&ci),
                        &intrinsics(&di),
                        b,
                        depth_scale_m,
                        &extrinsics(&e),
                        imu.as_ref().map(extrinsics).as_ref(),
                    )
                    .map_err(|e| tracing::warn!(error = %e, "RealSense calibration unusable"))
                    .ok(),
                    _ => None,
                }
            }
            _ => None,
        };
        Ok(Granted {
            name: info(Rs2CameraInfo::Name),
            serial: info(Rs2CameraInfo::SerialNumber),
            color_fps: rate(Rs2StreamKind::Color),
            depth_fps: rate(Rs2StreamKind::Depth),
            gyro_hz: rate(Rs2StreamKind::Gyro),
            accel_hz: rate(Rs2StreamKind::Accel),
            depth_scale_m,
            calibration,
        })
    }

    /// Convert one frameset from the pipeline into pending frames.
    fn take(&mut self, dev: &mut Device, frames: realsense_rust::frame::CompositeFrame) -> Result<(), SourceError> {
        let now = crate::clock::realtime_ns();
        if self.cfg.imu {
            for a in frames.frames_of_type::<AccelFrame>() {
                let t = self.motion_time.map(a.timestamp(), domain(a.timestamp_domain()), now);
                let out = self.imu.push_accel(t, *a.acceleration());
                self.pending.extend(out.into_iter().map(imu_frame));
            }
            for g in frames.frames_of_type::<GyroFrame>() {
                let t = self.motion_time.map(g.timestamp(), domain(g.timestamp_domain()), now);
                let out = self.imu.push_gyro(t, *g.rotational_velocity());
                self.pending.extend(out.into_iter().map(imu_frame));
            }
        }
        let video =
            !frames.frames_of_type::<ColorFrame>().is_empty() || !frames.frames_of_type::<DepthFrame>().is_empty();
        if !video {
            return Ok(());
        }
        dev.align.0.queue(frames).map_err(|e| SourceError::Read {
            what: self.what(),
            reason: format!("align: {e}"),
        })?;
        let aligned = dev
            .align
            .0
            .wait(Duration::from_millis(1000))
            .map_err(|e| SourceError::Read {
                what: self.what(),
                reason: format!("align: {e}"),
            })?;
        let scale = self.granted.as_ref().map_or(0.001, |g| g.depth_scale_m);
        for c in aligned.frames_of_type::<ColorFrame>() {
            let t = self.video_time.map(c.timestamp(), domain(c.timestamp_domain()), now);
            let data = if c.stream_profile().format() != Rs2Format::Rgb8 || c.bits_per_pixel() != 24 {
                Err(SourceError::BadData {
                    what: self.what(),
                    reason: format!("colour frame in {:?}, not RGB8", c.stream_profile().format()),
                })
            } else {
                color_rgb8(c.width() as u32, c.height() as u32, c.stride(), bytes(&c), self.limits)
            };
            self.pending.push_back(data.map(|data| Frame { t_ns: t, data }));
        }
        for d in aligned.frames_of_type::<DepthFrame>() {
            let t = self.video_time.map(d.timestamp(), domain(d.timestamp_domain()), now);
            let data = if d.stream_profile().format() != Rs2Format::Z16 || d.bits_per_pixel() != 16 {
                Err(SourceError::BadData {
                    what: self.what(),
                    reason: format!("depth frame in {:?}, not Z16", d.stream_profile().format()),
                })
            } else {
                depth_z16_mm(
                    d.width() as u32,
                    d.height() as u32,
                    d.stride(),
                    bytes(&d),
                    scale,
                    self.limits,
                )
            };
            self.pending.push_back(data.map(|data| Frame { t_ns: t, data }));
        }
        Ok(())
    }
}

fn imu_frame((t_ns, s): (Nanos, super::ImuSample)) -> Result<Frame, SourceError> {
    Ok(Frame {
        t_ns,
        data: FrameData::Imu(s),
    })
}

impl Source for Realsense {
    fn info(&self) -> SourceInfo {
        let c = &self.cfg;
        let g = self.granted.as_ref();
        let description = match g {
            Some(g) => format!(
                "RealSense {} {} {}×{} @ {} fps (depth aligned to colour, {} m/unit){}",
                g.name,
                g.serial,
                c.width,
                c.height,
                g.color_fps,
                g.depth_scale_m,
                if c.imu {
                    format!(", IMU gyro {} Hz + accel {} Hz", g.gyro_hz, g.accel_hz)
                } else {
                    String::new()
                }
            ),
            None => format!(
                "{} (asking {}×{} @ {} fps{})",
                self.what(),
                c.width,
                c.height,
                c.fps,
                if c.imu { ", IMU" } else { "" }
            ),
        };
        let fps = |granted: Option<i32>| granted.filter(|r| *r > 0).map_or(c.fps as f64, |r| r as f64);
        let mut streams = vec![
            StreamInfo {
                modality: Modality::Vision,
                nominal_rate_hz: fps(g.map(|g| g.color_fps)),
            },
            StreamInfo {
                modality: Modality::Depth,
                nominal_rate_hz: fps(g.map(|g| g.depth_fps)),
            },
        ];
        if c.imu {
            streams.push(StreamInfo {
                modality: Modality::Imu,
                nominal_rate_hz: g.map(|g| g.gyro_hz).filter(|r| *r > 0).map_or(200.0, |r| r as f64),
            });
        }
        SourceInfo { description, streams }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        // Global-time stamps are host realtime.
        Arc::new(SystemClock)
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.dev = None;
        self.pending.clear();
        let c = self.cfg.clone();
        let context = Context::new().map_err(|e| self.open_err(format!("librealsense context: {e}")))?;
        let pipeline = InactivePipeline::try_from(&context).map_err(|e| self.open_err(format!("pipeline: {e}")))?;
        let mut config = Config::new();
        if let Some(serial) = &c.serial {
            // The keys allow only [A-Za-z0-9_-], so there is no NUL.
            let s = std::ffi::CString::new(serial.as_str()).map_err(|e| self.open_err(e))?;
            config
                .enable_device_from_serial(&s)
                .map_err(|e| self.open_err(format!("device {serial}: {e}")))?;
        }
        let (w, h, fps) = (c.width as usize, c.height as usize, c.fps as usize);
        config
            .disable_all_streams()
            .and_then(|cfg| cfg.enable_stream(Rs2StreamKind::Color, None, w, h, Rs2Format::Rgb8, fps))
            .and_then(|cfg| cfg.enable_stream(Rs2StreamKind::Depth, None, w, h, Rs2Format::Z16, fps))
            .map_err(|e| self.open_err(e))?;
        if c.imu {
            config
                .enable_stream(Rs2StreamKind::Accel, None, 0, 0, Rs2Format::Any, 0)
                .and_then(|cfg| cfg.enable_stream(Rs2StreamKind::Gyro, None, 0, 0, Rs2Format::Any, 0))
                .map_err(|e| self.open_err(e))?;
        }
        let pipeline = pipeline.start(Some(config)).map_err(|e| {
            self.open_err(format!(
                "starting {w}×{h} @ {fps} fps colour + depth{}: {e}",
                if c.imu {
                    " + IMU (no IMU on this model? set imu = false)"
                } else {
                    ""
                }
            ))
        })?;
        let granted = self.read_granted(&pipeline)?;
        let align = Align::new(Rs2StreamKind::Color, 1).map_err(|e| self.open_err(format!("align block: {e}")))?;
        tracing::info!(
            name = %granted.name,
            serial = %granted.serial,
            color_fps = granted.color_fps,
            depth_fps = granted.depth_fps,
            gyro_hz = granted.gyro_hz,
            accel_hz = granted.accel_hz,
            depth_scale_m = granted.depth_scale_m,
            "RealSense started"
        );
        self.granted = Some(granted);
        self.video_time = DeviceTime::new();
        self.motion_time = DeviceTime::new();
        self.imu = ImuCombiner::new(100_000_000);
        self.dev = Some(Device {
            align: SendAlign(align),
            pipeline,
            _context: context,
        });
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return f.map(Some);
            }
            let Some(mut dev) = self.dev.take() else {
                return Err(SourceError::Read {
                    what: self.what(),
                    reason: "not open".into(),
                });
            };
            let frames = match dev.pipeline.wait(Some(Duration::from_secs(5))) {
                Ok(f) => f,
                // Dropping the device (no `self.dev`) makes the runner reopen it.
                Err(e) => {
                    return Err(SourceError::Read {
                        what: self.what(),
                        reason: e.to_string(),
                    })
                }
            };
            let r = self.take(&mut dev, frames);
            self.dev = Some(dev);
            r?;
        }
    }

    fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(g) = &self.granted {
            m.insert("name".into(), json!(g.name));
            m.insert("serial".into(), json!(g.serial));
            m.insert("width".into(), json!(self.cfg.width));
            m.insert("height".into(), json!(self.cfg.height));
            m.insert("color_fps".into(), json!(g.color_fps));
            m.insert("depth_fps".into(), json!(g.depth_fps));
            m.insert("depth_scale_m".into(), json!(g.depth_scale_m));
            if self.cfg.imu {
                m.insert("gyro_hz".into(), json!(g.gyro_hz));
                m.insert("accel_hz".into(), json!(g.accel_hz));
            }
            if let Some(c) = &g.calibration {
                m.insert("calibration".into(), c.to_json());
            }
        }
        m.insert("imu_out_of_order".into(), json!(self.imu.out_of_order));
        m.insert("imu_held".into(), json!(self.imu.held));
        m
    }

    fn depth_geometry(&self) -> Option<super::DepthGeometry> {
        self.calibration().map(|c| c.depth_geometry())
    }
}

impl Realsense {
    /// The calibration the device reported at the last open (colour intrinsics, depth
    /// focal length and baseline, depth → colour extrinsics).
    pub fn calibration(&self) -> Option<&RealsenseCalibration> {
        self.granted.as_ref().and_then(|g| g.calibration.as_ref())
    }
}
