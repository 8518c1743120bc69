//! Deterministic synthetic sensors for tests and demos.
//!
//! Each generator is a pure function of (seed, frame index), at a realistic format and
//! rate, and its content changes over time. Two scenes (`scene` key):
//! - `"digits"` (default): the MiniBind digit world ([`super::digit_world`]), one
//!   digit at a time in every sensor, which the default MiniBind pack recognises;
//! - `"shapes"`: abstract test content switching every [`SCENE_PERIOD_S`] seconds
//!   (camera: moving shapes on changing backgrounds; depth: a box approaching over a
//!   floor; thermal: a warm body crossing the view; microphone: tone, chirp, noise
//!   burst, near silence; IMU: standing, walking, turning).

use super::{
    parse_keys, DriverConfig, Frame, FrameData, ImuSample, Nanos, Pacer, Source, SourceConfigError, SourceContext,
    SourceError, SourceInfo, StopFlag, StreamInfo,
};
use crate::clock::{Clock, ReplayClock, SystemClock};
use crate::modality::Sensor;
use serde::Deserialize;
use std::sync::Arc;

/// Seconds between scene changes.
pub const SCENE_PERIOD_S: f64 = 4.0;

/// What a synthetic sensor shows.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scene {
    /// The MiniBind digit world.
    #[default]
    Digits,
    /// Abstract moving shapes, tones and motions.
    Shapes,
}

/// `type = "synthetic"` keys, as written (unset ones take the sensor's defaults).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    sensor: Sensor,
    #[serde(default)]
    scene: Scene,
    width: Option<u32>,
    height: Option<u32>,
    rate_hz: Option<f64>,
    sample_rate: Option<u32>,
    chunk_ms: Option<u32>,
    seed: Option<u64>,
    #[serde(default = "yes")]
    realtime: bool,
    #[serde(default)]
    duration_s: f64,
}

fn yes() -> bool {
    true
}

/// A synthetic source's settings, with the sensor's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    pub sensor: Sensor,
    pub scene: Scene,
    pub width: u32,
    pub height: u32,
    pub rate_hz: f64,
    pub sample_rate: u32,
    pub chunk_ms: u32,
    pub seed: u64,
    pub realtime: bool,
    pub duration_s: f64,
}

impl SyntheticConfig {
    /// Realistic defaults for `sensor`.
    pub fn defaults(sensor: Sensor) -> Self {
        let (width, height, rate_hz, seed) = match sensor {
            Sensor::Camera => (640, 480, 30.0, 1),
            Sensor::Depth => (640, 480, 30.0, 2),
            Sensor::Thermal => (160, 120, 9.0, 3),
            Sensor::Microphone => (1, 1, 50.0, 4),
            Sensor::Imu => (1, 1, 200.0, 5),
        };
        SyntheticConfig {
            sensor,
            scene: Scene::default(),
            width,
            height,
            rate_hz,
            sample_rate: 48_000,
            chunk_ms: 20,
            seed,
            realtime: true,
            duration_s: 0.0,
        }
    }
}

