//! `sensebind bench`: the daemon's own preprocessing and encoder paths, run as fast as
//! they go on windows of what robots deliver.
//!
//! Per modality, on [`robot_window`]s (vision: 2 frames of 1920×1080 RGB; audio: 2 s at
//! 48 kHz mono; depth: 848×480 u16; thermal: 160×120 Y16; IMU: 400 samples; text: one
//! prompt), three timed phases share the time budget:
//! 1. preprocessing alone (`Preprocessor::views`, as the worker calls it): p50 per window;
//! 2. inference alone (`Encoder::encode` on `batch` preprocessed windows): p50 of each
//!    call divided by `batch`;
//! 3. end to end: `worker::embed_windows` (the daemon's one path from windows to
//!    embeddings: preprocess each window, one batched encoder call) on `batch`
//!    windows at a time: windows per second.
//!
//! The first call of each phase is a warm-up and is not timed (ONNX Runtime allocates
//! its arena then; TensorRT builds its engine at session creation).

use crate::config::Config;
use crate::engine::worker::embed_windows;
use crate::engine::Encoder;
use crate::modality::Modality;
use crate::pipeline::Models;
use crate::preprocess::{ModelInput, Preprocessor};
use crate::sources::{Frame, FrameData, ImuSample};
use crate::window::{Window, WindowData};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `bench` reports per modality (with `--json`, exactly these keys).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub modality: Modality,
    /// Preprocessing per window, median (ms).
    pub preprocess_ms: f64,
    /// Inference per window (batched call ÷ batch), median (ms).
    pub infer_ms: f64,
    /// End-to-end windows per second (preprocessing + inference, one thread feeding).
    pub windows_per_s: f64,
    pub batch: usize,
    /// The execution provider the encoder runs on.
    pub provider: String,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds per modality, shared by the three phases.
    pub seconds: f64,
    /// Windows per encoder call.
    pub batch: usize,
    /// ONNX Runtime intra-op threads the encoders were built with (reported).
    pub threads: usize,
}

/// The modalities `bench` runs by default: the sensed ones and text.
pub const DEFAULT_MODALITIES: [Modality; 6] = [
    Modality::Vision,
    Modality::Audio,
    Modality::Depth,
    Modality::Thermal,
    Modality::Imu,
    Modality::Text,
];

/// A text prompt of typical length for the text encoder.
pub const PROMPT: &str = "a person walking a dog past the robot on a rainy street";

/// Deterministic pseudo-random numbers (no dependency, same inputs every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn unit(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32
    }
}

/// A textured RGB frame: gradients, edges and noise, so no filter tap sees a constant.
pub fn rgb_frame(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut r = Lcg(seed);
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            let stripe = if (x / 16 + y / 12) % 2 == 0 { 48 } else { 0 };
            let base = [
                x * 200 / width.max(1),
                y * 200 / height.max(1),
                (x + y) * 100 / (width + height).max(1),
            ];
            for b in base {
                out.push((b + stripe + (r.next() & 15)).min(255) as u8);
            }
        }
    }
    out
}

