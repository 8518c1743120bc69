//! `type = "alsa"`: an ALSA capture device (a USB or on-board microphone), feature `alsa`.
//!
//! ```toml
//! [sources.mic]
//! type = "alsa"
//! device = "default"      # ALSA PCM name: "default", "hw:1,0", "plughw:CARD=Mic,DEV=0", ...
//! rate = 48000            # Hz asked for; the device may grant another (see health)
//! channels = 1            # asked for; the granted count is what the frames carry
//! period_ms = 20          # one frame (audio chunk) per period
//! drift_ms = 20           # sample clock vs host clock: slew past half of it, step forward past it
//! # max_seconds = 3.5     # stop (end of stream) after this much audio; for tests
//! ```
//!
//! Keys:
//! - `device` (default `"default"`): the PCM name, as `arecord -D` takes it. Use a
//!   `plughw:` device (or `default`) when the hardware does not do S16_LE at the
//!   asked rate natively: ALSA's plug layer converts.
//! - `rate` (Hz, default 48000, 1000..=384000) and `channels` (default 1, 1..=64):
//!   asked with "nearest"; what was granted is logged when the source starts, is in
//!   `info().description` and in health (`sources.<id>.driver`).
//! - `period_ms` (default 20, 1..=1000): the hardware period; each `next_frame` reads
//!   one period, so the stream's nominal rate is `1000 / period_ms` chunks/s.
//! - `drift_ms` (default 20, 1..=3600000): bound on the disagreement between the sample
//!   clock and the host clock: past half of it the clock slews towards the host, and
//!   when it is behind by more than all of it (samples lost) it steps forward (see
//!   [`super::sample_clock`]). No sample is ever dropped because of timing.
//! - `max_seconds` (optional, > 0): end the stream (`Ok(None)`) after exactly this
//!   much audio has been read. ALSA devices never end; tests use it with the ALSA
//!   `file` plugin, which returns its `infile` unpaced and repeats stale data past
//!   its end.
//!
//! Capture is S16_LE, interleaved (`snd_pcm_readi`); frames carry
//! `FrameData::Audio { sample_rate, channels, samples }` with `samples = s16 / 32768`.
//! Timestamps come from the sample clock ([`super::sample_clock::SampleClock`]):
//! anchored on the daemon's realtime clock at the first period, then each period
//! starting where the last one ended; slewed by at most 500 ppm towards the host clock
//! (a delay-locked loop) and stepped forward only (logged, counted in `reanchors`)
//! when it falls behind by more than `drift_ms`. It never steps back over samples
//! already stamped. An overrun (`EPIPE`) or suspend (`ESTRPIPE`) is recovered in place
//! (`snd_pcm_recover`), counted in `xruns`, and re-anchors the clock on the next
//! period, no earlier than the last period's end; it is never fatal. Any other read error is `SourceError::Read` (the
//! runner reopens the device); a device that cannot be opened or configured is
//! `SourceError::Open`, naming the PCM.
//!
//! Health (`Source::status`): granted `rate`, `channels`, `period_frames`,
//! `buffer_frames`, `format`, the counters `xruns` and `reanchors` (forward steps), and
//! `clock_offset_ms` (filtered sample clock − host clock; positive: ahead).

use super::sample_clock::SampleClock;
use super::{
    key_error, parse_keys, DriverConfig, Frame, FrameData, Source, SourceConfigError, SourceContext, SourceError,
    SourceInfo, StreamInfo,
};
use crate::clock::{Clock, SystemClock};
use crate::modality::Modality;
use alsa::pcm::{Access, Format, HwParams, State, PCM};
use alsa::{Direction, ValueOr};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// `[sources.<id>]` keys of `type = "alsa"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlsaConfig {
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_rate")]
    pub rate: u32,
    #[serde(default = "default_channels")]
    pub channels: u16,
    #[serde(default = "default_period_ms")]
    pub period_ms: u32,
    #[serde(default = "default_drift_ms")]
    pub drift_ms: u32,
    #[serde(default)]
    pub max_seconds: Option<f64>,
}

