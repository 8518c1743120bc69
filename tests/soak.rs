//! Soak: the five synthetic streams unpaced (sensor time runs as fast as the
//! encoders allow, faster than real time) for `SENSEBIND_SOAK_S` seconds (30 by
//! default in CI; an hour by hand: `SENSEBIND_SOAK_S=3600 cargo test --release --test
//! soak -- --nocapture`). Read through the Prometheus endpoint, it asserts flat
//! memory (RSS), no growth of any queue (windows pending) and counters that add up
//! (windows = published + every kind of drop + pending), for every stream.

use crate::common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn get_metrics(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn five_unpaced_streams_run_flat_and_their_counters_add_up() {
    require_ort();
    let soak_s: f64 = std::env::var("SENSEBIND_SOAK_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let unpaced: String = DEMO_SOURCES
        .lines()
        .map(|l| {
            if l.starts_with("sensor = ") {
                format!("{l}\nrealtime = false")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = write_config(
        dir.path(),
        "soak",
        free_port(),
        &format!("[prometheus]\nlisten = \"127.0.0.1:{metrics_port}\"\n{unpaced}"),
    );
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&cfg, &log);
    let pid = daemon.child.id();
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();

    let t0 = Instant::now();
    while get_metrics(metrics_port).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no /metrics; log:\n{}", dump());
        assert!(daemon.running(), "daemon exited; log:\n{}", dump());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Samples every 5 s: RSS, and every stream's pending windows.
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut pending_max: BTreeMap<String, f64> = BTreeMap::new();
    let mut last = String::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < soak_s {
        std::thread::sleep(Duration::from_secs(5));
        assert!(daemon.running(), "daemon exited; log:\n{}", dump());
        last = get_metrics(metrics_port).expect("metrics");
        for (k, v) in samples(&last) {
            if k.starts_with("sensebind_stream_windows_pending") {
                let m = pending_max.entry(k).or_default();
                *m = m.max(v);
            }
        }
        rss.push((start.elapsed().as_secs_f64(), rss_kib(pid)));
    }
    let m = samples(&last);
    daemon.stop();

    // Counters add up, per stream: closed = published + drops + pending.
    let streams: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix("sensebind_stream_windows_total"))
        .map(str::to_string)
        .collect();
    assert_eq!(streams.len(), 5, "{streams:?}");
    let mut total_published = 0.0;
    for labels in &streams {
        let inner = labels.trim_start_matches('{').trim_end_matches('}');
        let get = |name: &str| m[&format!("{name}{labels}")];
        let dropped: f64 = ["coverage", "backpressure", "error", "shutdown"]
            .iter()
            .map(|r| m[&format!("sensebind_stream_windows_dropped_total{{{inner},reason=\"{r}\"}}")])
            .sum();
        let (closed, published, pending) = (
            get("sensebind_stream_windows_total"),
            get("sensebind_stream_windows_published_total"),
            get("sensebind_stream_windows_pending"),
        );
        assert_eq!(closed, published + dropped + pending, "{labels}");
        assert!(published > 0.0, "{labels} published nothing");
        assert_eq!(get("sensebind_stream_wedged"), 0.0, "{labels}");
        // A latency is recorded when a window's embedding is ready, just before it is
        // published: the scrape (taken while running) may fall between the two, so
        // those windows are still pending.
        let latencies = m[&format!("sensebind_stream_latency_seconds_count{labels}")];
        assert!(
            latencies >= published && latencies <= published + pending,
            "{labels}: {latencies} latencies for {published} published and {pending} pending windows"
        );
        total_published += published;
    }
    // No queue grows: pending windows never exceed what the queues can hold
    // (engine.queue_depth 16 + a batch in flight + outputs.queue 256 per modality).
    for (k, v) in &pending_max {
        assert!(*v <= 16.0 + 8.0 + 256.0, "{k} reached {v}");
    }
    // Flat memory: after the first third (warm-up), RSS grows by less than 10 % + 16 MiB.
    let warm = rss.iter().find(|(t, _)| *t >= soak_s / 3.0).map(|r| r.1).unwrap();
    let end = rss.last().unwrap().1;
    let peak = rss.iter().map(|r| r.1).max().unwrap();
    eprintln!(
        "soak {soak_s:.0} s: {total_published} windows published ({:.1}/s); RSS after warm-up {} MiB, end {} MiB, peak {} MiB; pending max {:?}",
        total_published / soak_s,
        warm / 1024,
        end / 1024,
        peak / 1024,
        pending_max.values().cloned().fold(0.0, f64::max)
    );
    assert!(
        end <= warm + warm / 10 + 16 * 1024,
        "RSS grew from {warm} KiB to {end} KiB: {rss:?}"
    );
    assert!(!dump().contains("panicked"));
}
