//! Windowing: cut each sensor's frame stream into clips on a common time grid.
//!
//! Window `k` covers `[origin + k·hop, origin + k·hop + length)` in sensor time for
//! every modality, so equal `seq` means equal span across sensors. A window is closed
//! when the stream's watermark (the newest data time) passes its end, or by
//! [`Windower::flush`] at end of stream, or by [`Windower::advance`] when the stream's
//! own clock says a quiet sensor's windows are overdue. A window whose data covers
//! less than `min_coverage` of its span is dropped and reported, never silently.
//!
//! The windower is a pure state machine: frames and times in, [`Outcome`]s out. It
//! never reads a clock itself, and it bounds its buffer: a frame it cannot place
//! (an impossible format, an image beyond `[limits]`, a buffer full because a
//! driver's timestamps stopped advancing) is rejected and reported.

use crate::config::WindowConfig;
use crate::modality::Modality;
use crate::sources::{Frame, FrameData, ImageLimits, ImuSample, Nanos};
use std::collections::VecDeque;
use std::sync::Arc;

/// Grid and acceptance parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowParams {
    pub length_ns: Nanos,
    pub hop_ns: Nanos,
    pub origin_ns: Nanos,
    pub min_coverage: f64,
}

impl WindowParams {
    pub fn from_config(w: &WindowConfig) -> Self {
        WindowParams {
            length_ns: (w.length_s * 1e9).round() as i64,
            hop_ns: (w.hop_s * 1e9).round() as i64,
            origin_ns: w.origin_ns,
            min_coverage: w.min_coverage,
        }
    }
    pub fn start(&self, k: i64) -> Nanos {
        self.origin_ns + k * self.hop_ns
    }
    pub fn end(&self, k: i64) -> Nanos {
        self.start(k) + self.length_ns
    }
    /// Index of the latest window starting at or before `t`.
    pub fn index_at(&self, t: Nanos) -> i64 {
        (t - self.origin_ns).div_euclid(self.hop_ns)
    }
    /// The grid point at or before `t` (where sources start their timelines).
    pub fn align_down(&self, t: Nanos) -> Nanos {
        self.start(self.index_at(t))
    }
}

/// The data of one window.
#[derive(Debug, Clone)]
pub enum WindowData {
    /// Image-like frames (RGB, depth or thermal), in time order; shared with the
    /// windower's buffer and with overlapping windows, never copied.
    Frames(Vec<Arc<Frame>>),
    /// Exactly `length · sample_rate` interleaved sample frames; gaps are zeros.
    /// `valid` counts the sample frames up to the last one with data: a stream that
    /// ends mid-window gives a shorter clip, which preprocessing treats as official
    /// ImageBind treats a short clip (fewer fbank frames, padded afterwards).
    Audio {
        sample_rate: u32,
        channels: u16,
        samples: Vec<f32>,
        valid: usize,
    },
    /// IMU readings with their times, in time order.
    Imu(Vec<(Nanos, ImuSample)>),
}

/// A closed window, ready for preprocessing.
#[derive(Debug, Clone)]
pub struct Window {
    /// The source id (the user's name for it).
    pub source: Arc<str>,
    pub modality: Modality,
    pub seq: i64,
    pub t_start_ns: Nanos,
    pub t_end_ns: Nanos,
    /// Fraction of the span covered by data, in [0, 1].
    pub coverage: f64,
    pub data: WindowData,
}

impl Window {
    pub fn modality(&self) -> Modality {
        self.modality
    }
}

/// Why a window was not emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Too little data (coverage below `min_coverage`).
    Coverage,
}

/// What pushing data produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ready(Window),
    Dropped {
        seq: i64,
        reason: DropReason,
        coverage: f64,
    },
    /// A frame the windower cannot place (impossible audio format); it is discarded.
    Rejected {
        reason: String,
    },
    /// `count` frames arrived after their windows had closed and were discarded.
    LateFrames {
        count: u64,
    },
    /// The stream's time moved by more than `limits.max_time_jump_s` and stayed there
    /// ([`JUMP_CONFIRM`] frames agreed): the open windows were closed (their outcomes
    /// come before this one) and the grid restarted at `to_ns`.
    TimeJump {
        from_ns: Nanos,
        to_ns: Nanos,
    },
}

