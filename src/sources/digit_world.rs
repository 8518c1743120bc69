//! The MiniBind digit world, played by the synthetic sensors (`scene = "digits"`,
//! the default): one digit at a time in all five sensors, changing every
//! [`DIGIT_PERIOD_S`] seconds in the fixed order [`SEQUENCE`].
//!
//! The content comes from `assets/digit-world/` (made by
//! `tools/minibind/make_demo_world.py` from the generator the MiniBind pack was
//! trained on, in its *held-out* styles: fonts, writers and voices the pack never
//! saw), compiled into the binary. The sources add their own sensor noise frame by
//! frame. Which digit is shown is a pure function of sensor time (ns since the Unix
//! epoch), so all sources agree without talking to each other, and with the default
//! window grid (origin 0, 2 s) every window holds exactly one digit:
//! - camera, depth, thermal: the digit's picture for the whole period;
//! - microphone: the digit's word spoken once per 2 s slot, [`SPEECH_AT_S`] into it;
//! - IMU: the digit air-written once per 2 s slot.

use super::{ImuSample, Nanos};
use std::sync::OnceLock;

/// Seconds each digit is shown.
pub const DIGIT_PERIOD_S: i64 = 6;
/// Seconds of one spoken word / one air-written digit (the window length).
pub const SLOT_S: i64 = 2;
/// Where the word starts in its slot.
pub const SPEECH_AT_S: f64 = 0.45;
/// The order the digits are shown in.
pub const SEQUENCE: [u8; 10] = [3, 7, 1, 9, 4, 0, 8, 2, 6, 5];
/// The digits' words (the demo's labels are "the number <word>").
pub const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

const NS: i64 = 1_000_000_000;
const IMU_RATE: f64 = 200.0;
const SPEECH_RATE: f64 = 16_000.0;

/// The digit shown at sensor time `t_ns`.
pub fn digit_at(t_ns: Nanos) -> u8 {
    SEQUENCE[t_ns.div_euclid(DIGIT_PERIOD_S * NS).rem_euclid(10) as usize]
}

/// Which of the two pictures of a digit this appearance shows.
fn picture_at(t_ns: Nanos) -> usize {
    (t_ns.div_euclid(DIGIT_PERIOD_S * NS * 10).rem_euclid(2)) as usize
}

/// Start of the 2 s slot holding `t_ns`, and which voice speaks in it.
fn slot_of(t_ns: Nanos) -> (Nanos, usize) {
    let k = t_ns.div_euclid(SLOT_S * NS);
    (k * SLOT_S * NS, k.rem_euclid(2) as usize)
}

pub struct Picture<T> {
    pub width: u32,
    pub height: u32,
    /// Row-major; RGB pictures hold 3 values per pixel.
    pub data: Vec<T>,
}

struct Assets {
    image: Vec<[Picture<u8>; 2]>,
    depth: Vec<Picture<u16>>,
    thermal: Vec<Picture<u16>>,
    speech: Vec<[Vec<f32>; 2]>,
    imu: Vec<Vec<[f32; 6]>>,
}

macro_rules! asset {
    ($name:expr) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/digit-world/", $name)).as_slice()
    };
}

macro_rules! per_digit {
    ($pre:literal, $post:literal) => {
        [
            asset!(concat!($pre, "0", $post)),
            asset!(concat!($pre, "1", $post)),
            asset!(concat!($pre, "2", $post)),
            asset!(concat!($pre, "3", $post)),
            asset!(concat!($pre, "4", $post)),
            asset!(concat!($pre, "5", $post)),
            asset!(concat!($pre, "6", $post)),
            asset!(concat!($pre, "7", $post)),
            asset!(concat!($pre, "8", $post)),
            asset!(concat!($pre, "9", $post)),
        ]
    };
}

fn png(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png).map_err(|e| e.to_string())
}

fn picture<P: image::Pixel>(img: image::ImageBuffer<P, Vec<P::Subpixel>>) -> Picture<P::Subpixel> {
    Picture {
        width: img.width(),
        height: img.height(),
        data: img.into_raw(),
    }
}

fn rgb(bytes: &[u8]) -> Result<Picture<u8>, String> {
    Ok(picture(png(bytes)?.to_rgb8()))
}

fn gray16(bytes: &[u8]) -> Result<Picture<u16>, String> {
    Ok(picture(png(bytes)?.to_luma16()))
}