/// A stable content seed for a source id (FNV-1a).
pub fn seed_for(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Parse `[sources.<id>]` keys of `type = "synthetic"`.
pub fn parse(id: &str, keys: toml::Table) -> Result<Box<dyn DriverConfig>, SourceConfigError> {
    let k: Keys = parse_keys(id, keys)?;
    let d = SyntheticConfig::defaults(k.sensor);
    let c = SyntheticConfig {
        sensor: k.sensor,
        scene: k.scene,
        width: k.width.unwrap_or(d.width),
        height: k.height.unwrap_or(d.height),
        rate_hz: k.rate_hz.unwrap_or(d.rate_hz),
        sample_rate: k.sample_rate.unwrap_or(d.sample_rate),
        chunk_ms: k.chunk_ms.unwrap_or(d.chunk_ms),
        // Unset: derived from the source id, so two synthetic cameras show different scenes.
        seed: k.seed.unwrap_or_else(|| seed_for(id)),
        realtime: k.realtime,
        duration_s: k.duration_s,
    };
    let err = |key: &str, what: String| Err(super::key_error(id, key, what));
    if !(c.rate_hz.is_finite() && c.rate_hz > 0.0 && c.rate_hz <= 10_000.0) {
        return err("rate_hz", format!("expected 0 < Hz <= 10000, got {}", c.rate_hz));
    }
    if c.width == 0 || c.height == 0 || c.width > 8192 || c.height > 8192 {
        return err("width", "expected width and height in 1..=8192".into());
    }
    if !(8000..=192_000).contains(&c.sample_rate) {
        return err(
            "sample_rate",
            format!("expected 8000..=192000 Hz, got {}", c.sample_rate),
        );
    }
    if !(1..=1000).contains(&c.chunk_ms) {
        return err("chunk_ms", format!("expected 1..=1000 ms, got {}", c.chunk_ms));
    }
    if !(c.duration_s.is_finite() && c.duration_s >= 0.0) {
        return err("duration_s", format!("expected seconds >= 0, got {}", c.duration_s));
    }
    Ok(Box::new(c))
}

impl DriverConfig for SyntheticConfig {
    fn build(&self, ctx: &SourceContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(Synthetic::new(self.clone(), ctx.epoch_ns, ctx.stop.clone())))
    }
    fn default_queue(&self) -> usize {
        super::default_queue_for(self.sensor)
    }
    fn default_when_full(&self) -> crate::edge::WhenFull {
        super::default_when_full_for(!self.realtime)
    }
}

pub struct Synthetic {
    sensor: Sensor,
    cfg: SyntheticConfig,
    epoch_ns: Nanos,
    index: u64,
    pacer: Option<Pacer>,
    /// Realtime sources stamp on the system clock; unpaced ones on a replay clock.
    replay: Arc<ReplayClock>,
    stop: StopFlag,
}

impl Synthetic {
    pub fn new(cfg: SyntheticConfig, epoch_ns: Nanos, stop: StopFlag) -> Self {
        Synthetic {
            sensor: cfg.sensor,
            cfg,
            epoch_ns,
            index: 0,
            pacer: None,
            replay: ReplayClock::new(),
            stop,
        }
    }

    /// Frames (audio: chunks) per second.
    fn rate(&self) -> f64 {
        match self.sensor {
            Sensor::Microphone => 1000.0 / self.cfg.chunk_ms as f64,
            _ => self.cfg.rate_hz,
        }
    }

    fn chunk_len(&self) -> u64 {
        (self.cfg.sample_rate as u64 * self.cfg.chunk_ms as u64 / 1000).max(1)
    }

    /// Sensor time of item `i` (frame, or first sample of chunk `i`).
    fn t_of(&self, i: u64) -> Nanos {
        match self.sensor {
            Sensor::Microphone => {
                let s = i * self.chunk_len();
                self.epoch_ns + (s as i128 * 1_000_000_000 / self.cfg.sample_rate as i128) as Nanos
            }
            _ => self.epoch_ns + (i as f64 * 1e9 / self.cfg.rate_hz).round() as Nanos,
        }
    }

    /// Generate item `i` without pacing (pure).
    pub fn generate(&self, i: u64) -> Frame {
        let t_ns = self.t_of(i);
        let t = (t_ns - self.epoch_ns) as f64 / 1e9;
        let scene = (t / SCENE_PERIOD_S).floor() as u64;
        let c = &self.cfg;
        if c.scene == Scene::Digits {
            return Frame {
                t_ns,
                data: self.digits(i, t_ns),
            };
        }
        let data = match self.sensor {
            Sensor::Camera => FrameData::Rgb8 {
                width: c.width,
                height: c.height,
                data: camera(c.width, c.height, t, scene.wrapping_add(c.seed)),
            },
            Sensor::Depth => FrameData::Depth16 {
                width: c.width,
                height: c.height,
                data: depth(c.width, c.height, t, scene.wrapping_add(c.seed)),
            },
            Sensor::Thermal => FrameData::Thermal16 {
                width: c.width,
                height: c.height,
                data: thermal(c.width, c.height, t, c.seed ^ i),
            },
            Sensor::Microphone => {
                let n = self.chunk_len();
                let first = i * n;
                let sr = c.sample_rate as f64;
                let mut rng = XorShift::new(c.seed.wrapping_mul(0x9E37_79B9).wrapping_add(i));
                let samples = (0..n)
                    .map(|k| {
                        let ts = (first + k) as f64 / sr;
                        microphone(ts, &mut rng)
                    })
                    .collect();
                FrameData::Audio {
                    sample_rate: c.sample_rate,
                    channels: 1,
                    samples,
                }
            }
            Sensor::Imu => FrameData::Imu(imu(t, &mut XorShift::new(c.seed ^ (i << 8)))),
        };
        Frame { t_ns, data }
    }
}