fn default_device() -> String {
    "default".into()
}
fn default_rate() -> u32 {
    48_000
}
fn default_channels() -> u16 {
    1
}
fn default_period_ms() -> u32 {
    20
}
fn default_drift_ms() -> u32 {
    20
}

/// Parse `[sources.<id>]` keys of `type = "alsa"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let c: AlsaConfig = parse_keys(id, keys)?;
    c.validate(id)?;
    Ok(Box::new(c))
}

impl AlsaConfig {
    /// Check the keys' ranges; the error names `sources.<id>.<key>`.
    pub fn validate(&self, id: &str) -> Result<(), SourceConfigError> {
        if self.device.is_empty() || self.device.contains('\0') {
            return Err(key_error(
                id,
                "device",
                "expected an ALSA PCM name such as `default` or `hw:1,0`",
            ));
        }
        if !(1_000..=super::MAX_SAMPLE_RATE).contains(&self.rate) {
            return Err(key_error(
                id,
                "rate",
                format!("expected 1000..={} Hz, got {}", super::MAX_SAMPLE_RATE, self.rate),
            ));
        }
        if !(1..=super::MAX_CHANNELS).contains(&self.channels) {
            return Err(key_error(
                id,
                "channels",
                format!("expected 1..={}, got {}", super::MAX_CHANNELS, self.channels),
            ));
        }
        if !(1..=1000).contains(&self.period_ms) {
            return Err(key_error(
                id,
                "period_ms",
                format!("expected 1..=1000 ms, got {}", self.period_ms),
            ));
        }
        if !(1..=3_600_000).contains(&self.drift_ms) {
            return Err(key_error(
                id,
                "drift_ms",
                format!("expected 1..=3600000 ms, got {}", self.drift_ms),
            ));
        }
        if let Some(s) = self.max_seconds {
            if !(s.is_finite() && s > 0.0) {
                return Err(key_error(id, "max_seconds", format!("expected seconds > 0, got {s}")));
            }
        }
        Ok(())
    }

    /// Frames per period asked for.
    pub fn period_frames(&self) -> u64 {
        (self.rate as u64 * self.period_ms as u64 / 1000).max(1)
    }
}

impl DriverConfig for AlsaConfig {
    fn build(&self, _ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(Alsa::new(self.clone())))
    }
    fn default_queue(&self) -> usize {
        super::default_queue_for(crate::modality::Sensor::Microphone)
    }
}

/// What the device granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub rate: u32,
    pub channels: u16,
    pub period_frames: u64,
    pub buffer_frames: u64,
}

/// The `max_seconds` limit in frames at the granted rate.
pub fn frame_limit(max_seconds: Option<f64>, rate: u32) -> Option<u64> {
    max_seconds.map(|s| (s * rate as f64).round().max(0.0) as u64)
}

/// Interleaved S16 samples → `[-1, 1)` floats.
pub fn s16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|s| *s as f32 / 32768.0).collect()
}

/// A capture source on one ALSA PCM.
pub struct Alsa {
    cfg: AlsaConfig,
    pcm: Option<PCM>,
    granted: Option<Granted>,
    clock: SampleClock,
    /// Frames read since the last open (for `max_seconds`).
    read_frames: u64,
    xruns: u64,
    buf: Vec<i16>,
    /// Said once: the input runs faster than real time.
    ahead_logged: bool,
}

impl Alsa {
    pub fn new(cfg: AlsaConfig) -> Self {
        let clock = SampleClock::new(cfg.rate, cfg.drift_ms);
        Alsa {
            cfg,
            pcm: None,
            granted: None,
            clock,
            read_frames: 0,
            xruns: 0,
            buf: Vec::new(),
            ahead_logged: false,
        }
    }

