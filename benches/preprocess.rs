//! Criterion benchmarks of the preprocessing stages on what robots deliver (the inputs
//! of `sensebind bench`): `cargo bench --bench preprocess`.
//!
//! Each group holds its baseline, measured in the same run: the vision group times the
//! daemon's crop-box u8 path against the whole-frame f32 path it replaced
//! (`VisionPrep::clip_views_reference`); the audio group times the whole window next
//! to its two stages. The ratio against the official Python transforms comes from
//! `tools/bench_preprocess.py`, which runs both on the same inputs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sensebind::bench::robot_window;
use sensebind::config::{Config, Crops, VisionMode};
use sensebind::modality::Modality;
use sensebind::preprocess::audio::{AudioPrep, Fbank, Resampler};
use sensebind::preprocess::vision::VisionPrep;
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

criterion_group!(benches, vision, audio);
criterion_main!(benches);