/// The window a robot would deliver for `modality` (2 s long), or `None` for text,
/// which has no windows.
pub fn robot_window(modality: Modality, seq: i64) -> Option<Window> {
    const LEN: i64 = 2_000_000_000;
    let (t0, t1) = (seq * LEN, (seq + 1) * LEN);
    let frame = |t_ns: i64, data: FrameData| Arc::new(Frame { t_ns, data });
    let data = match modality {
        Modality::Vision => WindowData::Frames(
            (0..2)
                .map(|i| {
                    frame(
                        t0 + i * LEN / 2,
                        FrameData::Rgb8 {
                            width: 1920,
                            height: 1080,
                            data: rgb_frame(1920, 1080, seq as u64 * 2 + i as u64),
                        },
                    )
                })
                .collect(),
        ),
        Modality::Audio => {
            let mut r = Lcg(seq as u64);
            let samples: Vec<f32> = (0..96_000)
                .map(|i| {
                    let t = i as f32 / 48_000.0;
                    0.3 * (2.0 * std::f32::consts::PI * (300.0 + 900.0 * t) * t).sin() + 0.05 * (r.unit() - 0.5)
                })
                .collect();
            WindowData::Audio {
                sample_rate: 48_000,
                channels: 1,
                valid: samples.len(),
                samples,
            }
        }
        Modality::Depth => {
            let mut r = Lcg(seq as u64);
            let (w, h) = (848u32, 480u32);
            let data = (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    if r.next() % 50 == 0 {
                        0 // invalid pixels, as stereo depth has
                    } else {
                        (500 + x * 4 + y * 3) as u16
                    }
                })
                .collect();
            WindowData::Frames(vec![frame(
                t0 + LEN / 2,
                FrameData::Depth16 {
                    width: w,
                    height: h,
                    data,
                },
            )])
        }
        Modality::Thermal => {
            let mut r = Lcg(seq as u64);
            let (w, h) = (160u32, 120u32);
            let data = (0..w * h)
                .map(|i| (7000 + (i % w) * 20 + (i / w) * 10 + (r.next() & 63)) as u16)
                .collect();
            WindowData::Frames(vec![frame(
                t0 + LEN / 2,
                FrameData::Thermal16 {
                    width: w,
                    height: h,
                    data,
                },
            )])
        }
        Modality::Imu => WindowData::Imu(
            (0..400)
                .map(|i| {
                    let t = i as f32 / 200.0;
                    (
                        t0 + i * LEN / 400,
                        ImuSample {
                            accel: [0.2 * (3.0 * t).sin(), 0.1 * (5.0 * t).cos(), 9.81],
                            gyro: [0.05 * (2.0 * t).sin(), 0.02, 0.01 * (7.0 * t).cos()],
                        },
                    )
                })
                .collect(),
        ),
        Modality::Text => return None,
    };
    Some(Window {
        source: format!("bench-{modality}").into(),
        modality,
        seq,
        t_start_ns: t0,
        t_end_ns: t1,
        coverage: 1.0,
        data,
    })
}

/// Write the vision and audio benchmark windows, and what the daemon's preprocessing
/// makes of them, to `dir` for other programs to time the same work on the same bytes
/// (`tools/bench_vs_official.py`): `vision_0.rgb`, `vision_1.rgb` (1920×1080 RGB8),
/// `audio.f32` (96 000 f32 LE samples, 48 kHz mono), `vision.tensor.f32`
/// (`[3, 2, 224, 224]`) and `audio.tensor.f32` (`[1, 128, 204]`), plus `inputs.json`
/// describing them.
pub fn write_inputs(
    dir: &std::path::Path,
    preprocessors: &std::collections::BTreeMap<Modality, Arc<dyn Preprocessor>>,
) -> Result<(), String> {
    let io =
        |p: std::path::PathBuf, bytes: &[u8]| std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()));
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tensor = |m: Modality, w: &Window| -> Result<Vec<f32>, String> {
        let p = preprocessors.get(&m).ok_or_else(|| format!("no {m} preprocessor"))?;
        match p.process(w).map_err(|e| e.to_string())? {
            ModelInput::F32(v) => Ok(v),
            ModelInput::I64(_) => Err(format!("{m}: unexpected integer input")),
        }
    };
    let vision = robot_window(Modality::Vision, 0).expect("sensed");
    if let WindowData::Frames(frames) = &vision.data {
        for (i, f) in frames.iter().enumerate() {
            if let FrameData::Rgb8 { data, .. } = &f.data {
                io(dir.join(format!("vision_{i}.rgb")), data)?;
            }
        }
    }
    io(
        dir.join("vision.tensor.f32"),
        &f32s(&tensor(Modality::Vision, &vision)?),
    )?;
    let audio = robot_window(Modality::Audio, 0).expect("sensed");
    if let WindowData::Audio { samples, .. } = &audio.data {
        io(dir.join("audio.f32"), &f32s(samples))?;
    }
    io(dir.join("audio.tensor.f32"), &f32s(&tensor(Modality::Audio, &audio)?))?;
    let info = serde_json::json!({
        "vision": {"frames": ["vision_0.rgb", "vision_1.rgb"], "width": 1920, "height": 1080,
                   "tensor": "vision.tensor.f32", "tensor_shape": [3, 2, 224, 224]},
        "audio": {"samples": "audio.f32", "sample_rate": 48000, "channels": 1,
                  "tensor": "audio.tensor.f32", "tensor_shape": [1, 128, 204]},
    });
    io(dir.join("inputs.json"), info.to_string().as_bytes())
}