    fn open_err(&self, step: &str, e: alsa::Error) -> SourceError {
        SourceError::Open {
            what: format!("ALSA PCM `{}`", self.cfg.device),
            reason: format!("{step}: {e}"),
        }
    }

    fn read_err(&self, reason: String) -> SourceError {
        SourceError::Read {
            what: format!("ALSA PCM `{}`", self.cfg.device),
            reason,
        }
    }

    /// Open and configure the PCM; returns it with what was granted.
    fn configure(&self) -> Result<(PCM, Granted), SourceError> {
        let c = &self.cfg;
        let pcm = PCM::new(&c.device, Direction::Capture, false).map_err(|e| self.open_err("open", e))?;
        {
            let hwp = HwParams::any(&pcm).map_err(|e| self.open_err("hw params", e))?;
            hwp.set_access(Access::RWInterleaved)
                .map_err(|e| self.open_err("interleaved read access", e))?;
            hwp.set_format(Format::S16LE)
                .map_err(|e| self.open_err("format S16_LE", e))?;
            hwp.set_channels_near(c.channels as u32)
                .map_err(|e| self.open_err(&format!("{} channels", c.channels), e))?;
            hwp.set_rate_near(c.rate, ValueOr::Nearest)
                .map_err(|e| self.open_err(&format!("rate {} Hz", c.rate), e))?;
            let period = hwp
                .set_period_size_near(c.period_frames() as alsa::pcm::Frames, ValueOr::Nearest)
                .map_err(|e| self.open_err(&format!("period of {} frames", c.period_frames()), e))?;
            // Room for several periods, so a reader that is late for a moment loses nothing.
            let _ = hwp.set_buffer_size_near(period * 8);
            pcm.hw_params(&hwp)
                .map_err(|e| self.open_err("applying hw params", e))?;
        }
        let granted = {
            let hwp = pcm
                .hw_params_current()
                .map_err(|e| self.open_err("reading back hw params", e))?;
            let get = |what: &str, r: alsa::Result<u32>| r.map_err(|e| self.open_err(what, e));
            let rate = get("granted rate", hwp.get_rate())?;
            let channels = get("granted channels", hwp.get_channels())?;
            let period = hwp.get_period_size().map_err(|e| self.open_err("granted period", e))?;
            let buffer = hwp.get_buffer_size().unwrap_or(period);
            let format = hwp.get_format().map_err(|e| self.open_err("granted format", e))?;
            if format != Format::S16LE {
                return Err(SourceError::Open {
                    what: format!("ALSA PCM `{}`", c.device),
                    reason: format!("the device granted {format}, not S16_LE (use a `plughw:` device)"),
                });
            }
            if !(1_000..=super::MAX_SAMPLE_RATE).contains(&rate)
                || channels == 0
                || channels > super::MAX_CHANNELS as u32
                || period <= 0
            {
                return Err(SourceError::Open {
                    what: format!("ALSA PCM `{}`", c.device),
                    reason: format!(
                        "the device granted an unusable configuration: {rate} Hz, {channels} channels, {period}-frame periods"
                    ),
                });
            }
            Granted {
                rate,
                channels: channels as u16,
                period_frames: period as u64,
                buffer_frames: buffer.max(period) as u64,
            }
        };
        Ok((pcm, granted))
    }

    fn describe_granted(&self, g: &Granted) -> String {
        let c = &self.cfg;
        let mut s = format!(
            "ALSA `{}`: S16_LE {} Hz × {} ch, {}-frame periods ({:.1} ms)",
            c.device,
            g.rate,
            g.channels,
            g.period_frames,
            g.period_frames as f64 * 1000.0 / g.rate as f64
        );
        if g.rate != c.rate || g.channels != c.channels || g.period_frames != c.period_frames() {
            s.push_str(&format!(
                "; asked {} Hz × {} ch, {} ms",
                c.rate, c.channels, c.period_ms
            ));
        }
        s
    }
}

