//! History search benchmark: top-10 over a day of five streams (216 000 windows of
//! the full model's 1024 dims, 2 s windows every 2 s), against brute force in f32 over
//! the same vectors held in memory, measured in the same run.
//!
//! `cargo bench --bench history [-- --windows N --dim D --queries Q]`
//!
//! Two data sets: random unit vectors, and clustered ones (a robot sees the same few
//! scenes for hours: 40 scenes, each window a scene plus noise; queries near a scene),
//! where near-ties make the index re-score more. Prints p50/p95 per method, the ratio
//! brute force / index, how many windows were re-scored, whether the results equal
//! exact search, the disk per hour, and how long a reload of the whole day takes.

mod common;
use common::arg;
use sensebind::history::{History, HistoryOptions, Record, SearchRequest};
use sensebind::modality::{Modality, Target};
use std::time::{Duration, Instant};

fn rng(s: &mut u64) -> f32 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    ((*s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n.max(1e-12));
}

/// f32 dot with 16 independent accumulators (what BLAS-style code does).
fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(16)
        .remainder()
        .iter()
        .zip(b.chunks_exact(16).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n = arg("--windows", 216_000);
    let dim = arg("--dim", 1024);
    let queries = arg("--queries", 60);
    let streams: [(&str, Target); 5] = [
        ("camera", Modality::Vision.into()),
        ("microphone", Modality::Audio.into()),
        ("depth", Modality::Depth.into()),
        ("thermal", Modality::Thermal.into()),
        ("imu", Modality::Imu.into()),
    ];
    println!("history search: {n} windows × {dim} dims, {queries} queries per data set, top-10");
    for clustered in [false, true] {
        let mut seed = 0x5EED_u64 + clustered as u64;
        let centres: Vec<Vec<f32>> = (0..40)
            .map(|_| {
                let mut c: Vec<f32> = (0..dim).map(|_| rng(&mut seed)).collect();
                normalise(&mut c);
                c
            })
            .collect();
        let make = |seed: &mut u64, noise: f32| -> Vec<f32> {
            let mut v: Vec<f32> = if clustered {
                let c = &centres[(rng(seed).abs() * 39.99) as usize];
                c.iter()
                    .map(|x| x + noise * rng(seed) / (dim as f32).sqrt() * 1.7)
                    .collect()
            } else {
                (0..dim).map(|_| rng(seed)).collect()
            };
            normalise(&mut v);
            v
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = HistoryOptions {
            retention_ns: 86_400 * 1_000_000_000,
            max_bytes: 8 << 30,
            segment_ns: 600 * 1_000_000_000,
            sync: Duration::from_secs(1),
        };
        let mut h = History::open(dir.path(), "bench", dim, opts.clone()).expect("open");
        let mut all: Vec<f32> = Vec::with_capacity(n * dim);
        let t0 = Instant::now();
        let now = Instant::now();
        for i in 0..n {
            let (source, target) = streams[i % 5];
            let seq = (i / 5) as i64;
            let v = make(&mut seed, 0.6);
            all.extend_from_slice(&v);
            let r = Record {
                source: source.into(),
                target,
                seq,
                t_start_ns: seq * 2_000_000_000,
                t_end_ns: seq * 2_000_000_000 + 2_000_000_000,
                vector: v,
            };
            h.append(&r, now).expect("append");
        }
        let write_s = t0.elapsed().as_secs_f64();
        let hours = (n / 5) as f64 * 2.0 / 3600.0;
        let bytes = h.bytes();
        h.sync();
        drop(h);
        let t0 = Instant::now();
        let h = History::open(dir.path(), "bench", dim, opts).expect("reload");
        let load_s = t0.elapsed().as_secs_f64();
        assert_eq!(h.len(), n);
        let (mut brute, mut idx, mut rescored) = (Vec::new(), Vec::new(), Vec::new());
        let mut equal = 0;
        for _ in 0..queries {
            let q = make(&mut seed, 1.2);
            // Baseline: every f32 vector in memory, a vectorised dot (16 lanes), on as
            // many threads as the index uses, top-10 by partial sort.
            let t = Instant::now();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
            let per = n.div_ceil(threads);
            let mut s: Vec<(f32, usize)> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let (all, q) = (&all, &q);
                        sc.spawn(move || {
                            let end = ((t + 1) * per).min(n);
                            (t * per..end)
                                .map(|i| (dot16(&all[i * dim..(i + 1) * dim], q), i))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().expect("thread")).collect()
            });
            s.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
            s.truncate(10);
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            brute.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let r = h
                .search(&SearchRequest {
                    vector: q.clone(),
                    k: 10,
                    ..Default::default()
                })
                .expect("search");
            idx.push(t.elapsed().as_secs_f64() * 1e3);
            rescored.push(r.rescored as f64);
            // Equal: the same windows, or at a rank where they differ, scores within
            // 1e-6 (the two sides sum the f32 products in a different order).
            let seq_dot = |i: usize| {
                all[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
            };
            let same = s.len() == r.hits.len()
                && s.iter().zip(&r.hits).all(|((_, i), hit)| {
                    let (seq, src) = ((i / 5) as i64, streams[i % 5].0);
                    (hit.seq == seq && hit.source == src) || (hit.score - seq_dot(*i)).abs() <= 1e-6
                });
            equal += usize::from(same);
        }
        let (b50, b95) = (pct(&mut brute, 0.5), pct(&mut brute, 0.95));
        let (i50, i95) = (pct(&mut idx, 0.5), pct(&mut idx, 0.95));
        println!(
            "{:<9} brute force f32: p50 {b50:7.1} ms  p95 {b95:7.1} ms | index: p50 {i50:6.1} ms  p95 {i95:6.1} ms | ratio p95 {:4.1}× | re-scored p50 {:.0} max {:.0} | equal to exact {equal}/{queries}",
            if clustered { "clustered" } else { "random" },
            b95 / i95,
            pct(&mut rescored, 0.5),
            pct(&mut rescored, 1.0),
        );
        println!(
            "          disk {:.1} MB for {hours:.1} h of five streams = {:.1} MB/h; write {write_s:.1} s; reload {load_s:.2} s; index in memory ≈ {:.0} MB",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / hours,
            (n * (dim + 48)) as f64 / 1e6
        );
    }
}
