//! The source runner: one OS thread per source. It opens the driver, routes each
//! frame to its stream's edge (by modality), offers it to the frame tap, and lets the
//! error type decide the policy:
//! - [`SourceError::BadData`]: the frame is skipped and counted;
//! - [`SourceError::Read`] / [`SourceError::Open`]: the driver is reopened after a
//!   back-off that doubles up to 30 s and resets once frames flow again;
//! - a panic inside the driver: caught, counted (`panics`), then handled like a
//!   failed read, so a buggy driver is restarted rather than taking the daemon down.
//!
//! A stopped runner returns even if it was waiting to reopen; a driver blocked inside
//! a read is left to the pipeline's shutdown deadline (it cannot hold the exit).

use super::{DeviceGeometry, Frame, Source, SourceError, StopFlag, TappedFrame};
use crate::edge::{Sender, Sent};
use crate::ident::{clip, panic_message};
use crate::modality::Modality;
use crate::taps::Tap;
use crate::telemetry::{names, LogLimiter, SourceEvent, SourceStats, StreamStats};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

/// Where one stream's frames go.
pub struct Route {
    pub modality: Modality,
    pub tx: Sender<Arc<Frame>>,
    pub stats: Arc<StreamStats>,
}

/// Rejected frames in a row (and none accepted) after which a source backs off as
/// after a failed read.
pub const BAD_STREAK: u32 = 64;

/// Longest wait between reopen attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a source's runner works with: where its frames go and what it reports to.
pub struct RunnerContext {
    pub id: Arc<str>,
    /// One per stream the source declared.
    pub routes: Vec<Route>,
    pub stats: Arc<SourceStats>,
    pub stop: StopFlag,
    /// First wait before reopening a failed source (doubling to [`MAX_BACKOFF`]).
    pub restart_backoff: Duration,
    /// Every accepted frame is offered here (recorders, the live view).
    pub tap: Tap<TappedFrame>,
    /// The depth geometry a device reports at open is published here.
    pub geometry: DeviceGeometry,
}

/// Run `source` on its own thread until it ends or `stop` is set.
pub fn spawn(source: Box<dyn Source>, ctx: RunnerContext) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("src-{}", ctx.id);
    std::thread::Builder::new().name(name).spawn(runner(source, ctx))
}

