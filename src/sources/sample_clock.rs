//! Timestamps for sample-counted streams (an ALSA microphone): the time of each chunk
//! comes from the number of samples read, not from when the read returned, so a chunk
//! that sat in the device's buffer keeps its true time and consecutive chunks follow
//! each other without a gap or an overlap.
//!
//! The first chunk is anchored on the host clock: its first sample was captured at
//! `now − (chunk + still buffered) / rate`. Each later chunk starts where the one
//! before it ended. The device's crystal and the host clock disagree by tens of ppm,
//! and an unpaced input (a file played through ALSA) runs far ahead of real time, so
//! the two drift apart; the clock follows the host as PipeWire's and JACK's
//! delay-locked loops do, without ever losing or reordering a sample:
//! - **ahead of the host** by more than half the drift bound (`drift_ms`): the clock
//!   *slews*: each chunk is stamped a little earlier than the previous one's end (at
//!   most [`MAX_SLEW`] of its length, under one sample for 20 ms chunks at ≤ 48 kHz),
//!   in proportion to the filtered excess. It never steps backwards.
//! - **behind** by more than half the bound: it slews the other way (chunks a little
//!   later than contiguous).
//! - **behind** by more than the whole bound (samples were lost, the reader stalled):
//!   the clock steps *forward* to the host estimate (counted in `steps`); the gap is
//!   audio that was never read. It never steps back: not even after an overrun
//!   ([`SampleClock::reset`]), when the next chunk anchors afresh but no earlier than
//!   the end of the last one stamped.
//!
//! The windower places a chunk that starts within a millisecond of the previous one's
//! end right after it (see `window.rs`), so a slewed stream's samples stay contiguous.
//!
//! Pure arithmetic, always compiled and tested without a sound card.

use super::Nanos;

const NS_PER_S: i128 = 1_000_000_000;

/// Largest slew: a chunk is stamped at most this fraction of its length away from
/// the end of the one before (500 ppm: 10 µs on a 20 ms chunk, half a sample at 48 kHz).
pub const MAX_SLEW: f64 = 500e-6;
/// Time constant of the loop: an excess of `e` over the dead band is slewed away at
/// `e / SLEW_TAU_S` per second (at most [`MAX_SLEW`]).
pub const SLEW_TAU_S: f64 = 10.0;
/// Weight of each chunk's error in the filtered error (reads jitter by milliseconds).
const ERROR_WEIGHT: f64 = 0.05;

/// The sample clock of one capture stream.
#[derive(Debug, Clone)]
pub struct SampleClock {
    rate: u32,
    bound_ns: Nanos,
    /// Stamp of the next chunk (the last one's end, slewed); `None` until anchored.
    next: Option<Nanos>,
    /// End of the last chunk stamped, at the nominal rate.
    last_end: Nanos,
    /// Filtered (sample clock − host estimate), ns.
    error_ns: f64,
    /// Frames read so far.
    frames: u64,
    steps: u64,
}

/// The time of one chunk, and how the clock got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Daemon time of the chunk's first sample.
    pub t_ns: Nanos,
    /// The clock was behind the host by more than the bound and stepped forward.
    pub stepped: bool,
    /// Sample clock − host estimate before any step, ns (positive: ahead).
    pub drift_ns: Nanos,
}