impl Synthetic {
    /// Item `i` of the digit world.
    fn digits(&self, i: u64, t_ns: Nanos) -> FrameData {
        use super::digit_world as world;
        let c = &self.cfg;
        match self.sensor {
            Sensor::Camera => FrameData::Rgb8 {
                width: c.width,
                height: c.height,
                data: world::camera(c.width, c.height, t_ns, c.seed),
            },
            Sensor::Depth => FrameData::Depth16 {
                width: c.width,
                height: c.height,
                data: world::depth(c.width, c.height, t_ns, c.seed),
            },
            Sensor::Thermal => FrameData::Thermal16 {
                width: c.width,
                height: c.height,
                data: world::thermal(c.width, c.height, t_ns, c.seed),
            },
            Sensor::Microphone => {
                let n = self.chunk_len();
                let first = i * n;
                let sr = c.sample_rate as i128;
                let samples = (0..n)
                    .map(|k| {
                        let ts = self.epoch_ns + ((first + k) as i128 * 1_000_000_000 / sr) as Nanos;
                        world::microphone(ts, c.seed)
                    })
                    .collect();
                FrameData::Audio {
                    sample_rate: c.sample_rate,
                    channels: 1,
                    samples,
                }
            }
            Sensor::Imu => FrameData::Imu(world::imu(t_ns, c.seed)),
        }
    }
}

