//! Microphone windows → ImageBind's audio input `[1, num_mel_bins, target_length]`.
//!
//! Follows `imagebind/data.py` exactly in order:
//! 1. resample to 16 kHz like `torchaudio.functional.resample` (windowed sinc, Hann,
//!    lowpass width 6, rolloff 0.99);
//! 2. `waveform -= waveform.mean()` over all channels;
//! 3. `torchaudio.compliance.kaldi.fbank` on channel 0: 25 ms frames every 10 ms
//!    (snip edges), remove DC per frame, pre-emphasis 0.97, symmetric Hann window,
//!    zero-pad to 512, power spectrum, 128 HTK mel bins (20 Hz – Nyquist), log with a
//!    float-epsilon floor, no energy, no dither;
//! 4. transpose to `[bins, frames]`, zero-pad or crop to `target_length` frames;
//! 5. `(x - mean) / std` (after padding, so padded frames become −mean/std).

use super::{bad, ModelInput, PreprocessError, Preprocessor};
use crate::config::AudioPrepConfig;
use crate::modality::Modality;
use crate::window::{Window, WindowData};
use realfft::RealFftPlanner;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const FRAME_MS: f64 = 25.0;
const SHIFT_MS: f64 = 10.0;
const PREEMPH: f32 = 0.97;
const LOW_FREQ: f64 = 20.0;
/// Largest resampling kernel built (taps over all phases); 44.1 kHz → 16 kHz needs 76k.
pub const MAX_KERNEL_TAPS: usize = 4_000_000;

/// Windowed-sinc resampler with torchaudio's kernel (`sinc_interp_hann`).
#[derive(Debug, Clone)]
pub struct Resampler {
    orig: usize,
    new: usize,
    width: usize,
    /// `new` phases × `2·width + orig` taps.
    kernel: Vec<f32>,
}

/// Dot product with 8 independent sums, so the compiler can keep them in SIMD lanes
/// (a single running f32 sum must be added in order, one add latency per element).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Resampler {
    pub fn new(orig_freq: u32, new_freq: u32) -> Self {
        const LOWPASS_WIDTH: f64 = 6.0;
        const ROLLOFF: f64 = 0.99;
        let g = gcd(orig_freq as usize, new_freq as usize).max(1);
        let orig = orig_freq as usize / g;
        let new = new_freq as usize / g;
        let base = orig.min(new) as f64 * ROLLOFF;
        let width = (LOWPASS_WIDTH * orig as f64 / base).ceil() as usize;
        let taps = 2 * width + orig;
        let mut kernel = Vec::with_capacity(new * taps);
        let scale = base / orig as f64;
        for p in 0..new {
            for k in 0..taps {
                let idx = (k as f64 - width as f64) / orig as f64;
                let mut t = (-(p as f64) / new as f64 + idx) * base;
                t = t.clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH);
                let window = (t * std::f64::consts::PI / LOWPASS_WIDTH / 2.0).cos().powi(2);
                let tp = t * std::f64::consts::PI;
                let sinc = if tp == 0.0 { 1.0 } else { tp.sin() / tp };
                kernel.push((sinc * window * scale) as f32);
            }
        }
        Resampler {
            orig,
            new,
            width,
            kernel,
        }
    }

    /// Resample one channel; output length `ceil(new * len / orig)`.
    pub fn process(&self, x: &[f32]) -> Vec<f32> {
        if self.orig == self.new {
            return x.to_vec();
        }
        let taps = 2 * self.width + self.orig;
        let len = x.len();
        // Zero padding: `width` on the left, `width + orig` on the right.
        let mut padded = vec![0.0f32; len + 2 * self.width + self.orig];
        padded[self.width..self.width + len].copy_from_slice(x);
        let target = (self.new * len).div_ceil(self.orig);
        let mut out = Vec::with_capacity(target);
        let frames = (padded.len() - taps) / self.orig + 1;
        'outer: for m in 0..frames {
            let seg = &padded[m * self.orig..m * self.orig + taps];
            for p in 0..self.new {
                if out.len() == target {
                    break 'outer;
                }
                out.push(dot(seg, &self.kernel[p * taps..(p + 1) * taps]));
            }
        }
        out
    }
}

/// Kaldi-compatible log mel filterbank (torchaudio semantics, see module docs).
pub struct Fbank {
    sample_rate: u32,
    num_bins: usize,
    window_size: usize,
    shift: usize,
    padded: usize,
    window: Vec<f32>,
    /// Each mel bin's triangle: the first FFT bin it covers and its non-zero weights
    /// (torchaudio's dense `num_bins × (padded/2 + 1)` matrix without its zeros; the
    /// Nyquist column is zero there too).
    mel: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn realfft::RealToComplex<f32>>,
}