fn wav(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let r = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    r.into_samples::<i16>()
        .map(|s| s.map(|v| v as f32 / 32768.0).map_err(|e| e.to_string()))
        .collect()
}

fn csv(name: &str, bytes: &[u8]) -> Result<Vec<[f32; 6]>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    super::file::parse_imu_csv(std::path::Path::new(name), text)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.map(|(_, s)| [s.accel[0], s.accel[1], s.accel[2], s.gyro[0], s.gyro[1], s.gyro[2]]))
        .collect()
}

fn load() -> Result<Assets, String> {
    let img0 = per_digit!("image_", "_0.png");
    let img1 = per_digit!("image_", "_1.png");
    let sp0 = per_digit!("speech_", "_0.wav");
    let sp1 = per_digit!("speech_", "_1.wav");
    let depth = per_digit!("depth_", ".png");
    let thermal = per_digit!("thermal_", ".png");
    let imu = per_digit!("imu_", ".csv");
    let mut a = Assets {
        image: Vec::new(),
        depth: Vec::new(),
        thermal: Vec::new(),
        speech: Vec::new(),
        imu: Vec::new(),
    };
    for d in 0..10 {
        a.image.push([rgb(img0[d])?, rgb(img1[d])?]);
        a.speech.push([wav(sp0[d])?, wav(sp1[d])?]);
        a.depth.push(gray16(depth[d])?);
        a.thermal.push(gray16(thermal[d])?);
        let m = csv(&format!("assets/digit-world/imu_{d}.csv"), imu[d])?;
        if m.is_empty() {
            return Err(format!("imu_{d}.csv holds no rows"));
        }
        a.imu.push(m);
    }
    Ok(a)
}

fn assets() -> &'static Assets {
    static A: OnceLock<Assets> = OnceLock::new();
    // The files are compiled in and decoded by a unit test: failing here is a build defect.
    A.get_or_init(|| load().expect("assets/digit-world compiled into the binary must decode"))
}

