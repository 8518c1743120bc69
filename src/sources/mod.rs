//! Sources: drivers that produce timestamped sensor frames.
//!
//! A [`Source`] is a blocking, pull-style driver (`open` → `next_frame`…). The
//! [`spawn`] runner gives each one its own OS thread, so a slow or stuck device never
//! blocks the async runtime or another sensor, and handles failure the way a robot
//! needs: an error is logged and counted, the driver is reopened after a back-off
//! (doubling up to 30 s), and frames keep flowing once the device is back.
//! Real drivers (V4L2, ALSA, RealSense, Y16 thermal, IIO IMU) implement the same trait.

pub mod file;
pub mod synthetic;

use crate::health::SourceHealth;
use crate::modality::Sensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sensor time in nanoseconds. All sources of one daemon share one clock.
pub type Nanos = i64;

/// One IMU reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImuSample {
    /// Accelerometer, m/s², xyz.
    pub accel: [f32; 3],
    /// Gyroscope, rad/s, xyz.
    pub gyro: [f32; 3],
}

/// The payload of one frame, in the sensor's native format.
#[derive(Debug, Clone)]
pub enum FrameData {
    /// Packed RGB, 8 bit, row-major, `width*height*3` bytes.
    Rgb8 { width: u32, height: u32, data: Vec<u8> },
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

/// A timestamped frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub t_ns: Nanos,
    pub data: FrameData,
}

impl FrameData {
    /// Which sensor kind produces this payload.
    pub fn sensor(&self) -> Sensor {
        match self {
            FrameData::Rgb8 { .. } => Sensor::Camera,
            FrameData::Depth16 { .. } => Sensor::Depth,
            FrameData::Thermal16 { .. } => Sensor::Thermal,
            FrameData::Audio { .. } => Sensor::Microphone,
            FrameData::Imu(_) => Sensor::Imu,
        }
    }
}

/// What a source tells about itself before it runs.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub sensor: Sensor,
    /// Human description for logs, e.g. "synthetic 640x480 @ 30 Hz".
    pub description: String,
    /// Nominal frame rate (frames/s; audio: chunks/s). Used to judge coverage.
    pub nominal_rate_hz: f64,
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
    /// Open (or reopen after an error) the device or file.
    fn open(&mut self) -> Result<(), SourceError>;
    /// Block until the next frame. `Ok(None)`: the stream has ended for good
    /// (end of a recording, a synthetic source's duration).
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
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