fn mel_scale(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

impl Fbank {
    pub fn new(sample_rate: u32, num_bins: usize) -> Self {
        let window_size = (sample_rate as f64 * FRAME_MS * 0.001) as usize;
        let shift = (sample_rate as f64 * SHIFT_MS * 0.001) as usize;
        let padded = window_size.next_power_of_two();
        // torch.hann_window(N, periodic=False)
        let window = (0..window_size)
            .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (window_size - 1) as f64).cos()) as f32)
            .collect();
        let nfft = padded / 2;
        let nyquist = 0.5 * sample_rate as f64;
        let bin_width = sample_rate as f64 / padded as f64;
        let (mlo, mhi) = (mel_scale(LOW_FREQ), mel_scale(nyquist));
        let delta = (mhi - mlo) / (num_bins + 1) as f64;
        let mut mel = Vec::with_capacity(num_bins);
        for b in 0..num_bins {
            let left = mlo + b as f64 * delta;
            let center = mlo + (b + 1) as f64 * delta;
            let right = mlo + (b + 2) as f64 * delta;
            let row: Vec<f32> = (0..nfft)
                .map(|k| {
                    let m = mel_scale(bin_width * k as f64);
                    let up = (m - left) / (center - left);
                    let down = (right - m) / (right - center);
                    up.min(down).max(0.0) as f32
                })
                .collect();
            let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
            let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
            mel.push((first, row[first..last].to_vec()));
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(padded);
        Fbank {
            sample_rate,
            num_bins,
            window_size,
            shift,
            padded,
            window,
            mel,
            fft,
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of frames for `n` samples (snip_edges = true).
    pub fn num_frames(&self, n: usize) -> usize {
        if n < self.window_size {
            0
        } else {
            1 + (n - self.window_size) / self.shift
        }
    }

    /// Log mel energies, `[frames][num_bins]`.
    pub fn compute(&self, x: &[f32]) -> Vec<Vec<f32>> {
        let flat = self.compute_flat(x);
        flat.chunks_exact(self.num_bins).map(|r| r.to_vec()).collect()
    }

    /// Log mel energies, frame-major `frames × num_bins`, in one allocation.
    pub fn compute_flat(&self, x: &[f32]) -> Vec<f32> {
        let nframes = self.num_frames(x.len());
        let mut buf = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; self.padded / 2 + 1];
        let eps = f32::EPSILON;
        let mut out = vec![0.0f32; nframes * self.num_bins];
        for (f, row) in out.chunks_exact_mut(self.num_bins.max(1)).enumerate().take(nframes) {
            let frame = &x[f * self.shift..f * self.shift + self.window_size];
            let mean = frame.iter().sum::<f32>() / self.window_size as f32;
            // Remove DC, pre-emphasis (first sample uses itself), window, zero pad.
            buf[self.window_size..].iter_mut().for_each(|v| *v = 0.0);
            buf[0] = (frame[0] - mean) * (1.0 - PREEMPH) * self.window[0];
            for i in 1..self.window_size {
                buf[i] = ((frame[i] - mean) - PREEMPH * (frame[i - 1] - mean)) * self.window[i];
            }
            self.fft
                .process_with_scratch(&mut buf, &mut spec, &mut scratch)
                .expect("buffers come from the same plan");
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.norm_sqr();
            }
            for (v, (first, w)) in row.iter_mut().zip(&self.mel) {
                *v = dot(w, &power[*first..*first + w.len()]).max(eps).ln();
            }
        }
        out
    }
}

pub struct AudioPrep {
    cfg: AudioPrepConfig,
    fbank: Fbank,
    resamplers: Mutex<HashMap<u32, Arc<Resampler>>>,
}

impl AudioPrep {
    pub fn new(cfg: AudioPrepConfig) -> Self {
        let fbank = Fbank::new(cfg.sample_rate, cfg.num_mel_bins);
        AudioPrep {
            cfg,
            fbank,
            resamplers: Mutex::new(HashMap::new()),
        }
    }

