//! The network misbehaving: the zenoh router going away and coming back (the daemon
//! keeps running, publishing resumes, queries still work), and a subscriber too slow
//! to read (the daemon never waits on it: embeddings and labels are dropped for it,
//! alerts wait at most `bus.alert_block_ms`).

use crate::common;

use common::*;
use sensebind::bus::msg::{AlertMsg, JsonMsg};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A zenoh router on loopback `port` (what a robot's zenohd would be).
async fn router(port: u16) -> zenoh::Session {
    let mut c = zenoh::Config::default();
    c.insert_json5("mode", "\"router\"").unwrap();
    c.insert_json5("listen/endpoints", &format!("[\"tcp/127.0.0.1:{port}\"]"))
        .unwrap();
    c.insert_json5("scouting/multicast/enabled", "false").unwrap();
    c.insert_json5("scouting/gossip/enabled", "false").unwrap();
    zenoh::open(c).await.unwrap()
}

fn published(metrics_port: u16) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(
        out.lines()
            .filter(|l| l.starts_with("sensebind_stream_windows_published_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum(),
    )
}

/// Config for a daemon that is a zenoh client of the router on `router_port`.
fn client_config(
    dir: &std::path::Path,
    robot: &str,
    router_port: u16,
    metrics_port: u16,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("sensebind.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[robot]
id = "{robot}"
state_dir = "{state}"
[window]
length_s = 2.0
hop_s = 1.0
[bus]
mode = "client"
listen = []
connect = ["tcp/127.0.0.1:{router_port}"]
alert_block_ms = 500
[health]
interval_s = 1.0
[prometheus]
listen = "127.0.0.1:{metrics_port}"
{extra}
{DEMO_SOURCES}
"#,
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Labels received on `sensebind/<robot>/labels/**` through `z`.
async fn count_labels(z: &zenoh::Session, robot: &str) -> (Arc<AtomicU64>, zenoh::pubsub::Subscriber<()>) {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let sub = z
        .declare_subscriber(format!("sensebind/{robot}/labels/**"))
        .callback(move |_| {
            n2.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .unwrap();
    (n, sub)
}

async fn wait_labels(n: &AtomicU64, at_least: u64, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if n.load(Ordering::Relaxed) >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_going_away_and_coming_back() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let (rport, mport) = (free_port(), free_port());
    let r1 = router(rport).await;
    let cfg = client_config(dir.path(), "roaming", rport, mport, "");
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&cfg, &log);
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();

    // A client of the same router sees labels.
    let watcher = client(rport).await;
    let (n, _sub) = count_labels(&watcher, "roaming").await;
    assert!(
        wait_labels(&n, 10, Duration::from_secs(60)).await,
        "no labels via the router; log:\n{}",
        dump()
    );

    // The router goes away for 5 s. The daemon keeps running and windowing.
    let _ = r1.close().await;
    let _ = watcher.close().await;
    let before = published(mport).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        daemon.running(),
        "the daemon must survive losing its router; log:\n{}",
        dump()
    );
    let during = published(mport).unwrap();
    assert!(
        during > before,
        "the pipeline goes on without a bus: {before} → {during}"
    );

    // The router comes back on the same endpoint: publishing resumes, queries work.
    let _r2 = router(rport).await;
    let watcher = client(rport).await;
    let (n, _sub) = count_labels(&watcher, "roaming").await;
    assert!(
        wait_labels(&n, 10, Duration::from_secs(30)).await,
        "labels resume after the router returns; log:\n{}",
        dump()
    );
    let fired = a_query_fires(&watcher, "roaming", "back").await;
    assert!(fired, "a query registered after the return fires; log:\n{}", dump());
    assert!(!dump().contains("panicked"));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_never_stalls_the_daemon() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let (rport, mport) = (free_port(), free_port());
    let _r = router(rport).await;
    // Unpaced sources: the daemon publishes as fast as it can embed (hundreds of
    // messages a second), and a query fires an alert on every window.
    let cfg = client_config(
        dir.path(),
        "busy",
        rport,
        mport,
        "[queries.presets.always]\ntext = \"anything\"\nthreshold = -1.0\ncooldown_s = 0.0\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("sensor = \"", "realtime = false\nsensor = \"");
    std::fs::write(&cfg, text).unwrap();
    // A subscriber that keeps up, to the alerts only: what the query fires must reach
    // it (alerts are published with congestion control Block, never dropped for a
    // peer that keeps up), with or without the slow one.
    let fast = client(rport).await;
    let alerts = Arc::new(std::sync::Mutex::new(Vec::<(Instant, AlertMsg)>::new()));
    let a2 = alerts.clone();
    let _alerts_sub = fast
        .declare_subscriber("sensebind/busy/alerts/**")
        .callback(move |s| {
            let a = AlertMsg::from_json(&s.payload().to_bytes()).unwrap();
            a2.lock().unwrap().push((Instant::now(), a));
        })
        .await
        .unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&cfg, &log);
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();
    let t = Instant::now();
    while published(mport).unwrap_or(0.0) < 50.0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "daemon not publishing; log:\n{}",
            dump()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rate = |secs: u64| {
        let a = published(mport).unwrap();
        std::thread::sleep(Duration::from_secs(secs));
        (published(mport).unwrap() - a) / secs as f64
    };
    let alerts_in = |from: Instant, to: Instant| {
        alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .count()
    };
    let b0 = Instant::now();
    let baseline = rate(4);
    let alert_baseline = alerts_in(b0, Instant::now()) as f64 / 4.0;

    // A subscriber to everything that takes 100 ms per message.
    let slow = client(rport).await;
    let got = Arc::new(AtomicU64::new(0));
    let g2 = got.clone();
    let _sub = slow
        .declare_subscriber("sensebind/busy/**")
        .callback(move |_| {
            g2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        })
        .await
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let s0 = Instant::now();
    let with_slow = rate(6);
    let alerts_with_slow = alerts_in(s0, Instant::now()) as f64 / 6.0;
    eprintln!(
        "windows published: {baseline:.1}/s alone, {with_slow:.1}/s with a subscriber reading 10 messages/s (it read {})",
        got.load(Ordering::Relaxed)
    );
    assert!(
        with_slow >= baseline * 0.5,
        "the daemon slowed from {baseline:.1} to {with_slow:.1} windows/s for a slow subscriber"
    );
    // Alerts are delivered while the slow subscriber holds messages: at least half
    // their rate without it (the query fires on every window), each the preset's.
    eprintln!(
        "alerts to a subscriber that keeps up: {alert_baseline:.1}/s alone, {alerts_with_slow:.1}/s with the slow one; {} in all, the daemon counts {}",
        alerts.lock().unwrap().len(),
        published_alerts(mport).unwrap_or(-1.0)
    );
    assert!(alert_baseline > 0.0, "no alert before the slow subscriber came");
    assert!(
        alerts_with_slow >= alert_baseline * 0.5,
        "alerts slowed from {alert_baseline:.1}/s to {alerts_with_slow:.1}/s for a slow subscriber"
    );
    for (_, a) in alerts.lock().unwrap().iter() {
        assert_eq!((a.query_id.as_str(), a.robot.as_str()), ("always", "busy"), "{a:?}");
        assert!(a.score >= a.threshold && a.threshold == -1.0, "{a:?}");
    }
    assert!(daemon.running());
    daemon.stop();
    assert!(!dump().contains("panicked"));
}

/// The daemon's count of alerts published (`sensebind_alerts_total`).
fn published_alerts(metrics_port: u16) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find(|l| l.starts_with("sensebind_alerts_total"))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}