/// Run `source` on its own thread until it ends or `stop` is set, sending frames into
/// `tx`. Frames are never waited on: when the queue is full the frame is dropped and
/// counted. Returns the thread handle.
pub fn spawn(
    mut source: Box<dyn Source>,
    tx: tokio::sync::mpsc::Sender<Frame>,
    health: Arc<SourceHealth>,
    stop: StopFlag,
    restart_backoff: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let info = source.info();
    let name = format!("src-{}", info.sensor);
    std::thread::Builder::new().name(name).spawn(move || {
        let sensor = info.sensor;
        let max_backoff = Duration::from_secs(30);
        let mut backoff = restart_backoff;
        'outer: while !stop.is_stopped() {
            if let Err(e) = source.open() {
                health.record_error();
                health.set_state("reconnecting");
                tracing::error!(event = "source_open_failed", sensor = %sensor, error = %e, retry_in_s = backoff.as_secs_f64(), "source could not be opened; retrying");
                if !stop.sleep(backoff) {
                    break;
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
            health.set_state("running");
            tracing::info!(event = "source_started", sensor = %sensor, source = %info.description, "source running");
            loop {
                if stop.is_stopped() {
                    break 'outer;
                }
                match source.next_frame() {
                    Ok(Some(frame)) => {
                        backoff = restart_backoff;
                        health.record_frame(frame.t_ns);
                        match tx.try_send(frame) {
                            Ok(()) => {}
                            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => health.record_frame_dropped(),
                            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break 'outer,
                        }
                    }
                    Ok(None) => {
                        tracing::info!(event = "source_ended", sensor = %sensor, "source reached the end of its stream");
                        health.set_state("ended");
                        break 'outer;
                    }
                    Err(e @ SourceError::BadData { .. }) => {
                        health.record_error();
                        tracing::warn!(event = "source_bad_data", sensor = %sensor, error = %e, "frame skipped");
                    }
                    Err(e) => {
                        health.record_error();
                        health.record_reconnect();
                        health.set_state("reconnecting");
                        tracing::error!(event = "source_failed", sensor = %sensor, error = %e, retry_in_s = backoff.as_secs_f64(), "source failed; reopening");
                        if !stop.sleep(backoff) {
                            break 'outer;
                        }
                        backoff = (backoff * 2).min(max_backoff);
                        continue 'outer;
                    }
                }
            }
        }
        if stop.is_stopped() {
            health.set_state("stopped");
        }
    })
}

/// Build the source configured for `sensor`, or `None` when it is off.
pub fn build(
    sensor: Sensor,
    cfg: &crate::config::SourceConfig,
    epoch_ns: Nanos,
    stop: StopFlag,
) -> Result<Option<Box<dyn Source>>, SourceError> {
    use crate::config::SourceType;
    Ok(match cfg.kind {
        SourceType::Off => None,
        SourceType::Synthetic => Some(Box::new(synthetic::Synthetic::new(
            sensor,
            cfg.synthetic.clone(),
            epoch_ns,
            stop,
        ))),
        SourceType::File => Some(file::build(sensor, &cfg.file, epoch_ns, stop)?),
    })
}

/// Paces frames against the wall clock: frame time `t_ns` is released no earlier than
/// `wall_start + (t_ns - epoch_ns)`.
pub(crate) struct Pacer {
    start: std::time::Instant,
    epoch_ns: Nanos,
    stop: StopFlag,
}

impl Pacer {
    pub(crate) fn new(epoch_ns: Nanos, stop: StopFlag) -> Self {
        // Sources whose timeline starts at `epoch_ns` (which may lie slightly in the
        // past, on the window grid) catch up at once, then run in real time.
        let now = now_ns();
        let behind = Duration::from_nanos((now - epoch_ns).max(0) as u64);
        let start = std::time::Instant::now()
            .checked_sub(behind)
            .unwrap_or_else(std::time::Instant::now);
        Pacer { start, epoch_ns, stop }
    }
    /// Wait until `t_ns` is due. Returns false when stopped.
    pub(crate) fn wait_until(&self, t_ns: Nanos) -> bool {
        let due = self.start + Duration::from_nanos((t_ns - self.epoch_ns).max(0) as u64);
        let now = std::time::Instant::now();
        if due > now {
            self.stop.sleep(due - now)
        } else {
            !self.stop.is_stopped()
        }
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch (the daemon's sensor clock).
pub fn now_ns() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as Nanos)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modality::Sensor;

    /// A camera that is unplugged at first, works for a while, fails mid-stream,
    /// sends one corrupt frame, comes back, and ends.
    struct Flaky {
        opens: u32,
        reads: u32,
    }

    impl Source for Flaky {
        fn info(&self) -> SourceInfo {
            SourceInfo {
                sensor: Sensor::Camera,
                description: "flaky".into(),
                nominal_rate_hz: 30.0,
            }
        }
        fn open(&mut self) -> Result<(), SourceError> {
            self.opens += 1;
            if self.opens <= 2 {
                return Err(SourceError::Open {
                    what: "/dev/video0".into(),
                    reason: "no such device".into(),
                });
            }
            Ok(())
        }
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            self.reads += 1;
            match self.reads {
                5 => Err(SourceError::Read {
                    what: "/dev/video0".into(),
                    reason: "device unplugged".into(),
                }),
                7 => Err(SourceError::BadData {
                    what: "/dev/video0".into(),
                    reason: "short frame".into(),
                }),
                r if r > 12 => Ok(None),
                r => Ok(Some(Frame {
                    t_ns: r as i64,
                    data: FrameData::Rgb8 {
                        width: 1,
                        height: 1,
                        data: vec![0, 0, 0],
                    },
                })),
            }
        }
    }

    #[test]
    fn runner_survives_unplug_and_counts_everything() {
        let health = Arc::new(SourceHealth::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let h = spawn(
            Box::new(Flaky { opens: 0, reads: 0 }),
            tx,
            health.clone(),
            StopFlag::default(),
            Duration::from_millis(10),
        )
        .unwrap();
        h.join().unwrap();
        let mut ts = Vec::new();
        while let Ok(f) = rx.try_recv() {
            ts.push(f.t_ns);
        }
        // Reads 1-4, then (after reopening) 6, 8-12: nothing accepted is lost.
        assert_eq!(ts, vec![1, 2, 3, 4, 6, 8, 9, 10, 11, 12]);
        assert_eq!(
            health.errors.load(std::sync::atomic::Ordering::Relaxed),
            4,
            "2 open failures, 1 read failure, 1 bad frame"
        );
        assert_eq!(health.reconnects.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(health.frames.load(std::sync::atomic::Ordering::Relaxed), 10);
        assert_eq!(health.state(), "ended");
    }

    #[test]
    fn full_queue_drops_and_counts_instead_of_blocking() {
        let health = Arc::new(SourceHealth::default());
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let h = spawn(
            Box::new(Flaky { opens: 2, reads: 7 }),
            tx,
            health.clone(),
            StopFlag::default(),
            Duration::from_millis(1),
        )
        .unwrap();
        h.join().unwrap();
        assert_eq!(health.frames.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert_eq!(health.frames_dropped.load(std::sync::atomic::Ordering::Relaxed), 3);
        drop(rx);
    }
}
