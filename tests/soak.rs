//! Soak: the five synthetic streams unpaced (sensor time runs as fast as the
//! encoders allow, faster than real time) for `SENSEBIND_SOAK_S` seconds (60 by
//! default in CI; an hour by hand: `SENSEBIND_SOAK_S=3600 cargo test --release --test
//! integration soak:: -- --nocapture`). While it runs: no queue grows (windows pending
//! stay within what the queues hold) and resident memory (RSS) has no trend once
//! warmed up (a least-squares slope of its base, bounded per window published). Once it is stopped,
//! the final health (published at shutdown) accounts for every window of every
//! stream: nothing pending, closed = published + the six drop reasons, published =
//! the windows a subscriber that missed nothing received, and the closed windows span
//! at least the grid from the first to the last window received.

use crate::common;

use common::*;
use sensebind::bus::msg::{EmbeddingMsg, FusedMsg, HealthMsg, JsonMsg, SourceState};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
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

/// Least-squares slope of `(x, y)` points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    sxy / sxx
}

/// What a subscriber connected before the daemon started received: per embedding key
/// the seqs, the embedding size, and every health message in order.
#[derive(Default)]
struct Seen {
    seqs: BTreeMap<String, BTreeSet<i64>>,
    /// `embedding/fused` messages (each seq must come once).
    fused_msgs: u64,
    dim: u32,
    health: Vec<HealthMsg>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_unpaced_streams_run_flat_and_their_counters_add_up() {
    require_ort();
    let soak_s: f64 = std::env::var("SENSEBIND_SOAK_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60.0);
    let dir = tempfile::tempdir().unwrap();
    let (metrics_port, port) = (free_port(), free_port());
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
    // The test listens and the daemon connects to it, so the subscriber is there
    // before the first message; `when_full = "block"` on the bus, so no message is
    // dropped for it (it keeps up: it only counts). The history is capped at its
    // least (its in-memory index grows, by design, with what it keeps, up to
    // `max_bytes`), so it fills early and its expiry runs during the soak. One window
    // per encoder call: an encoder's working memory follows its batch size (measured
    // here: the vision encoder's first batch of 2 camera windows added 133 MiB, held
    // for the 28 s the camera stayed behind, then given back), a bounded swing that
    // would hide any trend in a short run.
    let cfg = write_config(
        dir.path(),
        "soak",
        port,
        &format!("[prometheus]\nlisten = \"127.0.0.1:{metrics_port}\"\n[history]\nmax_bytes = \"1MiB\"\n[engine]\nmax_batch = 1\n{unpaced}"),
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("listen = [\"tcp/127.0.0.1:{port}\"]"),
        &format!("listen = []\nconnect = [\"tcp/127.0.0.1:{port}\"]\nwhen_full = \"block\""),
    );
    std::fs::write(&cfg, text).unwrap();

    let z = listener(port).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let _sub = z
        .declare_subscriber("sensebind/soak/**")
        .callback(move |s| {
            let key = s.key_expr().as_str().to_string();
            let b = s.payload().to_bytes();
            let mut seen = s2.lock().unwrap();
            if key.ends_with("/embedding/fused") {
                let m = FusedMsg::from_cbor(&b).unwrap();
                seen.seqs.entry("fused".into()).or_default().insert(m.seq);
                seen.fused_msgs += 1;
            } else if key.contains("/embedding/") {
                let m = EmbeddingMsg::from_cbor(&b).unwrap();
                seen.dim = m.dim;
                let stream = format!("{}/{}", m.source, m.modality);
                seen.seqs.entry(stream).or_default().insert(m.seq);
            } else if key.ends_with("/health") {
                seen.health.push(HealthMsg::from_json(&b).unwrap());
            }
        })
        .await
        .unwrap();

    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&cfg, &log);
    let pid = daemon.child.id();
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();

    let t0 = Instant::now();
    while get_metrics(metrics_port).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no /metrics; log:\n{}", dump());
        assert!(daemon.running(), "daemon exited; log:\n{}", dump());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // RSS every second; every stream's pending windows every 5 s.
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut pending_max: BTreeMap<String, f64> = BTreeMap::new();
    let mut last = String::new();
    let start = Instant::now();
    let mut next_scrape = 5.0;
    while start.elapsed().as_secs_f64() < soak_s {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(daemon.running(), "daemon exited; log:\n{}", dump());
        let t = start.elapsed().as_secs_f64();
        rss.push((t, rss_kib(pid) as f64 / 1024.0));
        if t >= next_scrape {
            next_scrape += 5.0;
            last = get_metrics(metrics_port).expect("metrics");
            for (k, v) in samples(&last) {
                if k.starts_with("sensebind_stream_windows_pending") {
                    let m = pending_max.entry(k).or_default();
                    *m = m.max(v);
                }
            }
        }
    }
    let m = samples(&last);
    daemon.stop();
    // The final health is published after every stage has stopped, before the
    // session closes: every source is then `stopped`.
    let t = Instant::now();
    let last_health = loop {
        let h = seen.lock().unwrap().health.last().cloned();
        if let Some(h) = h.filter(|h| h.sources.values().all(|s| s.state == SourceState::Stopped)) {
            break h;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no final health after the daemon stopped; log:\n{}",
            dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = z.close().await;

    // While running: nothing wedged, and a latency was recorded for every published
    // window (the scrape may fall between a latency and its publication: pending).
    let streams: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix("sensebind_stream_windows_total"))
        .map(str::to_string)
        .collect();
    assert_eq!(streams.len(), 5, "{streams:?}");
    for labels in &streams {
        let get = |name: &str| m[&format!("{name}{labels}")];
        let (published, pending) = (
            get("sensebind_stream_windows_published_total"),
            get("sensebind_stream_windows_pending"),
        );
        assert_eq!(get("sensebind_stream_wedged"), 0.0, "{labels}");
        let latencies = get("sensebind_stream_latency_seconds_count");
        assert!(
            latencies >= published && latencies <= published + pending,
            "{labels}: {latencies} latencies for {published} published and {pending} pending windows"
        );
    }
    // No queue grows: pending windows never exceed what the queues can hold
    // (engine.queue_depth 16 + a batch in flight + outputs.queue 256 per modality).
    for (k, v) in &pending_max {
        assert!(*v <= 16.0 + 8.0 + 256.0, "{k} reached {v}");
    }

    // After the stop, every window of every stream is accounted for.
    let seen = seen.lock().unwrap();
    assert_eq!(last_health.bus_errors, 0, "every message reached the bus");
    let mut total_published = 0;
    let mut report = Vec::new();
    for (id, src) in &last_health.sources {
        for (modality, st) in &src.streams {
            let stream = format!("{id}/{modality}");
            let d = &st.windows_dropped;
            // Closed = published + dropped, by every reason: nothing left pending.
            assert_eq!(
                st.windows_in,
                st.windows_out + d.total(),
                "{stream}: {} closed, {} published, dropped {d:?}",
                st.windows_in,
                st.windows_out
            );
            // Published = what the subscriber received (each window once).
            let seqs = seen.seqs.get(&stream).cloned().unwrap_or_default();
            assert_eq!(
                st.windows_out,
                seqs.len() as u64,
                "{stream}: published {} windows, the bus carried {}",
                st.windows_out,
                seqs.len()
            );
            assert!(st.windows_out > 0, "{stream} published nothing");
            // Windows close one after another on the grid: every seq from the first
            // to the last received was closed (published or dropped).
            let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
            assert!(
                st.windows_in >= (last - first + 1) as u64,
                "{stream}: {} windows closed, but seqs {first}..={last} were published",
                st.windows_in
            );
            total_published += st.windows_out;
            report.push(format!(
                "{stream} {}/{} published (seqs {first}..={last}), dropped {d:?}",
                st.windows_out, st.windows_in
            ));
        }
    }
    assert_eq!(report.len(), 5, "every stream in the final health: {report:?}");
    // Every fused window published reached the bus, each seq once. (Unpaced, the
    // streams' sensor times drift hours apart: a stream thousands of windows behind
    // brings only late members, which must not publish a seq again.)
    let fused_seqs = seen.seqs.get("fused").map_or(0, |s| s.len() as u64);
    assert_eq!(
        last_health.fused.windows, seen.fused_msgs,
        "fused windows published = received"
    );
    assert!(fused_seqs > 0, "no fused window");
    report.push(format!("fused {} published, {fused_seqs} seqs", seen.fused_msgs));
    assert_eq!(seen.fused_msgs, fused_seqs, "a fused seq published twice: {report:?}");

    // Flat memory. RSS has short peaks (buffers of a call, a few MiB for a second)
    // on a base that a leak would raise steadily, so the slope is fitted (least
    // squares) to the base: at each second the least RSS of the 5 s before it, over
    // the second half (the first is warm-up: arenas, thread pools, queues and the
    // history filling, 10 to 20 MiB in the first 20 to 30 s here). Bound:
    // 4 KiB per window published, a tenth of the smallest encoder input (IMU: 6 × 2000
    // f32 = 47 KiB; audio 102 KiB; vision 1176 KiB; a camera frame 900 kB), so a
    // window's input or frame kept per window fails it ten times over. Measured on 2
    // CPUs: 0.4 to 1.3 KiB per window over 60 s (3 runs); 7.9 with 8 KiB leaked per
    // embedded window.
    let base: Vec<(f64, f64)> = (0..rss.len())
        .map(|i| {
            let t = rss[i].0;
            let low = rss[..=i]
                .iter()
                .filter(|(u, _)| *u > t - 5.0)
                .map(|r| r.1)
                .fold(f64::MAX, f64::min);
            (t, low)
        })
        .collect();
    let warm: Vec<(f64, f64)> = base.iter().copied().filter(|(t, _)| *t >= soak_s / 2.0).collect();
    assert!(warm.len() >= 5, "too few RSS samples after warm-up: {rss:?}");
    let per_min = slope(&warm) * 60.0;
    let rate = total_published as f64 / soak_s;
    let bound = 4.0 / 1024.0 * rate * 60.0;
    let per_window_kib = per_min * 1024.0 / (rate * 60.0);
    let peak = rss.iter().map(|r| r.1).fold(0.0, f64::max);
    eprintln!(
        "soak {soak_s:.0} s: {total_published} windows published ({rate:.1}/s, dim {}); RSS {:.0} MiB after warm-up, {:.0} MiB at the end, peak {peak:.0} MiB; base slope {per_min:+.2} MiB/min = {per_window_kib:+.2} KiB per published window (bound {bound:.1} MiB/min); pending max {:?}\n{}",
        seen.dim,
        warm[0].1,
        rss.last().unwrap().1,
        pending_max.values().cloned().fold(0.0, f64::max),
        report.join("\n")
    );
    assert!(
        per_min <= bound,
        "RSS grows {per_min:.2} MiB a minute after warm-up ({per_window_kib:.2} KiB per published window, over 4): {rss:?}"
    );
    assert!(!dump().contains("panicked"));
}