impl SampleClock {
    /// A clock for `rate` frames/s that slews when it is more than `drift_ms / 2` off
    /// the host and steps forward when it is more than `drift_ms` behind.
    pub fn new(rate: u32, drift_ms: u32) -> Self {
        SampleClock {
            rate: rate.max(1),
            bound_ns: drift_ms as Nanos * 1_000_000,
            next: None,
            last_end: Nanos::MIN,
            error_ns: 0.0,
            frames: 0,
            steps: 0,
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
        let estimate = now.saturating_sub(self.duration_ns(frames.saturating_add(buffered)));
        let (t, drift, stepped) = match self.next {
            // Anchor (first chunk, or after samples were lost): on the host estimate,
            // but never before what was already stamped.
            None => {
                let t = estimate.max(self.last_end);
                self.error_ns = (t - estimate) as f64;
                (t, t - estimate, false)
            }
            Some(next) => {
                let drift = next.saturating_sub(estimate);
                if drift < -self.bound_ns {
                    self.error_ns = 0.0;
                    (estimate, drift, true)
                } else {
                    self.error_ns += ERROR_WEIGHT * (drift as f64 - self.error_ns);
                    (next, drift, false)
                }
            }
        };
        // Slew the excess over half the bound away, a fraction of a sample per chunk.
        let band = self.bound_ns as f64 / 2.0;
        let excess = if self.error_ns > band {
            self.error_ns - band
        } else if self.error_ns < -band {
            self.error_ns + band
        } else {
            0.0
        };
        let slew = (excess / 1e9 / SLEW_TAU_S).clamp(-MAX_SLEW, MAX_SLEW);
        let d = self.duration_ns(frames);
        self.last_end = t.saturating_add(d);
        self.next = Some(self.last_end.saturating_sub((d as f64 * slew).round() as Nanos));
        self.frames += frames;
        if stepped {
            self.steps += 1;
        }
        Stamp {
            t_ns: t,
            stepped,
            drift_ns: drift,
        }
    }

    /// Samples were lost (an overrun): the next chunk anchors afresh (never earlier
    /// than the end of the last chunk).
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// The clock of the same stream reopened at `rate`: it anchors afresh at its next
    /// chunk, no earlier than the end of the last chunk stamped.
    pub fn reopened(&self, rate: u32) -> SampleClock {
        SampleClock {
            rate: rate.max(1),
            next: None,
            error_ns: 0.0,
            ..self.clone()
        }
    }

    /// Times the clock stepped forward because it fell behind by more than the bound.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Filtered sample clock − host clock, ms (positive: ahead).
    pub fn offset_ms(&self) -> f64 {
        self.error_ns / 1e6
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
        assert!(!s0.stepped);
        // Reads return with jitter (±3 ms) and sometimes late with data buffered
        // behind: the stamps still advance by exactly 20 ms.
        let jitter = [3, -2, 0, 1, -3, 2];
        for (i, j) in jitter.iter().enumerate() {
            let k = i as i64 + 1;
            let s = c.stamp(320, 0, 1_000 * MS + k * 20 * MS + j * MS);
            assert_eq!(s.t_ns, 980 * MS + k * 20 * MS, "chunk {k}");
            assert!(!s.stepped);
        }
        // A reader 60 ms late finds 3 more periods buffered: the estimate accounts for them.
        let s = c.stamp(320, 960, 1_000 * MS + 7 * 20 * MS + 60 * MS);
        assert_eq!((s.t_ns, s.stepped, s.drift_ns), (980 * MS + 7 * 20 * MS, false, 0));
        assert_eq!(c.frames(), 8 * 320);
        assert_eq!(c.steps(), 0);
        // 44.1 kHz: 441 frames are 10 ms exactly; 1 frame is 22675 ns (rounded down).
        let c = SampleClock::new(44_100, 20);
        assert_eq!(c.duration_ns(441), 10 * MS);
        assert_eq!(c.duration_ns(1), 22_675);
    }

    /// A device whose crystal is `ppm` fast (negative: slow) against the host, read for
    /// `seconds` in 20 ms periods at 48 kHz with ±2 ms of read jitter: each stamp and
    /// the host's estimate at the end.
    fn run(ppm: f64, seconds: u64) -> (SampleClock, Vec<Nanos>, Nanos) {
        let mut c = SampleClock::new(48_000, 20);
        let period = 960u64;
        let host_per_period = 20e6 / (1.0 + ppm * 1e-6);
        let mut stamps = Vec::new();
        let mut host = 10_000.0 * 1e6;
        let mut last_now = 0;
        for k in 0..seconds * 50 {
            host += host_per_period;
            let jitter = ((k * 7919) % 5) as i64 - 2; // -2..=2 ms
            last_now = host as Nanos + jitter * MS;
            stamps.push(c.stamp(period, 0, last_now).t_ns);
        }
        (c, stamps, last_now)
    }

    #[test]
    fn a_drifting_crystal_is_followed_by_slewing_never_by_a_step() {
        for ppm in [100.0, -100.0, 50.0, -30.0] {
            let (c, stamps, now) = run(ppm, 2_000);
            // Never a step (in either direction), never an overlap or a gap of a sample:
            // consecutive stamps are 20 ms ± 500 ppm apart.
            assert_eq!(c.steps(), 0, "{ppm} ppm");
            for w in stamps.windows(2) {
                let d = w[1] - w[0];
                assert!((20 * MS - 10_000..=20 * MS + 10_000).contains(&d), "{ppm} ppm: {d}");
            }
            // The clock stays near the host: within the dead band (10 ms) plus the
            // loop's steady-state error (drift × 10 s = 1 ms at 100 ppm) and jitter.
            let off = stamps.last().unwrap() + 20 * MS - now;
            assert!(off.abs() < 14 * MS, "{ppm} ppm: {off} ns off after 2000 s");
            assert!(c.offset_ms().abs() < 12.0, "{ppm} ppm: {}", c.offset_ms());
        }
        // Without the loop, 100 ppm over 2000 s would be 200 ms off.
    }

    #[test]
    fn unpaced_input_runs_ahead_without_a_step_back() {
        // A file read through ALSA returns 10 s of audio in a millisecond.
        let mut c = SampleClock::new(16_000, 20);
        let mut prev: Option<Stamp> = None;
        for k in 0..500i64 {
            let s = c.stamp(320, 0, 5_000 * MS + k * 2_000);
            if let Some(p) = prev {
                let d = s.t_ns - p.t_ns;
                assert!((20 * MS - 10_000..=20 * MS).contains(&d), "chunk {k}: {d}");
            }
            assert!(!s.stepped);
            prev = Some(s);
        }
        assert_eq!(c.steps(), 0);
        assert!(c.offset_ms() > 1_000.0, "{}", c.offset_ms());
    }

    #[test]
    fn a_stall_or_a_loss_steps_forward_only() {
        let mut c = SampleClock::new(16_000, 20);
        c.stamp(320, 0, 1_000 * MS);
        c.stamp(320, 0, 1_020 * MS);
        // The reader stalled for 500 ms (no buffer info): the clock is 500 ms behind
        // the host, past the bound: it steps forward, once.
        let s = c.stamp(320, 0, 1_540 * MS);
        assert!(s.stepped && s.drift_ns < -400 * MS, "{s:?}");
        assert_eq!(s.t_ns, 1_520 * MS);
        assert_eq!(c.steps(), 1);
        assert_eq!(c.stamp(320, 0, 1_560 * MS).t_ns, 1_540 * MS);

        // An overrun lost 100 ms of samples; the driver resets the clock: it anchors
        // on the host afresh, without counting a step.
        c.reset();
        let s = c.stamp(320, 0, 1_680 * MS);
        assert_eq!((s.t_ns, s.stepped), (1_660 * MS, false));
        assert_eq!(c.steps(), 1);

        // Reset while the clock ran ahead (an unpaced input): the fresh anchor would
        // be before the samples already stamped; it is not.
        let mut c = SampleClock::new(16_000, 20);
        let mut end = 0;
        for _ in 0..200 {
            let s = c.stamp(320, 0, 5_000 * MS);
            end = s.t_ns + 20 * MS;
        }
        c.reset();
        let s = c.stamp(320, 0, 5_001 * MS);
        assert_eq!(
            s.t_ns, end,
            "anchored at the end of the last chunk, not back at the host"
        );

        // A huge bound never steps nor slews (a replayed file read faster than real time).
        let mut c = SampleClock::new(16_000, 3_600_000);
        for k in 0..100 {
            assert_eq!(c.stamp(320, 0, 5_000 * MS).t_ns, 4_980 * MS + k * 20 * MS);
        }
    }
}
