//! Clock domains. Every stream carries the clock its timestamps are in, so windowing
//! and idle flushing compare a stream's data with that stream's own "now", never wall
//! time with sensor time (copper-rs passes a clock in for the same reason: a replay at
//! any speed gives the same windows).
//!
//! - [`ClockKind::Realtime`]: timestamps are system realtime (ns since the Unix epoch);
//!   synthetic live sources and drivers that stamp with `CLOCK_REALTIME`.
//! - [`ClockKind::Monotonic`]: a device or `CLOCK_MONOTONIC` stamp, mapped onto the
//!   daemon's realtime axis with an offset measured when the stream opened.
//! - [`ClockKind::Replay`]: recording time. Paced replays advance it with the wall
//!   clock from their start; fast replays advance it only as frames are read, so
//!   idle flushing can never close a window before its data has been read.
//! - [`ClockKind::Ros`]: a ROS 2 publisher's `header.stamp` (its system time, or a
//!   simulation's `/clock`): "now" is the latest stamp received plus the wall time
//!   since it arrived.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Time in nanoseconds on the daemon's axis (Unix epoch for live sources).
pub type Nanos = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    Realtime,
    Monotonic,
    Replay,
    Ros,
}

impl ClockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::Realtime => "realtime",
            ClockKind::Monotonic => "monotonic",
            ClockKind::Replay => "replay",
            ClockKind::Ros => "ros",
        }
    }
}

impl fmt::Display for ClockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream's clock: "now", in the stream's timestamps.
pub trait Clock: Send + Sync {
    fn kind(&self) -> ClockKind;
    fn now_ns(&self) -> Nanos;
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as Nanos)
        .unwrap_or(0)
}

/// System realtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn kind(&self) -> ClockKind {
        ClockKind::Realtime
    }
    fn now_ns(&self) -> Nanos {
        realtime_ns()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> Nanos {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as Nanos * 1_000_000_000 + ts.tv_nsec as Nanos
}

/// A monotonic (device) clock mapped onto the daemon's realtime axis.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    /// realtime − monotonic, measured at creation.
    offset_ns: Nanos,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            offset_ns: realtime_ns() - monotonic_ns(),
        }
    }
    /// A device stamp (monotonic ns) on the daemon's axis.
    pub fn map(&self, device_ns: Nanos) -> Nanos {
        device_ns + self.offset_ns
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn kind(&self) -> ClockKind {
        ClockKind::Monotonic
    }
    fn now_ns(&self) -> Nanos {
        self.map(monotonic_ns())
    }
}

/// Recording time of a replay (or of an unpaced synthetic source).
#[derive(Debug)]
pub struct ReplayClock {
    /// Highest time read so far.
    read: AtomicI64,
    /// For a paced replay: recording time `t0` was due at wall instant `at`.
    anchor: OnceLock<(Nanos, Instant)>,
}

impl ReplayClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ReplayClock {
            read: AtomicI64::new(Nanos::MIN),
            anchor: OnceLock::new(),
        })
    }
    /// From now on, time also advances with the wall clock: `t0` is due at `at`.
    pub fn pace(&self, t0: Nanos, at: Instant) {
        let _ = self.anchor.set((t0, at));
    }
    /// A frame stamped `t` has been read.
    pub fn advance(&self, t: Nanos) {
        self.read.fetch_max(t, Ordering::Relaxed);
    }
    /// When recording time `t` is due on the wall clock (paced replays).
    pub fn due(&self, t: Nanos) -> Option<Instant> {
        self.anchor
            .get()
            .map(|(t0, at)| *at + std::time::Duration::from_nanos((t - t0).max(0) as u64))
    }
}

impl Clock for ReplayClock {
    fn kind(&self) -> ClockKind {
        ClockKind::Replay
    }
    fn now_ns(&self) -> Nanos {
        let read = self.read.load(Ordering::Relaxed);
        match self.anchor.get() {
            Some((t0, at)) => read.max(t0 + at.elapsed().as_nanos() as Nanos),
            None => read,
        }
    }
}

impl Clock for Arc<ReplayClock> {
    fn kind(&self) -> ClockKind {
        ClockKind::Replay
    }
    fn now_ns(&self) -> Nanos {
        (**self).now_ns()
    }
}

/// A ROS 2 publisher's clock, followed from the stamps it sends.
#[derive(Debug)]
pub struct RosClock {
    /// Latest stamp − realtime at its arrival; `Nanos::MIN` until the first.
    offset_ns: AtomicI64,
}

impl RosClock {
    pub fn new() -> Arc<Self> {
        Arc::new(RosClock {
            offset_ns: AtomicI64::new(Nanos::MIN),
        })
    }
    /// A message stamped `stamp_ns` arrived now.
    pub fn observe(&self, stamp_ns: Nanos) {
        self.offset_ns.store(
            stamp_ns.saturating_sub(realtime_ns()).max(Nanos::MIN + 1),
            Ordering::Relaxed,
        );
    }
}

impl Clock for Arc<RosClock> {
    fn kind(&self) -> ClockKind {
        ClockKind::Ros
    }
    /// Before the first stamp: `Nanos::MIN` (no window can be due).
    fn now_ns(&self) -> Nanos {
        match self.offset_ns.load(Ordering::Relaxed) {
            Nanos::MIN => Nanos::MIN,
            off => realtime_ns().saturating_add(off),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ros_time_follows_the_latest_stamp() {
        let c = RosClock::new();
        assert_eq!(c.now_ns(), Nanos::MIN);
        // A simulation at t = 100 s.
        c.observe(100_000_000_000);
        let now = c.now_ns();
        assert!((100_000_000_000..100_100_000_000).contains(&now), "{now}");
        // The simulation restarted: time goes with it.
        c.observe(5_000_000_000);
        assert!(c.now_ns() < 6_000_000_000);
        assert_eq!(c.kind().as_str(), "ros");
    }

    #[test]
    fn unpaced_replay_time_is_what_was_read() {
        let c = ReplayClock::new();
        assert_eq!(c.now_ns(), Nanos::MIN);
        c.advance(5);
        c.advance(3);
        assert_eq!(c.now_ns(), 5);
        assert_eq!(c.kind(), ClockKind::Replay);
    }

    #[test]
    fn paced_replay_advances_with_the_wall_clock() {
        let c = ReplayClock::new();
        let start = Instant::now() - std::time::Duration::from_millis(500);
        c.pace(1_000, start);
        let now = c.now_ns();
        assert!(now >= 1_000 + 500_000_000, "{now}");
        assert_eq!(
            c.due(1_000 + 200_000_000),
            Some(start + std::time::Duration::from_millis(200))
        );
    }

    #[test]
    fn monotonic_maps_onto_realtime() {
        let m = MonotonicClock::new();
        let d = (m.now_ns() - realtime_ns()).abs();
        assert!(d < 50_000_000, "{d}");
    }
}
