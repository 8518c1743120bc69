//! IMU windows → `[6, samples]`: accelerometer xyz (m/s²) and gyroscope xyz (rad/s),
//! linearly interpolated onto `samples` evenly spaced times across the window
//! (`t_i = start + i·length/samples`), held constant beyond the first/last reading.
//! Row order and per-sensor scales come from `[preprocess.imu]`.

use super::{bad, ModelInput, PreprocessError, Preprocessor};
use crate::config::{ImuChannel, ImuPrepConfig};
use crate::modality::Modality;
use crate::sources::{ImuSample, Nanos};
use crate::window::{Window, WindowData};

pub struct ImuPrep {
    cfg: ImuPrepConfig,
}

impl ImuPrep {
    pub fn new(cfg: ImuPrepConfig) -> Self {
        ImuPrep { cfg }
    }

    pub fn resample(&self, start: Nanos, end: Nanos, readings: &[(Nanos, ImuSample)]) -> Vec<f32> {
        let n = self.cfg.samples;
        let mut out = vec![0.0f32; 6 * n];
        if readings.is_empty() {
            return out;
        }
        let value = |s: &ImuSample, row: usize| -> f32 {
            match self.cfg.channels.get(row).copied().unwrap_or(ImuChannel::Ax) {
                ImuChannel::Ax => s.accel[0] * self.cfg.accel_scale,
                ImuChannel::Ay => s.accel[1] * self.cfg.accel_scale,
                ImuChannel::Az => s.accel[2] * self.cfg.accel_scale,
                ImuChannel::Gx => s.gyro[0] * self.cfg.gyro_scale,
                ImuChannel::Gy => s.gyro[1] * self.cfg.gyro_scale,
                ImuChannel::Gz => s.gyro[2] * self.cfg.gyro_scale,
            }
        };
        let mut j = 0usize;
        for i in 0..n {
            let t = start as f64 + i as f64 * (end - start) as f64 / n as f64;
            while j + 1 < readings.len() && (readings[j + 1].0 as f64) <= t {
                j += 1;
            }
            let (t0, s0) = readings[j];
            let (w, s1) = match readings.get(j + 1) {
                Some(&(t1, s1)) if (t0 as f64) <= t && t1 > t0 => (((t - t0 as f64) / (t1 - t0) as f64) as f32, s1),
                _ => (0.0, s0),
            };
            for c in 0..6 {
                let a = value(&s0, c);
                out[c * n + i] = a + w * (value(&s1, c) - a);
            }
        }
        out
    }
}

impl Preprocessor for ImuPrep {
    fn modality(&self) -> Modality {
        Modality::Imu
    }
    fn shape(&self) -> Vec<usize> {
        vec![6, self.cfg.samples]
    }
    fn process(&self, w: &Window) -> Result<ModelInput, PreprocessError> {
        match &w.data {
            WindowData::Imu(r) if !r.is_empty() => {
                if r.iter()
                    .any(|(_, s)| s.accel.iter().chain(&s.gyro).any(|v| !v.is_finite()))
                {
                    return Err(bad(w, "IMU readings hold NaN or infinite values"));
                }
                Ok(ModelInput::F32(self.resample(w.t_start_ns, w.t_end_ns, r)))
            }
            _ => Err(bad(w, "expected IMU readings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ramp_is_preserved() {
        let p = ImuPrep::new(ImuPrepConfig {
            samples: 2000,
            accel_scale: 1.0,
            gyro_scale: 1.0,
            channels: vec![
                ImuChannel::Ax,
                ImuChannel::Ay,
                ImuChannel::Az,
                ImuChannel::Gx,
                ImuChannel::Gy,
                ImuChannel::Gz,
            ],
        });
        // 200 Hz for 2 s, accel x = t (seconds).
        let r: Vec<(Nanos, ImuSample)> = (0..400)
            .map(|i| {
                let t = i as f64 / 200.0;
                (
                    (t * 1e9) as Nanos,
                    ImuSample {
                        accel: [t as f32, 0.0, 9.81],
                        gyro: [0.0, 0.0, 1.0],
                    },
                )
            })
            .collect();
        let out = p.resample(0, 2_000_000_000, &r);
        assert_eq!(out.len(), 12000);
        assert!((out[1000] - 1.0).abs() < 1e-5);
        assert!((out[2 * 2000 + 7] - 9.81).abs() < 1e-5);
        assert!((out[5 * 2000 + 1999] - 1.0).abs() < 1e-6);
    }
}