/// A cheap, deterministic noise source (splitmix64).
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Noise(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Nearest-neighbour resampling of a picture to w×h (c values per pixel).
fn resample<T: Copy>(p: &Picture<T>, w: u32, h: u32, c: usize, mut f: impl FnMut(T) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity((w * h) as usize * c);
    for y in 0..h {
        let sy = (y as u64 * p.height as u64 / h as u64) as usize;
        for x in 0..w {
            let sx = (x as u64 * p.width as u64 / w as u64) as usize;
            let i = (sy * p.width as usize + sx) * c;
            for k in 0..c {
                out.push(f(p.data[i + k]));
            }
        }
    }
    out
}

/// Camera frame (RGB, w×h) at `t_ns`: the digit's picture with ±4 levels of noise.
pub fn camera(w: u32, h: u32, t_ns: Nanos, seed: u64) -> Vec<u8> {
    let p = &assets().image[digit_at(t_ns) as usize][picture_at(t_ns)];
    let mut n = Noise::new(seed ^ t_ns as u64);
    let (mut bits, mut left) = (0u64, 0);
    resample(p, w, h, 3, |v| {
        if left == 0 {
            bits = n.next();
            left = 8;
        }
        left -= 1;
        let d = (bits & 0x7) as i16 - 4;
        bits >>= 8;
        (v as i16 + d).clamp(0, 255) as u8
    })
}

/// Depth frame (mm, w×h): the sign in front of its wall with a few mm of noise and ~1 %
/// invalid pixels.
pub fn depth(w: u32, h: u32, t_ns: Nanos, seed: u64) -> Vec<u16> {
    let p = &assets().depth[digit_at(t_ns) as usize];
    let mut n = Noise::new(seed ^ t_ns as u64);
    resample(p, w, h, 1, |v| {
        let r = n.next();
        if r % 100 == 0 {
            0
        } else {
            (v as i32 + ((r >> 8) % 9) as i32 - 4).clamp(1, 65535) as u16
        }
    })
}

/// Thermal frame (Y16 centikelvin, w×h): the warm digit with ~0.1 K of noise.
pub fn thermal(w: u32, h: u32, t_ns: Nanos, seed: u64) -> Vec<u16> {
    let p = &assets().thermal[digit_at(t_ns) as usize];
    let mut n = Noise::new(seed ^ t_ns as u64);
    resample(p, w, h, 1, |v| {
        (v as f32 + 10.0 * n.uniform()).clamp(0.0, 65535.0) as u16
    })
}

/// One microphone sample at sensor time `t_ns` (float in [-1, 1]).
pub fn microphone(t_ns: Nanos, seed: u64) -> f32 {
    let (slot, voice) = slot_of(t_ns);
    let d = digit_at(t_ns) as usize;
    let speech = &assets().speech[d][voice];
    let u = (t_ns - slot) as f64 / 1e9 - SPEECH_AT_S;
    let mut v = 0.0f32;
    if u >= 0.0 {
        let x = u * SPEECH_RATE;
        let i = x.floor() as usize;
        if i + 1 < speech.len() {
            let f = (x - i as f64) as f32;
            v = speech[i] * (1.0 - f) + speech[i + 1] * f;
        }
    }
    let mut n = Noise::new(seed ^ t_ns as u64);
    v += 0.004 * n.uniform();
    // Quantise like a 16-bit ADC.
    ((v * 32767.0).round() / 32768.0).clamp(-1.0, 1.0)
}

/// One IMU reading at sensor time `t_ns`: the digit air-written over its 2 s slot.
pub fn imu(t_ns: Nanos, seed: u64) -> ImuSample {
    let (slot, _) = slot_of(t_ns);
    let rows = &assets().imu[digit_at(t_ns) as usize];
    let x = (t_ns - slot) as f64 / 1e9 * IMU_RATE;
    let i = (x.floor() as usize).min(rows.len() - 1);
    let j = (i + 1).min(rows.len() - 1);
    let f = (x - x.floor()) as f32;
    let mut n = Noise::new(seed ^ t_ns as u64);
    let mut r = [0f32; 6];
    for (k, v) in r.iter_mut().enumerate() {
        let s = if k < 3 { 0.03 } else { 0.005 };
        *v = rows[i][k] * (1.0 - f) + rows[j][k] * f + s * n.uniform();
    }
    ImuSample {
        accel: [r[0], r[1], r[2]],
        gyro: [r[3], r[4], r[5]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_decodes_with_the_expected_shape() {
        let a = load().unwrap();
        for d in 0..10 {
            for p in &a.image[d] {
                assert_eq!((p.width, p.height, p.data.len()), (320, 240, 320 * 240 * 3));
            }
            assert_eq!((a.depth[d].width, a.depth[d].height), (320, 240));
            assert_eq!((a.thermal[d].width, a.thermal[d].height), (160, 120));
            assert_eq!(a.imu[d].len(), 400);
            for s in &a.speech[d] {
                // A spoken word: 0.2–1.5 s at 16 kHz, with signal in it.
                assert!((3_200..24_000).contains(&s.len()), "speech length {}", s.len());
                assert!(s.iter().any(|v| v.abs() > 0.2));
            }
        }
    }

    #[test]
    fn schedule_holds_one_digit_per_window_and_visits_all_ten() {
        let t0 = 1_700_000_004 * NS; // a multiple of 6 s
        assert_eq!(t0 % (DIGIT_PERIOD_S * NS), 0);
        let mut seen = std::collections::BTreeSet::new();
        for w in 0..30 {
            let start = t0 + w * 2 * NS;
            let d = digit_at(start);
            assert_eq!(digit_at(start + 2 * NS - 1), d, "window {w} straddles two digits");
            seen.insert(d);
        }
        assert_eq!(seen.len(), 10);
        assert_ne!(digit_at(t0 - 1), digit_at(t0));
    }

    #[test]
    fn the_word_is_spoken_inside_its_slot_and_frames_follow_the_digit() {
        let t0 = 1_700_000_000 * NS;
        let energy = |from: f64, to: f64| -> f32 {
            let n = ((to - from) * 16_000.0) as i64;
            (0..n)
                .map(|k| microphone(t0 + ((from * 1e9) as i64) + k * NS / 16_000, 1).powi(2))
                .sum::<f32>()
                / n as f32
        };
        assert!(
            energy(0.5, 1.0) > 20.0 * energy(0.0, 0.4),
            "speech must stand above the noise floor"
        );
        assert!(energy(1.9, 2.0) < 1e-4);
        let a = camera(64, 48, t0, 1);
        let b = camera(64, 48, t0 + 6 * NS, 1);
        assert_eq!(a.len(), 64 * 48 * 3);
        assert_ne!(a, b);
        let s = imu(t0 + NS, 1);
        assert!(s.accel.iter().chain(&s.gyro).all(|v| v.is_finite()));
    }
}