/// Each modality's embedding of its benchmark window (seq 0; text: [`PROMPT`]), to
/// compare providers, threads or packs (`bench --vectors`; cosine in
/// tools/gpu-check.sh and tools/quantize_pack.py).
/// Settle what `sensebind bench` runs: the pack (`pack` overrides `pack.path`), the
/// thread count (explicit, so the one reported is the one that ran: `threads`, else
/// `engine.intra_threads`, else every CPU) and the modalities (`names`, each one the
/// pack must have; else [`DEFAULT_MODALITIES`] the pack has).
pub fn plan(
    cfg: &mut Config,
    pack: Option<String>,
    names: Option<&[String]>,
    threads: Option<usize>,
) -> Result<Vec<Modality>, String> {
    if let Some(p) = pack {
        cfg.pack.path = p;
    }
    let threads = threads.unwrap_or(if cfg.engine.intra_threads > 0 {
        cfg.engine.intra_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    });
    cfg.engine.intra_threads = threads;
    let pack = crate::pack::Pack::load(&cfg.pack.path).map_err(|e| e.to_string())?;
    match names {
        Some(names) => names
            .iter()
            .map(|n| {
                let m: Modality = n.trim().parse().map_err(|e| format!("--modalities: {e}"))?;
                if pack.spec(m).is_some() {
                    Ok(m)
                } else {
                    Err(format!("--modalities: the pack {} has no {m} encoder", pack.location))
                }
            })
            .collect(),
        None => Ok(DEFAULT_MODALITIES
            .into_iter()
            .filter(|m| pack.spec(*m).is_some())
            .collect()),
    }
}

/// `bench --vectors` lines: each modality's embedding of its benchmark window, with
/// the provider that computed it.
pub fn vector_lines(models: &Models, mods: &[Modality]) -> Result<Vec<String>, String> {
    Ok(vectors(models, mods)?
        .into_iter()
        .map(|(m, v)| {
            let e = &models.encoders[&m];
            let nodes: serde_json::Map<String, serde_json::Value> = e
                .nodes_per_provider()
                .into_iter()
                .map(|(p, n)| (p, serde_json::json!(n)))
                .collect();
            serde_json::json!({"modality": m, "embedding": v, "provider": e.provider(), "provider_nodes": nodes})
                .to_string()
        })
        .collect())
}

pub fn vectors(models: &Models, mods: &[Modality]) -> Result<Vec<(Modality, Vec<f32>)>, String> {
    let mut out = Vec::new();
    for &m in mods {
        let enc = models
            .encoders
            .get(&m)
            .ok_or_else(|| format!("the pack has no {m} encoder"))?;
        let v = if m == Modality::Text {
            enc.encode(&[models.text.input(PROMPT)])
                .map_err(|e| e.to_string())?
                .remove(0)
        } else {
            let prep = models
                .preprocessors
                .get(&m)
                .ok_or_else(|| format!("no {m} preprocessor"))?;
            let w = robot_window(m, 0).expect("sensed modality");
            embed_windows(prep.as_ref(), enc.as_ref(), &[&w]).remove(0)?
        };
        out.push((m, v));
    }
    Ok(out)
}

/// Median of durations, in ms.
pub fn p50_ms(v: &mut [Duration]) -> f64 {
    percentile_ms(v, 0.5)
}