    /// The resampler from `from` Hz, or `None` when the rates have no small ratio (the
    /// polyphase kernel would exceed [`MAX_KERNEL_TAPS`]).
    fn resampler(&self, from: u32) -> Option<Arc<Resampler>> {
        let g = gcd(from as usize, self.cfg.sample_rate as usize).max(1);
        let (orig, new) = (from as usize / g, self.cfg.sample_rate as usize / g);
        if new * (orig + 2 * (7 * orig / new.min(orig).max(1) + 1)) > MAX_KERNEL_TAPS {
            return None;
        }
        let mut m = self.resamplers.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            m.entry(from)
                .or_insert_with(|| Arc::new(Resampler::new(from, self.cfg.sample_rate)))
                .clone(),
        )
    }

    /// Interleaved samples at `sample_rate` → `[1, bins, target_length]`, flattened.
    pub fn waveform(&self, sample_rate: u32, channels: u16, interleaved: &[f32]) -> Result<Vec<f32>, String> {
        let ch = channels.max(1) as usize;
        let n = interleaved.len() / ch;
        let mut chans: Vec<Vec<f32>> = (0..ch)
            .map(|c| (0..n).map(|i| interleaved[i * ch + c]).collect())
            .collect();
        if sample_rate != self.cfg.sample_rate {
            let r = self.resampler(sample_rate).ok_or_else(|| {
                format!(
                    "cannot resample {sample_rate} Hz to {} Hz (no small rate ratio)",
                    self.cfg.sample_rate
                )
            })?;
            chans = chans.iter().map(|c| r.process(c)).collect();
        }
        let total: usize = chans.iter().map(|c| c.len()).sum();
        let mean = if total == 0 {
            0.0
        } else {
            chans.iter().flatten().map(|&v| v as f64).sum::<f64>() / total as f64
        } as f32;
        let ch0: Vec<f32> = chans[0].iter().map(|v| v - mean).collect();
        let fb = self.fbank.compute_flat(&ch0);
        let (bins, target) = (self.cfg.num_mel_bins, self.cfg.target_length);
        let mut out = vec![0.0f32; bins * target];
        for (t, row) in fb.chunks_exact(bins.max(1)).take(target).enumerate() {
            for (b, v) in row.iter().enumerate() {
                out[b * target + t] = *v;
            }
        }
        let (m, s) = (self.cfg.mean, self.cfg.std);
        out.iter_mut().for_each(|v| *v = (*v - m) / s);
        Ok(out)
    }
}

impl Preprocessor for AudioPrep {
    fn modality(&self) -> Modality {
        Modality::Audio
    }
    fn shape(&self) -> Vec<usize> {
        vec![1, self.cfg.num_mel_bins, self.cfg.target_length]
    }
    fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
        match &w.data {
            WindowData::Audio {
                sample_rate,
                channels,
                samples,
                valid,
            } => {
                if *sample_rate == 0 || *channels == 0 {
                    return Err(bad(w, "audio with a 0 Hz rate or 0 channels"));
                }
                if samples.iter().any(|v| !v.is_finite()) {
                    return Err(bad(w, "audio holds NaN or infinite samples"));
                }
                let n = (*valid).min(samples.len() / *channels as usize) * *channels as usize;
                self.waveform(*sample_rate, *channels, &samples[..n])
                    .map(ModelInput::F32)
                    .map_err(|e| bad(w, e))
            }
            _ => Err(bad(w, "expected audio samples")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AudioPrepConfig {
        AudioPrepConfig {
            sample_rate: 16000,
            num_mel_bins: 128,
            target_length: 204,
            mean: -4.268,
            std: 9.138,
        }
    }

    #[test]
    fn two_seconds_give_198_frames_then_padding() {
        let p = AudioPrep::new(cfg());
        let x: Vec<f32> = (0..32000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        assert_eq!(p.fbank.num_frames(32000), 198);
        let out = p.waveform(16000, 1, &x).unwrap();
        assert!(p.waveform(44101, 1, &x).unwrap_err().contains("44101 Hz"));
        assert_eq!(out.len(), 128 * 204);
        // Padded frames (198..204) are zeros before normalisation: 4.268 / 9.138.
        let pad = 4.268f32 / 9.138;
        assert!((out[200] - pad).abs() < 1e-6);
        assert!((out[197] - pad).abs() > 1e-3);
    }

    #[test]
    fn tone_peaks_in_the_right_mel_bin() {
        let fb = Fbank::new(16000, 128);
        let x: Vec<f32> = (0..16000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
            .collect();
        let rows = fb.compute(&x);
        let row = &rows[50];
        let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        // Centre frequency of the argmax bin must be near 1 kHz.
        let (lo, hi) = (mel_scale(20.0), mel_scale(8000.0));
        let c = lo + (argmax + 1) as f64 * (hi - lo) / 129.0;
        let hz = 700.0 * ((c / 1127.0).exp() - 1.0);
        assert!((hz - 1000.0).abs() < 60.0, "peak at {hz} Hz");
    }

    #[test]
    fn resampler_keeps_a_tone_and_length() {
        for from in [44100u32, 48000, 8000] {
            let r = Resampler::new(from, 16000);
            let n = from as usize; // 1 s
            let x: Vec<f32> = (0..n)
                .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / from as f32).sin())
                .collect();
            let y = r.process(&x);
            assert_eq!(y.len(), 16000, "from {from}");
            // Compare with the ideal tone away from the edges.
            let err = (1000..15000)
                .map(|i| (y[i] - (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin()).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 0.01, "from {from}: max error {err}");
        }
    }
}
