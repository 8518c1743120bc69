//! Criterion benchmarks of the preprocessing stages on what robots deliver (the inputs
//! of `sensebind bench`): `cargo bench --bench preprocess`.
//!
//! Each group holds its baseline, measured in the same run: the vision group times the
//! daemon's crop-box u8 path against the whole-frame f32 path it replaced
//! (`VisionPrep::clip_views_reference`); the audio group times the whole window next
//! to its two stages; the batch group times a batch's parallel preprocessing against
//! one thread. The ratio against the official Python transforms comes from
//! `tools/bench_preprocess.py`, which runs both on the same inputs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sensebind::bench::robot_window;
use sensebind::config::{Config, Crops, VisionMode};
use sensebind::engine::worker::{embed_windows_with, preprocess_threads};
use sensebind::engine::{Encoder, EngineError};
use sensebind::modality::Modality;
use sensebind::preprocess::audio::{AudioPrep, Fbank, Resampler};
use sensebind::preprocess::vision::VisionPrep;
use sensebind::preprocess::ModelInput;
use sensebind::preprocess::Preprocessor;
use sensebind::sources::FrameData;
use sensebind::window::WindowData;
use std::hint::black_box;

fn vision(c: &mut Criterion) {
    let cfg = Config::load(None).expect("built-in config");
    let w = robot_window(Modality::Vision, 0).unwrap();
    let WindowData::Frames(frames) = &w.data else {
        unreachable!()
    };
    let raw: Vec<(u32, u32, &[u8])> = frames
        .iter()
        .map(|f| match &f.data {
            FrameData::Rgb8 { width, height, data } => (*width, *height, data.as_slice()),
            _ => unreachable!(),
        })
        .collect();
    for (mode, crops, name) in [
        (VisionMode::Image, Crops::Center, "image-centre"),
        (VisionMode::Video, Crops::Center, "video-centre"),
        (VisionMode::Image, Crops::Three, "image-three"),
    ] {
        let mut vc = cfg.preprocess.vision.clone();
        vc.mode = mode;
        vc.crops = crops;
        let p = VisionPrep::new(vc);
        let mut g = c.benchmark_group(format!("vision window 2x1920x1080 {name}"));
        g.throughput(Throughput::Elements(1));
        g.sample_size(20);
        g.bench_function("daemon (crop box, u8)", |b| {
            b.iter(|| black_box(p.frames(&raw).unwrap()))
        });
        g.bench_function("baseline (whole frame, f32)", |b| {
            b.iter(|| black_box(p.clip_views_reference(&raw)))
        });
        g.finish();
    }
}

fn audio(c: &mut Criterion) {
    let cfg = Config::load(None).expect("built-in config");
    let w = robot_window(Modality::Audio, 0).unwrap();
    let WindowData::Audio { samples, .. } = &w.data else {
        unreachable!()
    };
    let prep = AudioPrep::new(cfg.preprocess.audio.clone());
    let r = Resampler::new(48_000, 16_000);
    let at16 = r.process(samples);
    let fb = Fbank::new(16_000, 128);
    let mut g = c.benchmark_group("audio window 2 s 48 kHz mono");
    g.throughput(Throughput::Elements(1));
    g.bench_function("whole window (daemon)", |b| {
        b.iter(|| black_box(prep.process(&w).unwrap()))
    });
    g.bench_function("stage: resample 48k→16k", |b| {
        b.iter(|| black_box(r.process(samples)))
    });
    g.bench_function("stage: fbank 2 s at 16 kHz", |b| {
        b.iter(|| black_box(fb.compute_flat(&at16)))
    });
    g.finish();
}

/// An encoder that costs nothing, so a group times preprocessing and plumbing alone.
struct NoopEncoder(Vec<usize>);
impl Encoder for NoopEncoder {
    fn modality(&self) -> Modality {
        Modality::Vision
    }
    fn dim(&self) -> usize {
        4
    }
    fn logit_scale(&self) -> f32 {
        1.0
    }
    fn input_shape(&self) -> &[usize] {
        &self.0
    }
    fn provider(&self) -> &str {
        "none"
    }
    fn encode(&self, batch: &[ModelInput]) -> Result<Vec<Vec<f32>>, EngineError> {
        Ok(batch.iter().map(|_| vec![1.0, 0.0, 0.0, 0.0]).collect())
    }
}

fn batch(c: &mut Criterion) {
    let cfg = Config::load(None).expect("built-in config");
    let prep = VisionPrep::new(cfg.preprocess.vision.clone());
    let enc = NoopEncoder(vec![3, 2, 224, 224]);
    let windows: Vec<_> = (0..8).map(|i| robot_window(Modality::Vision, i).unwrap()).collect();
    let refs: Vec<_> = windows.iter().collect();
    let mut g = c.benchmark_group("vision batch of 8 windows, embed_windows, no-op encoder");
    g.throughput(Throughput::Elements(8));
    g.sample_size(20);
    let auto = preprocess_threads(8);
    g.bench_function(format!("daemon ({auto} preprocessing threads)"), |b| {
        b.iter(|| black_box(embed_windows_with(&prep, &enc, &refs, auto)))
    });
    g.bench_function("baseline (1 thread)", |b| {
        b.iter(|| black_box(embed_windows_with(&prep, &enc, &refs, 1)))
    });
    g.finish();
}

criterion_group!(benches, vision, audio, batch);
criterion_main!(benches);