/// The `q` quantile (nearest rank) of durations, in ms.
pub fn percentile_ms(v: &mut [Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

/// Run `f` once untimed, then until `budget` has passed (at least `min` timed runs).
fn timed(budget: Duration, min: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Vec<Duration>, String> {
    f()?;
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < min || start.elapsed() < budget {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Benchmark one modality with the loaded models.
pub fn bench_modality(models: &Models, m: Modality, opt: &BenchOptions) -> Result<BenchResult, String> {
    let enc: &dyn Encoder = models
        .encoders
        .get(&m)
        .map(|e| e.as_ref())
        .ok_or_else(|| format!("the pack has no {m} encoder"))?;
    let batch = opt.batch.max(1);
    let phase = Duration::from_secs_f64(opt.seconds.max(0.0) / 4.0);
    let (preprocess_ms, infer_ms, windows_per_s);
    if m == Modality::Text {
        let mut prep = timed(phase, 3, || {
            std::hint::black_box(models.text.input(PROMPT));
            Ok(())
        })?;
        let inputs: Vec<ModelInput> = (0..batch).map(|_| models.text.input(PROMPT)).collect();
        let mut infer = timed(phase, 3, || enc.encode(&inputs).map(drop).map_err(|e| e.to_string()))?;
        let e2e = timed(phase * 2, 3, || {
            let inputs: Vec<ModelInput> = (0..batch).map(|_| models.text.input(PROMPT)).collect();
            enc.encode(&inputs).map(drop).map_err(|e| e.to_string())
        })?;
        preprocess_ms = p50_ms(&mut prep);
        infer_ms = p50_ms(&mut infer) / batch as f64;
        windows_per_s = (e2e.len() * batch) as f64 / e2e.iter().sum::<Duration>().as_secs_f64();
    } else {
        let prep: &dyn Preprocessor = models
            .preprocessors
            .get(&m)
            .map(|p| p.as_ref())
            .ok_or_else(|| format!("no {m} preprocessor"))?;
        let windows: Vec<Window> = (0..batch as i64)
            .map(|i| robot_window(m, i).expect("sensed modality"))
            .collect();
        let mut k = 0usize;
        let mut pre = timed(phase, 3, || {
            k += 1;
            prep.views(&windows[k % windows.len()])
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        let mut inputs = Vec::new();
        for w in &windows {
            inputs.extend(prep.views(w).map_err(|e| e.to_string())?);
        }
        let mut infer = timed(phase, 3, || enc.encode(&inputs).map(drop).map_err(|e| e.to_string()))?;
        let refs: Vec<&Window> = windows.iter().collect();
        let e2e = timed(phase * 2, 3, || {
            match embed_windows(prep, enc, &refs).into_iter().find_map(Result::err) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })?;
        preprocess_ms = p50_ms(&mut pre);
        infer_ms = p50_ms(&mut infer) / batch as f64;
        windows_per_s = (e2e.len() * batch) as f64 / e2e.iter().sum::<Duration>().as_secs_f64();
    }
    Ok(BenchResult {
        modality: m,
        preprocess_ms,
        infer_ms,
        windows_per_s,
        batch,
        provider: enc.provider().to_string(),
        threads: opt.threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_windows_have_the_sizes_robots_deliver() {
        let Some(Window {
            data: WindowData::Frames(f),
            ..
        }) = robot_window(Modality::Vision, 0)
        else {
            panic!()
        };
        assert_eq!(f.len(), 2);
        assert!(
            matches!(f[0].data, FrameData::Rgb8 { width: 1920, height: 1080, ref data } if data.len() == 1920 * 1080 * 3)
        );
        let Some(Window {
            data: WindowData::Audio { samples, .. },
            ..
        }) = robot_window(Modality::Audio, 0)
        else {
            panic!()
        };
        assert_eq!(samples.len(), 96_000);
        assert!(robot_window(Modality::Text, 0).is_none());
        let Some(Window {
            data: WindowData::Imu(s),
            ..
        }) = robot_window(Modality::Imu, 3)
        else {
            panic!()
        };
        assert_eq!(s.len(), 400);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<Duration> = [5, 1, 4, 2, 3].iter().map(|&ms| Duration::from_millis(ms)).collect();
        assert_eq!(p50_ms(&mut v), 3.0);
        assert_eq!(percentile_ms(&mut v, 0.99), 5.0);
        assert!(p50_ms(&mut []).is_nan());
    }
}