/// The runner loop for `source`, to run on a thread of the caller's (the pipeline's
/// supervisor). It returns when the source ends, `stop` is set, or its windowers are gone.
pub fn runner(mut source: Box<dyn Source>, ctx: RunnerContext) -> impl FnOnce() + Send + 'static {
    let RunnerContext {
        id,
        routes,
        stats,
        stop,
        restart_backoff,
        tap,
        geometry,
    } = ctx;
    move || {
        let mut backoff = restart_backoff;
        let mut bad_log = LogLimiter::new(Duration::from_secs(10));
        // Frames rejected in a row since the last good one.
        let mut bad_streak = 0u32;
        'outer: while !stop.is_stopped() {
            let opened = catch_unwind(AssertUnwindSafe(|| source.open()));
            match opened {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stats.emit(SourceEvent::OpenFailed);
                    tracing::error!(event = names::SOURCE_OPEN_FAILED, source = %id, error = %e, retry_in_s = backoff.as_secs_f64(), "source could not be opened; retrying");
                    if !stop.sleep(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(p) => {
                    stats.emit(SourceEvent::Panicked);
                    tracing::error!(event = names::SOURCE_PANICKED, source = %id, error = %clip(&panic_message(&*p), 200), retry_in_s = backoff.as_secs_f64(), "driver panicked while opening; restarting it");
                    if !stop.sleep(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            stats.emit(SourceEvent::Opened);
            // What the device granted may differ from what was asked: health shows it.
            let description = source.info().description;
            stats.set_description(description.clone());
            stats.set_driver_status(source.status());
            if let Some(g) = source.depth_geometry() {
                tracing::info!(event = names::DEPTH_GEOMETRY, source = %id, baseline_m = g.baseline_m, focal_px = g.focal_px, "depth → disparity uses the device's own geometry");
                geometry.set(&id, g);
            }
            let mut status_at = std::time::Instant::now();
            tracing::info!(event = names::SOURCE_STARTED, source = %id, description = %description, driver = %serde_json::Value::Object(source.status()), "source running");
            loop {
                if stop.is_stopped() {
                    break 'outer;
                }
                let next = catch_unwind(AssertUnwindSafe(|| source.next_frame()));
                if status_at.elapsed() >= Duration::from_secs(1) {
                    status_at = std::time::Instant::now();
                    if let Ok(st) = catch_unwind(AssertUnwindSafe(|| source.status())) {
                        stats.set_driver_status(st);
                    }
                }
                match next {
                    Ok(Ok(Some(frame))) => {
                        backoff = restart_backoff;
                        bad_streak = 0;
                        stats.emit(SourceEvent::Frame { t_ns: frame.t_ns });
                        let m = frame.data.modality();
                        let Some(route) = routes.iter().find(|r| r.modality == m) else {
                            stats.emit(SourceEvent::BadData);
                            if let Some(n) = bad_log.allow() {
                                tracing::warn!(event = names::SOURCE_BAD_DATA, source = %id, modality = %m, suppressed = n, "the driver produced a stream it did not declare; frame skipped");
                            }
                            continue;
                        };
                        let frame = Arc::new(frame);
                        if tap.is_listened() {
                            tap.offer(Arc::new(TappedFrame {
                                source: id.clone(),
                                frame: frame.clone(),
                            }));
                        }
                        match route.tx.send(frame) {
                            Sent::Queued => {}
                            Sent::DroppedNewest(_) | Sent::DroppedOldest(_) => stats.emit(SourceEvent::FrameDropped),
                            Sent::Closed(_) => {
                                // The windower is gone; the supervisor reports why.
                                break 'outer;
                            }
                        }
                    }
                    Ok(Ok(None)) => {
                        if stop.is_stopped() {
                            break 'outer;
                        }
                        tracing::info!(event = names::SOURCE_ENDED, source = %id, "source reached the end of its stream");
                        stats.emit(SourceEvent::Ended);
                        return;
                    }
                    Ok(Err(e @ SourceError::BadData { .. })) => {
                        stats.emit(SourceEvent::BadData);
                        bad_streak += 1;
                        if let Some(n) = bad_log.allow() {
                            tracing::warn!(event = names::SOURCE_BAD_DATA, source = %id, error = %clip(&e.to_string(), 300), suppressed = n, "frame skipped");
                        }
                        // Every frame rejected (a folder of oversized images read as
                        // fast as it decodes): back off as after a failed read, so a
                        // source that yields nothing cannot spin a core.
                        if bad_streak >= BAD_STREAK {
                            bad_streak = 0;
                            tracing::warn!(event = names::SOURCE_ALL_REJECTED, source = %id, frames = BAD_STREAK, retry_in_s = backoff.as_secs_f64(), "every frame of the source is being rejected; backing off");
                            if !stop.sleep(backoff) {
                                break 'outer;
                            }
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                    Ok(Err(e)) => {
                        stats.emit(SourceEvent::Failed);
                        tracing::error!(event = names::SOURCE_FAILED, source = %id, error = %clip(&e.to_string(), 300), retry_in_s = backoff.as_secs_f64(), "source failed; reopening");
                        if !stop.sleep(backoff) {
                            break 'outer;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue 'outer;
                    }
                    Err(p) => {
                        stats.emit(SourceEvent::Panicked);
                        tracing::error!(event = names::SOURCE_PANICKED, source = %id, error = %clip(&panic_message(&*p), 200), retry_in_s = backoff.as_secs_f64(), "driver panicked; restarting it");
                        if !stop.sleep(backoff) {
                            break 'outer;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue 'outer;
                    }
                }
            }
        }
        stats.emit(SourceEvent::Stopped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::edge::{edge, WhenFull};
    use crate::sources::{FrameData, SourceInfo, StreamInfo};
    use std::sync::atomic::Ordering::Relaxed;

    /// A camera that is unplugged at first, works for a while, fails mid-stream,
    /// sends one corrupt frame, panics once, comes back, and ends.
    struct Flaky {
        opens: u32,
        reads: u32,
    }

    impl Source for Flaky {
        fn info(&self) -> SourceInfo {
            SourceInfo {
                description: "flaky".into(),
                streams: vec![StreamInfo {
                    modality: Modality::Vision,
                    nominal_rate_hz: 30.0,
                }],
            }
        }
        fn clock(&self) -> Arc<dyn Clock> {
            Arc::new(SystemClock)
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
                9 => panic!("driver bug"),
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

    fn run(f: Flaky, cap: usize) -> (Arc<SourceStats>, Vec<i64>) {
        let stats = Arc::new(SourceStats::new("cam", "test"));
        let (tx, rx) = edge("cam/vision", cap, WhenFull::DropNewest);
        let route = Route {
            modality: Modality::Vision,
            tx,
            stats: Arc::new(StreamStats::new("cam", Modality::Vision)),
        };
        let h = spawn(
            Box::new(f),
            RunnerContext {
                id: "cam".into(),
                routes: vec![route],
                stats: stats.clone(),
                stop: StopFlag::default(),
                restart_backoff: Duration::from_millis(5),
                tap: Tap::new(),
                geometry: super::super::DeviceGeometry::default(),
            },
        )
        .unwrap();
        h.join().unwrap();
        (stats, rx.drain().iter().map(|f| f.t_ns).collect())
    }

    #[test]
    fn runner_survives_unplug_and_panic_and_counts_everything() {
        let (stats, ts) = run(Flaky { opens: 0, reads: 0 }, 100);
        // Reads 1-4, then (after reopening) 6, 8, (panic, reopen) 10-12: nothing accepted is lost.
        assert_eq!(ts, vec![1, 2, 3, 4, 6, 8, 10, 11, 12]);
        assert_eq!(
            stats.errors.load(Relaxed),
            4,
            "2 open failures, 1 read failure, 1 bad frame"
        );
        assert_eq!(stats.panics.load(Relaxed), 1);
        assert_eq!(stats.reconnects.load(Relaxed), 2);
        assert_eq!(stats.frames.load(Relaxed), 9);
        assert_eq!(stats.state(), crate::bus::msg::SourceState::Ended);
    }

    /// Every frame is rejected, as fast as the driver can make them.
    struct AllBad(Arc<std::sync::atomic::AtomicU64>);

    impl Source for AllBad {
        fn info(&self) -> SourceInfo {
            Flaky { opens: 0, reads: 0 }.info()
        }
        fn clock(&self) -> Arc<dyn Clock> {
            Arc::new(SystemClock)
        }
        fn open(&mut self) -> Result<(), SourceError> {
            Ok(())
        }
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            self.0.fetch_add(1, Relaxed);
            Err(SourceError::BadData {
                what: "frames/0001.png".into(),
                reason: "image larger than `limits.max_image_side`".into(),
            })
        }
    }

    #[test]
    fn a_source_whose_every_frame_is_rejected_backs_off() {
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stats = Arc::new(SourceStats::new("cam", "test"));
        let (tx, _rx) = edge("cam/vision", 4, WhenFull::DropNewest);
        let stop = StopFlag::default();
        let h = spawn(
            Box::new(AllBad(reads.clone())),
            RunnerContext {
                id: "cam".into(),
                routes: vec![Route {
                    modality: Modality::Vision,
                    tx,
                    stats: Arc::new(StreamStats::new("cam", Modality::Vision)),
                }],
                stats: stats.clone(),
                stop: stop.clone(),
                restart_backoff: Duration::from_millis(100),
                tap: Tap::new(),
                geometry: super::super::DeviceGeometry::default(),
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        stop.stop();
        h.join().unwrap();
        // Back-offs of 0.1, 0.2, 0.4 s… fit about 3 streaks in a second (a spinning
        // runner reads hundreds of thousands).
        let n = reads.load(Relaxed);
        assert!(
            (BAD_STREAK as u64..=5 * BAD_STREAK as u64).contains(&n),
            "{n} reads in 1 s"
        );
        assert_eq!(stats.errors.load(Relaxed), n);
    }

    #[test]
    fn full_queue_drops_and_counts_instead_of_blocking() {
        let (stats, ts) = run(Flaky { opens: 2, reads: 9 }, 2);
        assert_eq!(ts, vec![10, 11]);
        assert_eq!(stats.frames.load(Relaxed), 3);
        assert_eq!(stats.frames_dropped.load(Relaxed), 1);
    }
}