/// What to do after a failed `readi`.
enum Failure {
    /// An overrun or suspend, recovered: the chunk restarts with a fresh anchor.
    Recovered,
    /// Interrupted: retry.
    Retry,
    Fatal(String),
}

fn classify(pcm: &PCM, e: alsa::Error) -> Failure {
    // alsa-rs keeps errno positive; be robust to either sign.
    match e.errno().abs() {
        libc::EINTR | libc::EAGAIN => Failure::Retry,
        libc::EPIPE | libc::ESTRPIPE => match pcm.try_recover(e, true) {
            Ok(()) => Failure::Recovered,
            Err(e2) => Failure::Fatal(format!("{e}; recovery failed: {e2}")),
        },
        _ => Failure::Fatal(e.to_string()),
    }
}

impl Source for Alsa {
    fn info(&self) -> SourceInfo {
        let (description, rate) = match &self.granted {
            Some(g) => (self.describe_granted(g), g.rate as f64 / g.period_frames.max(1) as f64),
            None => (
                format!(
                    "ALSA `{}` (asking S16_LE {} Hz × {} ch, {} ms periods)",
                    self.cfg.device, self.cfg.rate, self.cfg.channels, self.cfg.period_ms
                ),
                1000.0 / self.cfg.period_ms as f64,
            ),
        };
        SourceInfo {
            description,
            streams: vec![StreamInfo {
                modality: Modality::Audio,
                nominal_rate_hz: rate,
            }],
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.pcm = None;
        let (pcm, g) = self.configure()?;
        tracing::info!(
            device = %self.cfg.device,
            rate = g.rate,
            channels = g.channels,
            period_frames = g.period_frames,
            buffer_frames = g.buffer_frames,
            "ALSA capture configured"
        );
        // A reopened device (replugged, or reopened after an error) anchors afresh,
        // never before what the last open stamped.
        self.clock = self.clock.reopened(g.rate);
        self.read_frames = 0;
        self.buf = vec![0; g.period_frames as usize * g.channels as usize];
        self.granted = Some(g);
        self.pcm = Some(pcm);
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let (Some(pcm), Some(g)) = (&self.pcm, self.granted) else {
            return Err(self.read_err("not open".into()));
        };
        let ch = g.channels as usize;
        let mut want = g.period_frames;
        if let Some(limit) = frame_limit(self.cfg.max_seconds, g.rate) {
            if self.read_frames >= limit {
                return Ok(None);
            }
            want = want.min(limit - self.read_frames);
        }
        let want = want as usize;
        let io = pcm.io_i16().map_err(|e| self.read_err(format!("S16 reader: {e}")))?;
        // How long a period may take before the device counts as stuck (a hung USB
        // microphone): four buffers' worth, at least 2 s.
        let patience = ((g.buffer_frames * 1000 / g.rate as u64) as u32 * 4).max(2_000);
        let mut filled = 0usize;
        let mut interruptions = 0u32;
        while filled < want {
            // A prepared capture stream (just opened, or just recovered) has nothing to
            // poll for until it runs: start it, or the wait below would time out.
            if pcm.state() == State::Prepared {
                if let Err(e) = pcm.start() {
                    return Err(SourceError::Read {
                        what: format!("ALSA PCM `{}`", self.cfg.device),
                        reason: format!("starting capture: {e}"),
                    });
                }
            }
            match pcm.wait(Some(patience)) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(SourceError::Read {
                        what: format!("ALSA PCM `{}`", self.cfg.device),
                        reason: format!("no audio for {patience} ms"),
                    })
                }
                Err(e) => match classify(pcm, e) {
                    Failure::Retry => continue,
                    Failure::Recovered => {
                        self.xruns += 1;
                        self.clock.reset();
                        filled = 0;
                        tracing::warn!(device = %self.cfg.device, xruns = self.xruns, "ALSA overrun: samples lost, recovered");
                        continue;
                    }
                    Failure::Fatal(reason) => {
                        return Err(SourceError::Read {
                            what: format!("ALSA PCM `{}`", self.cfg.device),
                            reason,
                        })
                    }
                },
            }
            match io.readi(&mut self.buf[filled * ch..want * ch]) {
                Ok(0) => {
                    interruptions += 1;
                    if interruptions > 100 {
                        return Err(SourceError::Read {
                            what: format!("ALSA PCM `{}`", self.cfg.device),
                            reason: "the device keeps returning no frames".into(),
                        });
                    }
                }
                Ok(n) => filled += n.min(want - filled),
                Err(e) => match classify(pcm, e) {
                    Failure::Retry => {}
                    Failure::Recovered => {
                        // The samples before the overrun are kept neither: the chunk
                        // restarts, stamped from a fresh anchor.
                        self.xruns += 1;
                        self.clock.reset();
                        filled = 0;
                        tracing::warn!(device = %self.cfg.device, xruns = self.xruns, "ALSA overrun: samples lost, recovered");
                    }
                    Failure::Fatal(reason) => {
                        return Err(SourceError::Read {
                            what: format!("ALSA PCM `{}`", self.cfg.device),
                            reason,
                        })
                    }
                },
            }
        }
        drop(io);
        let now = crate::clock::realtime_ns();
        let buffered = pcm
            .avail_update()
            .map(|a| (a.max(0) as u64).min(g.buffer_frames))
            .unwrap_or(0);
        let stamp = self.clock.stamp(want as u64, buffered, now);
        if stamp.stepped {
            tracing::info!(device = %self.cfg.device, drift_ms = stamp.drift_ns as f64 / 1e6, reanchors = self.clock.steps(), "ALSA sample clock fell behind the host clock (samples lost or a stalled reader): stepped forward");
        }
        if !self.ahead_logged && stamp.drift_ns > self.cfg.drift_ms as i64 * 1_000_000 {
            self.ahead_logged = true;
            tracing::warn!(device = %self.cfg.device, drift_ms = stamp.drift_ns as f64 / 1e6, "the device delivers audio faster than real time (a file, or a wrong rate): its sample clock runs ahead of the host clock; slewing, no sample is dropped");
        }
        self.read_frames += want as u64;
        Ok(Some(Frame {
            t_ns: stamp.t_ns,
            data: FrameData::Audio {
                sample_rate: g.rate,
                channels: g.channels,
                samples: s16_to_f32(&self.buf[..want * ch]),
            },
        }))
    }

    fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("device".into(), json!(self.cfg.device));
        if let Some(g) = &self.granted {
            m.insert("rate".into(), json!(g.rate));
            m.insert("channels".into(), json!(g.channels));
            m.insert("period_frames".into(), json!(g.period_frames));
            m.insert("buffer_frames".into(), json!(g.buffer_frames));
            m.insert("format".into(), json!("S16_LE"));
        }
        m.insert("xruns".into(), json!(self.xruns));
        m.insert("reanchors".into(), json!(self.clock.steps()));
        m.insert(
            "clock_offset_ms".into(),
            json!((self.clock.offset_ms() * 1000.0).round() / 1000.0),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn keys_default_and_validate() {
        let c: AlsaConfig = parse_keys("mic", keys("")).unwrap();
        assert_eq!(
            c,
            AlsaConfig {
                device: "default".into(),
                rate: 48_000,
                channels: 1,
                period_ms: 20,
                drift_ms: 20,
                max_seconds: None,
            }
        );
        c.validate("mic").unwrap();
        assert_eq!(c.period_frames(), 960);
        for (table, needle) in [
            ("rate = 500", "`sources.mic.rate`"),
            ("channels = 0", "`sources.mic.channels`"),
            ("period_ms = 0", "`sources.mic.period_ms`"),
            ("drift_ms = 0", "`sources.mic.drift_ms`"),
            ("max_seconds = -1.0", "`sources.mic.max_seconds`"),
            ("device = \"\"", "`sources.mic.device`"),
            ("device = \"a\\u0000b\"", "`sources.mic.device`"),
            ("rates = 1", "unknown field `rates`"),
        ] {
            let e = match parse("mic", keys(table)) {
                Ok(c) => panic!("{table}: accepted {c:?}"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(needle), "{table}: {e}");
        }
        assert!(parse("mic", keys("device = \"hw:1,0\"\nrate = 16000\nmax_seconds = 2.5")).is_ok());
    }

    #[test]
    fn limits_and_sample_conversion() {
        assert_eq!(frame_limit(Some(1.5), 16_000), Some(24_000));
        assert_eq!(frame_limit(None, 16_000), None);
        assert_eq!(
            s16_to_f32(&[0, 16384, -32768, 32767]),
            vec![0.0, 0.5, -1.0, 32767.0 / 32768.0]
        );
    }

    /// ALSA's `null` PCM (in every alsa-lib configuration): silence, unpaced. It never
    /// overruns, so only the classification of read errors is checked here, on its
    /// stream; a real overrun through `next_frame`'s recovery is in
    /// tests/alsa_capture.rs (a paced test PCM).
    #[test]
    fn null_device_captures_and_read_errors_are_classified() {
        let mut s = Alsa::new(AlsaConfig {
            device: "null".into(),
            rate: 16_000,
            drift_ms: 3_600_000,
            max_seconds: Some(0.05),
            ..parse_keys("mic", keys("")).unwrap()
        });
        s.open().unwrap();
        assert!(s.info().description.contains("16000 Hz"), "{}", s.info().description);
        let f = s.next_frame().unwrap().unwrap();
        let FrameData::Audio {
            sample_rate, samples, ..
        } = &f.data
        else {
            panic!("{f:?}")
        };
        assert_eq!((*sample_rate, samples.len()), (16_000, 320));
        // EPIPE/ESTRPIPE are recovered in place (`try_recover` prepares the stream
        // again, it restarts on the next read); an interrupted call is retried;
        // anything else is fatal.
        let pcm = s.pcm.as_ref().unwrap();
        assert!(matches!(
            classify(pcm, alsa::Error::new("snd_pcm_readi", libc::EPIPE)),
            Failure::Recovered
        ));
        assert_eq!(pcm.state(), State::Prepared);
        assert!(matches!(
            classify(pcm, alsa::Error::new("snd_pcm_readi", libc::EINTR)),
            Failure::Retry
        ));
        assert!(matches!(
            classify(pcm, alsa::Error::new("snd_pcm_readi", -libc::EIO)),
            Failure::Fatal(_)
        ));
        let g = s.next_frame().unwrap().unwrap();
        assert_eq!(g.t_ns - f.t_ns, 20_000_000);
        // 50 ms at 16 kHz = 800 frames: two periods and a 160-frame remainder.
        let FrameData::Audio { samples, .. } = s.next_frame().unwrap().unwrap().data else {
            panic!()
        };
        assert_eq!(samples.len(), 160);
        assert!(s.next_frame().unwrap().is_none());
        assert_eq!(s.status()["period_frames"], 320);
    }

    #[test]
    fn a_missing_device_is_an_open_error_naming_it() {
        let mut s = Alsa::new(AlsaConfig {
            device: "sensebind_no_such_pcm".into(),
            ..parse_keys("mic", keys("")).unwrap()
        });
        let e = s.open().unwrap_err();
        assert!(matches!(e, SourceError::Open { .. }), "{e}");
        assert!(e.to_string().contains("sensebind_no_such_pcm"), "{e}");
        assert!(matches!(s.next_frame(), Err(SourceError::Read { .. })));
        assert_eq!(s.info().streams[0].nominal_rate_hz, 50.0);
        assert_eq!(s.status()["xruns"], 0);
    }
}