/// Frames that must agree on a new timeline before a windower follows a jump; until
/// then each is rejected as a bad timestamp (one wild timestamp never moves the grid).
pub const JUMP_CONFIRM: u32 = 3;

pub use crate::sources::{MAX_CHANNELS, MAX_SAMPLE_RATE};

/// Windows above this many behind the watermark are skipped in one step (a long gap).
const MAX_CATCH_UP: i64 = 10_000;

/// Bounds a windower enforces on what it buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLimits {
    pub image: ImageLimits,
    /// Most frames (audio: chunks) buffered at once.
    pub max_frames: usize,
    /// Most bytes of frames buffered at once (`limits.max_window_bytes`).
    pub max_bytes: u64,
    /// A frame this far before the open windows or after the stream's time is a
    /// suspect timestamp (see [`Outcome::TimeJump`]).
    pub max_time_jump_ns: Nanos,
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            image: ImageLimits::default(),
            max_frames: 20_000,
            max_bytes: 512 << 20,
            max_time_jump_ns: 60_000_000_000,
        }
    }
}

/// Longest audio chunk accepted, in seconds (a driver's chunk is milliseconds long).
pub const MAX_AUDIO_CHUNK_S: u64 = 10;

/// Per-stream windower.
pub struct Windower {
    source: Arc<str>,
    modality: Modality,
    p: WindowParams,
    limits: WindowLimits,
    nominal_rate_hz: f64,
    next_k: Option<i64>,
    frames: VecDeque<Arc<Frame>>,
    /// Bytes held by `frames` (see [`FrameData::byte_len`]).
    bytes: u64,
    watermark: Nanos,
    /// Time of the newest data point (frame time; audio: last sample).
    last_point: Nanos,
    /// Frames off the timeline so far: the newest one's time and how many agree.
    suspect: Option<(Nanos, u32)>,
}

impl Windower {
    pub fn new(source: &str, modality: Modality, params: WindowParams, nominal_rate_hz: f64) -> Self {
        Windower {
            source: source.into(),
            modality,
            p: params,
            limits: WindowLimits::default(),
            nominal_rate_hz: nominal_rate_hz.max(1e-6),
            next_k: None,
            frames: VecDeque::new(),
            bytes: 0,
            watermark: Nanos::MIN,
            last_point: Nanos::MIN,
            suspect: None,
        }
    }

    /// Time just past a frame's data.
    fn data_end(f: &Frame) -> Nanos {
        match &f.data {
            FrameData::Audio {
                sample_rate,
                channels,
                samples,
            } => {
                let n = samples.len() / (*channels).max(1) as usize;
                f.t_ns + (n as i128 * 1_000_000_000 / (*sample_rate).max(1) as i128) as Nanos
            }
            _ => f.t_ns,
        }
    }

    /// Whether all of a frame's data lies before `t` (so no window from `t` on needs it).
    fn before(f: &Frame, t: Nanos) -> bool {
        match f.data {
            FrameData::Audio { .. } => Self::data_end(f) <= t,
            _ => f.t_ns < t,
        }
    }

    /// The bounds this windower enforces.
    pub fn limits(&self) -> WindowLimits {
        self.limits
    }