impl Source for Synthetic {
    fn info(&self) -> SourceInfo {
        let description = match self.sensor {
            Sensor::Microphone => format!(
                "synthetic microphone {} Hz mono i16-range, {} ms chunks",
                self.cfg.sample_rate, self.cfg.chunk_ms
            ),
            Sensor::Imu => format!("synthetic IMU accel+gyro @ {} Hz", self.cfg.rate_hz),
            s => format!(
                "synthetic {s} {}x{} @ {} Hz",
                self.cfg.width, self.cfg.height, self.cfg.rate_hz
            ),
        };
        let description = match self.cfg.scene {
            Scene::Digits => format!("{description}, digit world"),
            Scene::Shapes => description,
        };
        SourceInfo {
            description,
            streams: vec![StreamInfo {
                modality: self.sensor.modality(),
                nominal_rate_hz: self.rate(),
            }],
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        if self.cfg.realtime {
            Arc::new(SystemClock)
        } else {
            self.replay.clone()
        }
    }

    fn open(&mut self) -> Result<(), SourceError> {
        if self.cfg.realtime && self.pacer.is_none() {
            self.pacer = Some(Pacer::new(self.replay.clone(), self.epoch_ns, true, self.stop.clone()));
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let t_ns = self.t_of(self.index);
        if self.cfg.duration_s > 0.0 && (t_ns - self.epoch_ns) as f64 >= self.cfg.duration_s * 1e9 {
            return Ok(None);
        }
        if let Some(p) = &self.pacer {
            if !p.wait_until(t_ns) {
                return Ok(None);
            }
        }
        let f = self.generate(self.index);
        self.index += 1;
        self.replay.advance(f.t_ns);
        Ok(Some(f))
    }
}

/// Small deterministic PRNG (xorshift64*).
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn camera(w: u32, h: u32, t: f64, scene: u64) -> Vec<u8> {
    let mut out = vec![0u8; (w * h * 3) as usize];
    let palette: [[i32; 3]; 4] = [[40, 90, 160], [150, 120, 60], [30, 140, 70], [120, 40, 110]];
    let bg = palette[(scene % 4) as usize];
    // A disc moving on a Lissajous path and a bar sweeping across.
    let cx = (w as f64) * (0.5 + 0.35 * (t * 0.9).sin());
    let cy = (h as f64) * (0.5 + 0.30 * (t * 1.3).cos());
    let r = (h as f64) * (0.12 + 0.05 * ((scene % 3) as f64));
    let r2 = r * r;
    let bar_x = ((t * 0.25).fract() * w as f64) as i64;
    for y in 0..h {
        let gy = (y * 255 / h.max(1)) as i32;
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            let dx = x as f64 - cx;
            let dy = y as f64 - cy;
            let px = if dx * dx + dy * dy < r2 {
                [230, 220, 40]
            } else if (x as i64 - bar_x).abs() < (w as i64 / 40).max(1) {
                [250, 250, 250]
            } else {
                let gx = (x * 255 / w.max(1)) as i32;
                [
                    (bg[0] + gx / 4).min(255),
                    (bg[1] + gy / 4).min(255),
                    (bg[2] + (gx + gy) / 8).min(255),
                ]
            };
            out[i] = px[0] as u8;
            out[i + 1] = px[1] as u8;
            out[i + 2] = px[2] as u8;
        }
    }
    out
}

fn depth(w: u32, h: u32, t: f64, scene: u64) -> Vec<u16> {
    let mut out = vec![0u16; (w * h) as usize];
    // Floor: far at the top of the image, near at the bottom. A box approaches from
    // 4 m to 0.6 m within each scene, then a new scene starts.
    let phase = (t / super::synthetic::SCENE_PERIOD_S).fract();
    let box_mm = (4000.0 - 3400.0 * phase) as u16;
    let bw = w / 4 + (scene % 3) as u32 * w / 16;
    let bx0 = ((w - bw) as f64 * (0.5 + 0.4 * (t * 0.7).sin())) as u32;
    let by0 = h / 3;
    for y in 0..h {
        let floor_mm = 8000u32.saturating_sub(y * 7000 / h.max(1)) as u16;
        for x in 0..w {
            let i = (y * w + x) as usize;
            let in_box = x >= bx0 && x < bx0 + bw && y >= by0 && y < by0 + h / 2;
            // A few invalid pixels along the edges like a real stereo sensor.
            out[i] = if x < 8 {
                0
            } else if in_box {
                box_mm
            } else {
                floor_mm
            };
        }
    }
    out
}

fn thermal(w: u32, h: u32, t: f64, seed: u64) -> Vec<u16> {
    let mut rng = XorShift::new(seed);
    let cx = w as f64 * (t / 8.0).fract();
    let cy = h as f64 * (0.5 + 0.2 * (t * 0.5).sin());
    let sigma2 = (h as f64 * 0.15).powi(2);
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
            let body = 2500.0 * (-d2 / (2.0 * sigma2)).exp();
            let v = 29_000.0 + 300.0 * (y as f64 / h as f64) + body + 20.0 * rng.next_f32() as f64;
            v.clamp(0.0, 65535.0) as u16
        })
        .collect()
}

fn microphone(ts: f64, rng: &mut XorShift) -> f32 {
    use std::f64::consts::TAU;
    let scene = (ts / SCENE_PERIOD_S).floor() as u64 % 4;
    let local = ts - (ts / SCENE_PERIOD_S).floor() * SCENE_PERIOD_S;
    let v = match scene {
        // Tone with harmonics, gently modulated.
        0 => 0.3 * (TAU * 440.0 * ts).sin() + 0.1 * (TAU * 880.0 * ts).sin() * (1.0 + (TAU * 2.0 * ts).sin()) / 2.0,
        // Chirp 300 Hz → 3 kHz.
        1 => 0.35 * (TAU * (300.0 * local + 0.5 * 675.0 * local * local)).sin(),
        // Noise bursts at 4 Hz.
        2 => {
            let gate = if (ts * 4.0).fract() < 0.5 { 0.4 } else { 0.02 };
            gate * rng.next_f32() as f64
        }
        // Near silence.
        _ => 0.003 * rng.next_f32() as f64,
    };
    // Quantise like a 16-bit ADC.
    ((v * 32767.0).round() / 32768.0) as f32
}

