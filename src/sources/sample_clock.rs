//! Timestamps for sample-counted streams (an ALSA microphone): the time of each chunk
//! comes from the number of samples read since an anchor, not from when the read
//! returned, so a chunk that sat in the device's buffer keeps its true time and
//! consecutive chunks are exactly `samples / rate` apart.
//!
//! The anchor is the daemon-clock time of the first sample: at the first read,
//! `now − (chunk + still buffered) / rate`. After that, `t = anchor + read / rate`.
//! The device's crystal and the host clock disagree by a few ppm, and a stalled
//! reader or a lost buffer shifts the estimate; when the sample clock and the host
//! estimate differ by more than the drift bound, the clock re-anchors on the host
//! estimate (counted, so health shows how often). After an overrun (samples lost)
//! the driver calls [`SampleClock::reset`] and the next chunk anchors afresh.
//!
//! Pure arithmetic, always compiled and tested without a sound card.

use super::Nanos;

const NS_PER_S: i128 = 1_000_000_000;

/// The sample clock of one capture stream.
#[derive(Debug, Clone)]
pub struct SampleClock {
    rate: u32,
    drift_ns: Nanos,
    /// (daemon time, frame count) of the anchor sample.
    anchor: Option<(Nanos, u64)>,
    /// Frames read so far.
    frames: u64,
    reanchors: u64,
}

/// The time of one chunk, and whether the clock re-anchored to stamp it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Daemon time of the chunk's first sample.
    pub t_ns: Nanos,
    /// The sample clock had drifted past the bound and was re-anchored here.
    pub reanchored: bool,
    /// Sample clock − host estimate before any re-anchoring, ns.
    pub drift_ns: Nanos,
}

impl SampleClock {
    /// A clock for `rate` frames/s that re-anchors when it is more than `drift_ms` off.
    pub fn new(rate: u32, drift_ms: u32) -> Self {
        SampleClock {
            rate: rate.max(1),
            drift_ns: drift_ms as Nanos * 1_000_000,
            anchor: None,
            frames: 0,
            reanchors: 0,
        }
    }

    /// Duration of `frames` frames, ns.
    pub fn duration_ns(&self, frames: u64) -> Nanos {
        (frames as i128 * NS_PER_S / self.rate as i128) as Nanos
    }

    /// A chunk of `frames` frames was just read at daemon time `now`, with `buffered`
    /// frames still waiting in the device buffer behind it: its first sample's time.
    pub fn stamp(&mut self, frames: u64, buffered: u64, now: Nanos) -> Stamp {
        // Where the host clock places the chunk's first sample.
        let estimate = now - self.duration_ns(frames.saturating_add(buffered));
        let (anchor_t, anchor_frame) = *self.anchor.get_or_insert((estimate, self.frames));
        let t = anchor_t + self.duration_ns(self.frames - anchor_frame);
        let drift = t - estimate;
        let mut stamp = Stamp {
            t_ns: t,
            reanchored: false,
            drift_ns: drift,
        };
        if drift.abs() > self.drift_ns {
            self.anchor = Some((estimate, self.frames));
            self.reanchors += 1;
            stamp.t_ns = estimate;
            stamp.reanchored = true;
        }
        self.frames += frames;
        stamp
    }

    /// Samples were lost (an overrun): the next chunk anchors afresh.
    pub fn reset(&mut self) {
        self.anchor = None;
    }