    pub fn with_limits(mut self, limits: WindowLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn modality(&self) -> Modality {
        self.modality
    }

    /// Add a frame; returns the windows it closed.
    pub fn push(&mut self, frame: impl Into<Arc<Frame>>) -> Vec<Outcome> {
        let frame: Arc<Frame> = frame.into();
        let mut out = Vec::new();
        let reject = |out: &mut Vec<Outcome>, reason: String| {
            out.push(Outcome::Rejected { reason });
        };
        if frame.data.modality() != self.modality {
            reject(
                &mut out,
                format!("a {} frame on the {} stream", frame.data.modality(), self.modality),
            );
            return out;
        }
        if let Some((w, h)) = frame.data.image_size() {
            if let Err(e) = self.limits.image.check(w, h).and_then(|_| frame.data.check_size()) {
                reject(&mut out, e);
                return out;
            }
        }
        // A full buffer takes only a frame that closes the oldest open window (time
        // moves on again); anything else would grow it without bound.
        let closes = self.next_k.is_some_and(|k| Self::data_end(&frame) >= self.p.end(k));
        if self.frames.len() >= self.limits.max_frames && !closes {
            reject(
                &mut out,
                format!(
                    "{} frames buffered (`limits.max_window_frames`): the driver's timestamps stopped advancing (stuck at {} ns)",
                    self.frames.len(),
                    frame.t_ns
                ),
            );
            return out;
        }
        let size = frame.data.byte_len();
        if size > self.limits.max_bytes || (self.bytes + size > self.limits.max_bytes && !closes) {
            reject(
                &mut out,
                format!(
                    "a {size}-byte frame does not fit: {} bytes are buffered and `limits.max_window_bytes` is {}",
                    self.bytes, self.limits.max_bytes
                ),
            );
            return out;
        }
        if let Some(reason) = Self::bad_audio(&frame.data) {
            reject(&mut out, reason);
            return out;
        }
        if let FrameData::Imu(r) = &frame.data {
            if r.accel.iter().chain(&r.gyro).any(|v| !v.is_finite()) {
                reject(
                    &mut out,
                    format!(
                        "IMU reading holds NaN or infinite values: accel {:?}, gyro {:?}",
                        r.accel, r.gyro
                    ),
                );
                return out;
            }
        }
        if let Some(k) = self.next_k {
            let jump = self.limits.max_time_jump_ns;
            let now = self.last_point.max(self.watermark).max(self.p.start(k));
            let off = if frame.t_ns < self.p.start(k).saturating_sub(jump) {
                Some(frame.t_ns.saturating_sub(self.p.start(k)))
            } else if frame.t_ns > now.saturating_add(jump) {
                Some(frame.t_ns.saturating_sub(now))
            } else {
                None
            };
            match off {
                None => self.suspect = None,
                Some(off) => {
                    let n = match self.suspect {
                        Some((t, n)) if frame.t_ns >= t && frame.t_ns - t <= jump => n + 1,
                        _ => 1,
                    };
                    self.suspect = Some((frame.t_ns, n));
                    if n < JUMP_CONFIRM {
                        reject(
                            &mut out,
                            format!(
                                "timestamp {} ns is {:+.1} s off the stream's time (`limits.max_time_jump_s`); skipped unless {JUMP_CONFIRM} frames in a row agree",
                                frame.t_ns,
                                off as f64 / 1e9
                            ),
                        );
                        return out;
                    }
                    // The stream's time really moved (a clock set, a device reset):
                    // close what is open, then restart the grid at the new time.
                    let from_ns = self.last_point;
                    out.extend(self.flush());
                    self.next_k = None;
                    self.watermark = Nanos::MIN;
                    self.last_point = Nanos::MIN;
                    self.suspect = None;
                    out.push(Outcome::TimeJump {
                        from_ns,
                        to_ns: frame.t_ns,
                    });
                }
            }
        }
        let k0 = *self.next_k.get_or_insert_with(|| self.p.index_at(frame.t_ns));
        if Self::before(&frame, self.p.start(k0)) {
            out.push(Outcome::LateFrames { count: 1 });
            return out;
        }
        let end = Self::data_end(&frame);
        self.watermark = self.watermark.max(end);
        self.last_point = self.last_point.max(if end > frame.t_ns { end - 1 } else { frame.t_ns });
        self.bytes += size;
        self.frames.push_back(frame);
        self.close_until(|end, wm| wm >= end, &mut out);
        out
    }

    /// Why an audio chunk cannot be windowed, whatever a driver reports (`None`: it can).
    fn bad_audio(data: &FrameData) -> Option<String> {
        let FrameData::Audio {
            sample_rate,
            channels,
            samples,
        } = data
        else {
            return None;
        };
        if !(1_000..=MAX_SAMPLE_RATE).contains(sample_rate) || *channels == 0 || *channels > MAX_CHANNELS {
            return Some(format!(
                "audio chunk at {sample_rate} Hz with {channels} channels (expected 1000..={MAX_SAMPLE_RATE} Hz, 1..={MAX_CHANNELS} channels)"
            ));
        }
        if samples.len() as u64 > *sample_rate as u64 * *channels as u64 * MAX_AUDIO_CHUNK_S {
            return Some(format!(
                "audio chunk of {} samples is longer than {MAX_AUDIO_CHUNK_S} s",
                samples.len()
            ));
        }
        if samples.iter().any(|v| !v.is_finite()) {
            return Some("audio chunk holds NaN or infinite samples".into());
        }
        if samples.len() % *channels as usize != 0 {
            return Some(format!(
                "audio chunk of {} samples is not a whole number of {channels}-channel frames",
                samples.len()
            ));
        }
        None
    }

    /// The stream's clock says no data before `t` is still to come (a quiet sensor):
    /// close every open window that ends at or before `t`.
    pub fn advance(&mut self, t: Nanos) -> Vec<Outcome> {
        let mut out = Vec::new();
        if self.next_k.is_none() || t <= self.watermark {
            return out;
        }
        self.watermark = t;
        self.close_until(|end, wm| wm >= end, &mut out);
        out
    }

    /// Close every window that has started before the watermark (end of stream, or
    /// the sensor went quiet). Later frames go to later windows.
    pub fn flush(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        let (length, last) = (self.p.length_ns, self.last_point);
        self.close_until(|end, _| end - length <= last, &mut out);
        self.frames.clear();
        self.bytes = 0;
        out
    }

    fn close_until(&mut self, ready: impl Fn(Nanos, Nanos) -> bool, out: &mut Vec<Outcome>) {
        let Some(mut k) = self.next_k else { return };
        // Skip a long gap in one step: every window in it would be empty.
        let newest = self.p.index_at(self.watermark);
        if newest - k > MAX_CATCH_UP {
            k = newest - MAX_CATCH_UP;
        }
        while ready(self.p.end(k), self.watermark) {
            let (start, end) = (self.p.start(k), self.p.end(k));
            let w = self.extract(k, start, end);
            if w.coverage + 1e-9 >= self.p.min_coverage && w.coverage > 0.0 {
                out.push(Outcome::Ready(w));
            } else {
                out.push(Outcome::Dropped {
                    seq: k,
                    reason: DropReason::Coverage,
                    coverage: w.coverage,
                });
            }
            k += 1;
            let next_start = self.p.start(k);
            while self.frames.front().is_some_and(|f| Self::before(f, next_start)) {
                if let Some(f) = self.frames.pop_front() {
                    self.bytes -= f.data.byte_len();
                }
            }
        }
        self.next_k = Some(k);
    }

    fn extract(&self, k: i64, start: Nanos, end: Nanos) -> Window {
        let length_s = (end - start) as f64 / 1e9;
        let in_span = |f: &&Arc<Frame>| f.t_ns >= start && f.t_ns < end;
        let (coverage, data) = match self.modality {
            Modality::Audio => self.extract_audio(start, end),
            Modality::Imu => {
                let v: Vec<(Nanos, ImuSample)> = self
                    .frames
                    .iter()
                    .filter(in_span)
                    .filter_map(|f| match f.data {
                        FrameData::Imu(s) => Some((f.t_ns, s)),
                        _ => None,
                    })
                    .collect();
                let cov = (v.len() as f64 / (self.nominal_rate_hz * length_s)).min(1.0);
                (cov, WindowData::Imu(v))
            }
            _ => {
                let v: Vec<Arc<Frame>> = self.frames.iter().filter(in_span).cloned().collect();
                let cov = (v.len() as f64 / (self.nominal_rate_hz * length_s)).min(1.0);
                (cov, WindowData::Frames(v))
            }
        };
        Window {
            source: self.source.clone(),
            modality: self.modality,
            seq: k,
            t_start_ns: start,
            t_end_ns: end,
            coverage,
            data,
        }
    }

    fn extract_audio(&self, start: Nanos, end: Nanos) -> (f64, WindowData) {
        let first = self.frames.iter().find_map(|f| match &f.data {
            FrameData::Audio {
                sample_rate, channels, ..
            } => Some((*sample_rate, *channels)),
            _ => None,
        });
        let Some((sr, ch)) = first else {
            return (
                0.0,
                WindowData::Audio {
                    sample_rate: 16000,
                    channels: 1,
                    samples: Vec::new(),
                    valid: 0,
                },
            );
        };
        let chn = ch.max(1) as usize;
        let len = ((end - start) as i128 * sr as i128 / 1_000_000_000) as usize;
        let mut out = vec![0.0f32; len * chn];
        let mut filled = vec![false; len];
        // A chunk that starts within a millisecond of where the one before it ended is
        // placed right after it: a sample clock slewing towards the host (see
        // `sources::sample_clock`) moves stamps by a fraction of a sample per chunk,
        // which must neither overwrite a sample nor leave a hole.
        let snap = (sr as i64 / 1000).max(1);
        let mut prev_end: Option<i64> = None;
        for f in &self.frames {
            let FrameData::Audio {
                sample_rate,
                channels,
                samples,
            } = &f.data
            else {
                continue;
            };
            if *sample_rate != sr || *channels != ch {
                continue;
            }
            // Index of this chunk's first sample on the window's sample grid.
            let mut off = ((f.t_ns - start) as i128 * sr as i128).div_euclid(1_000_000_000) as i64;
            if let Some(end) = prev_end {
                if (off - end).abs() <= snap {
                    off = end;
                }
            }
            let n = samples.len() / chn;
            prev_end = Some(off + n as i64);
            let lo = (-off).max(0) as usize;
            let hi = ((len as i64 - off).min(n as i64)).max(0) as usize;
            for j in lo..hi {
                let dst = (off + j as i64) as usize;
                out[dst * chn..(dst + 1) * chn].copy_from_slice(&samples[j * chn..(j + 1) * chn]);
                filled[dst] = true;
            }
        }
        let cov = if len == 0 {
            0.0
        } else {
            filled.iter().filter(|x| **x).count() as f64 / len as f64
        };
        (
            cov,
            WindowData::Audio {
                sample_rate: sr,
                channels: ch,
                samples: out,
                valid: filled.iter().rposition(|x| *x).map_or(0, |i| i + 1),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(len_s: f64, hop_s: f64) -> WindowParams {
        WindowParams {
            length_ns: (len_s * 1e9) as i64,
            hop_ns: (hop_s * 1e9) as i64,
            origin_ns: 0,
            min_coverage: 0.5,
        }
    }

    fn rgb(t: Nanos) -> Frame {
        Frame {
            t_ns: t,
            data: FrameData::Rgb8 {
                width: 1,
                height: 1,
                data: vec![0, 0, 0],
            },
        }
    }

    fn ready(o: &[Outcome]) -> Vec<&Window> {
        o.iter()
            .filter_map(|x| if let Outcome::Ready(w) = x { Some(w) } else { None })
            .collect()
    }

    #[test]
    fn one_wild_timestamp_never_moves_the_grid_but_a_real_jump_does() {
        const S: Nanos = 1_000_000_000;
        let mut w = Windower::new("cam", Modality::Vision, params(2.0, 2.0), 10.0);
        let mut out = Vec::new();
        for i in 0..30 {
            out.extend(w.push(rgb(i * S / 10)));
        }
        // Three hours ahead, then an hour back: each one alone is skipped.
        for t in [3 * 3600 * S, -3600 * S] {
            let o = w.push(rgb(t));
            assert!(
                matches!(&o[..], [Outcome::Rejected { reason }] if reason.contains("off the stream's time")),
                "{o:?}"
            );
        }
        for i in 30..61 {
            out.extend(w.push(rgb(i * S / 10)));
        }
        assert_eq!(
            ready(&out).iter().map(|w| w.seq).collect::<Vec<_>>(),
            vec![0, 1, 2],
            "the stream went on undisturbed"
        );
        // The clock is set two hours ahead and stays there: after JUMP_CONFIRM frames
        // the open window is closed and the grid restarts at the new time.
        let base = 2 * 3600 * S;
        let mut jumped = Vec::new();
        for i in 0..41 {
            jumped.extend(w.push(rgb(base + i * S / 10)));
        }
        let rejected = jumped.iter().filter(|o| matches!(o, Outcome::Rejected { .. })).count();
        assert_eq!(rejected as u32, JUMP_CONFIRM - 1);
        let pos = jumped
            .iter()
            .position(|o| matches!(o, Outcome::TimeJump { to_ns, .. } if *to_ns == base + 2 * S / 10))
            .expect("a TimeJump outcome");
        assert!(
            ready(&jumped[..pos]).iter().all(|w| w.seq == 3),
            "only the open window closes first"
        );
        let after: Vec<i64> = ready(&jumped[pos..]).iter().map(|w| w.seq).collect();
        assert_eq!(after, vec![3600, 3601], "windows on the new timeline");
    }

    #[test]
    fn frames_split_on_grid() {
        let mut w = Windower::new("cam", Modality::Vision, params(2.0, 2.0), 10.0);
        let mut out = Vec::new();
        for i in 0..61 {
            out.extend(w.push(rgb(i * 100_000_000)));
        }
        let r = ready(&out);
        assert_eq!(r.len(), 3);
        for (k, win) in r.iter().enumerate() {
            assert_eq!(win.seq, k as i64);
            assert_eq!(win.t_end_ns - win.t_start_ns, 2_000_000_000);
            match &win.data {
                WindowData::Frames(f) => assert_eq!(f.len(), 20),
                _ => panic!(),
            }
            assert!((win.coverage - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn overlapping_hop_shares_frames() {
        let mut w = Windower::new("cam", Modality::Vision, params(2.0, 1.0), 10.0);
        let mut out = Vec::new();
        for i in 0..41 {
            out.extend(w.push(rgb(i * 100_000_000)));
        }
        let r = ready(&out);
        assert_eq!(r.iter().map(|w| w.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        for win in r {
            if let WindowData::Frames(f) = &win.data {
                assert_eq!(f.len(), 20);
                assert_eq!(f[0].t_ns, win.t_start_ns);
            }
        }
    }

    #[test]
    fn sparse_window_is_dropped_and_reported() {
        let mut w = Windower::new("cam", Modality::Vision, params(2.0, 2.0), 10.0);
        let mut out = Vec::new();
        for t in [0, 100_000_000, 2_500_000_000] {
            out.extend(w.push(rgb(t)));
        }
        assert!(matches!(
            out[0],
            Outcome::Dropped {
                seq: 0,
                reason: DropReason::Coverage,
                ..
            }
        ));
        // An impossible audio format is rejected, not buffered.
        let mut a = Windower::new("mic", Modality::Audio, params(2.0, 2.0), 50.0);
        let bad = Frame {
            t_ns: 0,
            data: FrameData::Audio {
                sample_rate: u32::MAX,
                channels: 1,
                samples: vec![0.0; 4],
            },
        };
        assert!(matches!(a.push(bad)[0], Outcome::Rejected { .. }));
        let odd = Frame {
            t_ns: 0,
            data: FrameData::Audio {
                sample_rate: 16000,
                channels: 2,
                samples: vec![0.0; 3],
            },
        };
        assert!(matches!(a.push(odd)[0], Outcome::Rejected { .. }));
        // A late frame for the closed window is reported too.
        let late = w.push(rgb(500_000_000));
        assert!(matches!(late[0], Outcome::LateFrames { count: 1 }));
    }

    #[test]
    fn audio_samples_land_on_the_grid_with_gaps_zeroed() {
        let mut w = Windower::new("mic", Modality::Audio, params(1.0, 1.0), 10.0);
        let sr = 1000u32;
        let mut out = Vec::new();
        // 100 ms chunks; chunk 3 missing; values = sample index.
        for c in 0..12u32 {
            if c == 3 {
                continue;
            }
            let samples = (0..100).map(|j| (c * 100 + j) as f32).collect();
            out.extend(w.push(Frame {
                t_ns: c as i64 * 100_000_000,
                data: FrameData::Audio {
                    sample_rate: sr,
                    channels: 1,
                    samples,
                },
            }));
        }
        let r = ready(&out);
        assert_eq!(r.len(), 1);
        let WindowData::Audio { samples, .. } = &r[0].data else {
            panic!()
        };
        assert_eq!(samples.len(), 1000);
        assert_eq!(samples[299], 299.0);
        assert_eq!(samples[300], 0.0);
        assert_eq!(samples[400], 400.0);
        assert!((r[0].coverage - 0.9).abs() < 1e-9);
    }

    #[test]
    fn flush_emits_partial_tail() {
        let mut w = Windower::new("mic", Modality::Audio, params(2.0, 2.0), 50.0);
        let sr = 16000u32;
        // 5 s of audio → windows 0,1 full; window 2 half covered (kept at 0.5).
        let mut out = Vec::new();
        for c in 0..250 {
            out.extend(w.push(Frame {
                t_ns: c * 20_000_000,
                data: FrameData::Audio {
                    sample_rate: sr,
                    channels: 1,
                    samples: vec![0.1; 320],
                },
            }));
        }
        out.extend(w.flush());
        let r = ready(&out);
        assert_eq!(r.iter().map(|w| w.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!((r[2].coverage - 0.5).abs() < 1e-9);
        let WindowData::Audio { valid, samples, .. } = &r[2].data else {
            panic!()
        };
        assert_eq!((*valid, samples.len()), (16000, 32000), "the tail clip is 1 s long");
    }

    #[test]
    fn advance_closes_overdue_windows_on_the_streams_clock() {
        let mut w = Windower::new("cam", Modality::Vision, params(2.0, 2.0), 10.0);
        let mut out = Vec::new();
        for i in 0..15 {
            out.extend(w.push(rgb(i * 100_000_000)));
        }
        assert!(ready(&out).is_empty());
        // The clock has not passed the window's end: nothing closes.
        assert!(w.advance(1_900_000_000).is_empty());
        let o = w.advance(2_000_000_000);
        let r = ready(&o);
        assert_eq!(r.len(), 1);
        assert!((r[0].coverage - 0.75).abs() < 1e-9);
        // A frame for the closed window is late now.
        assert!(matches!(
            w.push(rgb(1_950_000_000))[0],
            Outcome::LateFrames { count: 1 }
        ));
    }

    #[test]
    fn buffer_and_image_limits_reject_instead_of_growing() {
        let limits = WindowLimits {
            max_frames: 100,
            ..WindowLimits::default()
        };
        let mut w = Windower::new("imu", Modality::Imu, params(2.0, 2.0), 200.0).with_limits(limits);
        let still = |t| Frame {
            t_ns: t,
            data: FrameData::Imu(ImuSample {
                accel: [0.0; 3],
                gyro: [0.0; 3],
            }),
        };
        let mut rejected = 0;
        for _ in 0..10_000 {
            for o in w.push(still(5)) {
                if let Outcome::Rejected { reason } = o {
                    assert!(reason.contains("limits.max_window_frames"), "{reason}");
                    rejected += 1;
                }
            }
        }
        assert_eq!(rejected, 10_000 - 100);
        assert_eq!(w.frames.len(), 100);
        // Time moves on again: the buffer drains and frames are accepted.
        let o = w.push(still(2_000_000_000));
        assert!(matches!(o[0], Outcome::Dropped { seq: 0, .. }), "{o:?}");
        assert!(w.push(still(2_000_000_001)).is_empty());

        let mut v = Windower::new("cam", Modality::Vision, params(2.0, 2.0), 10.0);
        let thin = Frame {
            t_ns: 0,
            data: FrameData::Rgb8 {
                width: 1,
                height: 20_000,
                data: vec![0; 60_000],
            },
        };
        assert!(matches!(&v.push(thin)[0], Outcome::Rejected { reason } if reason.contains("limits.max_image_side")));
        let wrong = Frame {
            t_ns: 0,
            data: FrameData::Imu(ImuSample {
                accel: [0.0; 3],
                gyro: [0.0; 3],
            }),
        };
        assert!(matches!(&v.push(wrong)[0], Outcome::Rejected { .. }));
    }

    #[test]
    fn byte_budget_rejects_frames_beyond_it_and_frees_as_windows_close() {
        // 12 big frames in one 2 s window (a recording of 8192×6826 images, scaled down):
        // only what fits in the budget is buffered, the rest is rejected and counted.
        let frame_bytes = 300 * 200 * 3;
        let limits = WindowLimits {
            max_bytes: 3 * frame_bytes as u64 + 10,
            ..WindowLimits::default()
        };
        let mut w = Windower::new("cam", Modality::Vision, params(2.0, 2.0), 6.0).with_limits(limits);
        let big = |t| Frame {
            t_ns: t,
            data: FrameData::Rgb8 {
                width: 300,
                height: 200,
                data: vec![7; frame_bytes],
            },
        };
        let mut rejected = 0;
        for i in 0..12 {
            for o in w.push(big(i * 150_000_000)) {
                if let Outcome::Rejected { reason } = o {
                    assert!(reason.contains("limits.max_window_bytes"), "{reason}");
                    rejected += 1;
                }
            }
        }
        assert_eq!((w.frames.len(), rejected), (3, 9));
        assert_eq!(w.bytes, 3 * frame_bytes as u64);
        // The frame that closes the window is taken; the closed window's frames are freed.
        let o = w.push(big(2_000_000_000));
        // (3 of the 12 frames a 6 Hz stream should have: too little coverage to embed)
        assert!(matches!(&o[0], Outcome::Dropped { seq: 0, .. }), "{o:?}");
        assert_eq!((w.frames.len(), w.bytes), (1, frame_bytes as u64));
        // A single frame larger than the whole budget never fits.
        let huge = Frame {
            t_ns: 2_100_000_000,
            data: FrameData::Rgb8 {
                width: 1000,
                height: 1000,
                data: vec![0; 3_000_000],
            },
        };
        assert!(matches!(&w.push(huge)[0], Outcome::Rejected { reason } if reason.contains("max_window_bytes")));
        // The image limits derived from the budget refuse it from its size alone.
        let l = ImageLimits {
            max_decoded_bytes: limits.max_bytes,
            ..ImageLimits::default()
        };
        assert!(l.check(1000, 1000).unwrap_err().contains("limits.max_window_bytes"));
        assert!(l.check(300, 200).is_ok());
    }

    #[test]
    fn slewed_audio_chunks_are_placed_back_to_back() {
        // 20 ms chunks at 48 kHz stamped 10 µs (half a sample) earlier than contiguous,
        // as a sample clock slewing at its fastest does: every sample lands in the
        // window, in order, none overwritten.
        let mut w = Windower::new("mic", Modality::Audio, params(2.0, 2.0), 50.0);
        let mut t = 0i64;
        let mut next_value = 0u32;
        let mut out = Vec::new();
        for _ in 0..110 {
            let samples: Vec<f32> = (0..960)
                .map(|_| {
                    next_value += 1;
                    next_value as f32
                })
                .collect();
            out.extend(w.push(Frame {
                t_ns: t,
                data: FrameData::Audio {
                    sample_rate: 48_000,
                    channels: 1,
                    samples,
                },
            }));
            t += 20_000_000 - 10_000;
        }
        let Some(Outcome::Ready(win)) = out.into_iter().find(|o| matches!(o, Outcome::Ready(_))) else {
            panic!("no window")
        };
        let WindowData::Audio { samples, valid, .. } = &win.data else {
            panic!("not audio")
        };
        assert_eq!(*valid, 96_000);
        let want: Vec<f32> = (1..=96_000).map(|v| v as f32).collect();
        assert!(
            samples[..] == want[..],
            "first difference at {:?}",
            samples.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}