fn imu(t: f64, rng: &mut XorShift) -> ImuSample {
    use std::f64::consts::TAU;
    let scene = (t / SCENE_PERIOD_S).floor() as u64 % 3;
    let n = |r: &mut XorShift, s: f64| (s * r.next_f32() as f64) as f32;
    let (accel, gyro) = match scene {
        // Standing still: gravity and sensor noise.
        0 => ([0.0, 0.0, 9.81], [0.0, 0.0, 0.0]),
        // Walking: 1.8 Hz steps.
        1 => {
            let s = (TAU * 1.8 * t).sin();
            (
                [0.8 * s, 0.3 * (TAU * 0.9 * t).sin(), 9.81 + 2.0 * s],
                [0.1 * s, 0.05 * s, 0.02],
            )
        }
        // Turning in place.
        _ => ([0.2, 0.0, 9.81], [0.0, 0.0, 0.8 * (TAU * 0.25 * t).sin()]),
    };
    ImuSample {
        accel: [
            accel[0] as f32 + n(rng, 0.02),
            accel[1] as f32 + n(rng, 0.02),
            accel[2] as f32 + n(rng, 0.02),
        ],
        gyro: [
            gyro[0] as f32 + n(rng, 0.002),
            gyro[1] as f32 + n(rng, 0.002),
            gyro[2] as f32 + n(rng, 0.002),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(sensor: Sensor, rate: f64) -> SyntheticConfig {
        SyntheticConfig {
            sensor,
            scene: Scene::Shapes,
            width: 64,
            height: 48,
            rate_hz: rate,
            sample_rate: 48000,
            chunk_ms: 20,
            seed: 7,
            realtime: false,
            duration_s: 1.0,
        }
    }

    #[test]
    fn deterministic_and_changing() {
        let s = Synthetic::new(cfg(Sensor::Camera, 30.0), 0, StopFlag::default());
        let a = s.generate(3);
        let b = s.generate(3);
        let c = s.generate(200);
        match (&a.data, &b.data, &c.data) {
            (FrameData::Rgb8 { data: x, .. }, FrameData::Rgb8 { data: y, .. }, FrameData::Rgb8 { data: z, .. }) => {
                assert_eq!(x, y);
                assert_ne!(x, z);
                assert_eq!(x.len(), 64 * 48 * 3);
            }
            _ => panic!("camera must give RGB frames"),
        }
        assert_eq!(a.t_ns, 100_000_000);
    }

    #[test]
    fn duration_ends_stream_and_audio_chunks_are_contiguous() {
        let mut s = Synthetic::new(cfg(Sensor::Microphone, 50.0), 5_000, StopFlag::default());
        s.open().unwrap();
        let mut n = 0usize;
        let mut next_t = 5_000;
        while let Some(f) = s.next_frame().unwrap() {
            assert_eq!(f.t_ns, next_t);
            if let FrameData::Audio {
                samples, sample_rate, ..
            } = &f.data
            {
                n += samples.len();
                next_t = 5_000 + (n as i64 * 1_000_000_000 / *sample_rate as i64);
                assert!(samples.iter().all(|v| v.abs() <= 1.0));
            } else {
                panic!("microphone must give audio");
            }
        }
        assert_eq!(n, 48000);
        // Unpaced: its clock is the replay time of what was read.
        assert_eq!(s.clock().kind(), crate::clock::ClockKind::Replay);
        assert_eq!(s.clock().now_ns(), 5_000 + 980_000_000);
    }

    #[test]
    fn keys_take_sensor_defaults_and_errors_name_the_key() {
        let t: toml::Table = toml::from_str("sensor = \"thermal\"\nseed = 9").unwrap();
        let c = parse("rear", t).unwrap();
        assert!(format!("{c:?}").contains("width: 160"), "{c:?}");
        let a = parse("front", toml::from_str("sensor = \"camera\"").unwrap()).unwrap();
        let b = parse("back", toml::from_str("sensor = \"camera\"").unwrap()).unwrap();
        assert_ne!(format!("{a:?}"), format!("{b:?}"), "two cameras get different seeds");
        let t: toml::Table = toml::from_str("sensor = \"camera\"\nrate_hz = 0.0").unwrap();
        assert!(parse("front", t)
            .unwrap_err()
            .to_string()
            .contains("`sources.front.rate_hz`"));
        let t: toml::Table = toml::from_str("sensor = \"camera\"\nfsp = 3").unwrap();
        let e = parse("front", t).unwrap_err().to_string();
        assert!(e.contains("sources.front") && e.contains("fsp"), "{e}");
        let t: toml::Table = toml::from_str("sensor = \"nose\"").unwrap();
        assert!(parse("front", t).is_err());
    }
}
