//! ROS 2 Image decoding: one 1920×1080 `sensor_msgs/msg/Image` (CDR, as a `ros2`
//! source receives it) to a sensebind frame, against the floor of one plain copy of
//! its pixels measured in the same run.
//!
//! `cargo bench --bench ros2 [-- --iters N]`
//!
//! Copies: the zenoh payload is read in place when it arrived in one piece (a
//! fragmented sample is gathered once first); CDR decoding borrows the pixels (a view,
//! no copy); the frame is the one copy (rgb8 row by row, bgr8/rgba8 swizzled, 16UC1 and
//! 32FC1 converted). So rgb8 costs one copy of the pixels, which is what the ratio to
//! `memcpy` shows.

mod common;
use common::arg;
use sensebind::modality::Sensor;
use sensebind::ros2::wire::KnownType;
use sensebind::sources::ros2::convert::{self, AudioFormat};
use sensebind::sources::ImageLimits;
use std::time::Instant;

/// Pad to 4 (CDR aligns from the end of the encapsulation header).
fn align4(out: &mut Vec<u8>) {
    while (out.len() - 4) % 4 != 0 {
        out.push(0);
    }
}

/// A u32, aligned.
fn u32(out: &mut Vec<u8>, v: u32) {
    align4(out);
    out.extend(v.to_le_bytes());
}

/// A CDR string: u32 length with the NUL, the bytes, the NUL.
fn string(out: &mut Vec<u8>, s: &str) {
    u32(out, s.len() as u32 + 1);
    out.extend(s.as_bytes());
    out.push(0);
}

/// A little-endian CDR `sensor_msgs/msg/Image` (encapsulation header included).
fn image(w: u32, h: u32, encoding: &str, bpp: u32) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 0];
    m.extend(1_700_000_000i32.to_le_bytes());
    m.extend(5u32.to_le_bytes());
    string(&mut m, "camera_optical_frame");
    u32(&mut m, h);
    u32(&mut m, w);
    string(&mut m, encoding);
    m.push(0); // is_bigendian
    u32(&mut m, w * bpp);
    let n = (w * h * bpp) as usize;
    u32(&mut m, n as u32);
    m.extend((0..n).map(|i| (i * 31 % 251) as u8));
    m
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let iters = arg("--iters", 200);
    let (w, h) = (1920u32, 1080u32);
    let limits = ImageLimits::new(8192, 20.0);
    let pixels: Vec<u8> = (0..(w * h * 3) as usize).map(|i| (i * 7 % 253) as u8).collect();
    let mut copy_ms = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        let v = pixels.clone();
        std::hint::black_box(&v);
        copy_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let floor = p50(copy_ms);
    println!(
        "baseline: one copy of {:.1} MB of pixels: p50 {floor:.3} ms",
        pixels.len() as f64 / 1e6
    );
    for (enc, bpp, sensor) in [
        ("rgb8", 3, Sensor::Camera),
        ("bgr8", 3, Sensor::Camera),
        ("rgba8", 4, Sensor::Camera),
        ("16UC1", 2, Sensor::Depth),
        ("32FC1", 4, Sensor::Depth),
    ] {
        let msg = image(w, h, enc, bpp);
        let mut ms = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            let d = convert::message(KnownType::Image, &msg, sensor, AudioFormat::default(), limits)
                .expect("a valid message");
            std::hint::black_box(&d);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(d.data.image_size(), Some((w, h)));
        }
        let m = p50(ms);
        println!(
            "{w}x{h} {enc:<6} Image → frame: p50 {m:.3} ms ({:.2}× one copy){}",
            m / floor,
            if enc == "rgb8" {
                if m <= 1.0 {
                    "  [target ≤ 1 ms: met]"
                } else {
                    "  [target ≤ 1 ms: NOT met]"
                }
            } else {
                ""
            }
        );
    }
}