    /// Times the clock re-anchored because it drifted past the bound.
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }

    /// Frames stamped so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn chunks_are_exactly_samples_over_rate_apart() {
        let mut c = SampleClock::new(16_000, 20);
        // First chunk of 320 frames (20 ms) read at t = 1 s: it started 20 ms before.
        let s0 = c.stamp(320, 0, 1_000 * MS);
        assert_eq!(s0.t_ns, 980 * MS);
        assert!(!s0.reanchored);
        // Reads return with jitter (±3 ms) and sometimes late with data buffered
        // behind: the stamps still advance by exactly 20 ms.
        let jitter = [3, -2, 0, 1, -3, 2];
        for (i, j) in jitter.iter().enumerate() {
            let k = i as i64 + 1;
            let s = c.stamp(320, 0, 1_000 * MS + k * 20 * MS + j * MS);
            assert_eq!(s.t_ns, 980 * MS + k * 20 * MS, "chunk {k}");
            assert!(!s.reanchored);
        }
        // A reader 60 ms late finds 3 more periods buffered: the estimate accounts for them.
        let s = c.stamp(320, 960, 1_000 * MS + 7 * 20 * MS + 60 * MS);
        assert_eq!((s.t_ns, s.reanchored, s.drift_ns), (980 * MS + 7 * 20 * MS, false, 0));
        assert_eq!(c.frames(), 8 * 320);
        assert_eq!(c.reanchors(), 0);
        // 44.1 kHz: 441 frames are 10 ms exactly; 1 frame is 22675 ns (rounded down).
        let c = SampleClock::new(44_100, 20);
        assert_eq!(c.duration_ns(441), 10 * MS);
        assert_eq!(c.duration_ns(1), 22_675);
    }

    #[test]
    fn drift_past_the_bound_reanchors() {
        // The device runs 0.1 % fast against the host: 1 ms of drift per second.
        let mut c = SampleClock::new(48_000, 20);
        let period = 960u64; // 20 ms
        let host_per_period = 20 * MS * 1000 / 1001; // the host sees each period shorter
        let mut now = 10_000 * MS;
        let mut first = None;
        let mut reanchored_at = None;
        for k in 0..2_000u64 {
            now += host_per_period;
            let s = c.stamp(period, 0, now);
            let t0 = *first.get_or_insert(s.t_ns);
            if s.reanchored {
                reanchored_at = Some(k);
                assert!(s.drift_ns > 20 * MS && s.drift_ns < 21 * MS, "{}", s.drift_ns);
                assert_eq!(s.t_ns, now - 20 * MS, "re-anchored on the host estimate");
                break;
            }
            assert_eq!(s.t_ns, t0 + k as i64 * 20 * MS);
        }
        // 20 ms of drift at 1 ms/s: after about 20 s = 1000 periods.
        let k = reanchored_at.expect("re-anchored");
        assert!((1_000..1_003).contains(&k), "{k}");
        assert_eq!(c.reanchors(), 1);
        // From the new anchor on, stamps are again samples/rate apart.
        let a = c.stamp(period, 0, now + host_per_period).t_ns;
        let b = c.stamp(period, 0, now + 2 * host_per_period).t_ns;
        assert_eq!(b - a, 20 * MS);
        // A clock late by more than the bound (the reader stalled, no buffer info)
        // re-anchors too, in the other direction.
        let before = c.reanchors();
        let s = c.stamp(period, 0, now + 3 * host_per_period + 500 * MS);
        assert!(s.reanchored && s.drift_ns < -400 * MS, "{s:?}");
        assert_eq!(c.reanchors(), before + 1);
    }

    #[test]
    fn reset_anchors_afresh_without_counting_a_reanchor() {
        let mut c = SampleClock::new(16_000, 20);
        c.stamp(320, 0, 1_000 * MS);
        // An overrun lost 100 ms of samples; the driver resets the clock.
        c.reset();
        let s = c.stamp(320, 0, 1_140 * MS);
        assert_eq!((s.t_ns, s.reanchored), (1_120 * MS, false));
        assert_eq!(c.stamp(320, 0, 1_160 * MS).t_ns, 1_140 * MS);
        assert_eq!(c.reanchors(), 0);
        // A huge bound never re-anchors (a replayed file read faster than real time).
        let mut c = SampleClock::new(16_000, 3_600_000);
        for k in 0..100 {
            assert_eq!(c.stamp(320, 0, 5_000 * MS).t_ns, 4_980 * MS + k * 20 * MS);
        }
    }
}
