//! `sensebind run` under a notify-socket harness, as systemd runs it with
//! `Type=notify` and `WatchdogSec=`: READY=1 once the pipeline is up, STATUS= lines,
//! WATCHDOG=1 pings that go on while a sensor is gone (reconnecting is healthy), and
//! STOPPING=1 at SIGTERM. (A wedged encoder stopping the pings: tests/faults.rs.)

use crate::common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `WatchdogSec=` of the unit (the daemon pings at half of it).
const WATCHDOG: Duration = Duration::from_secs(2);

#[test]
fn run_notifies_systemd_and_pings_the_watchdog_while_healthy() {
    let ort = require_ort();
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    // The demo's five sensors plus a microphone whose file is missing: that source
    // stays `reconnecting`, which must not stop the watchdog.
    let extra = format!(
        "{DEMO_SOURCES}\n[sources.gone]\ntype = \"file\"\nsensor = \"microphone\"\npath = \"{}\"\nrestart_backoff_s = 0.2\n",
        dir.path().join("missing.wav").display()
    );
    let config = write_config(dir.path(), "notified", free_port(), &extra);
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("ORT_DYLIB_PATH", ort)
        .env("RUST_LOG", "info,zenoh=warn")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child };
    let logs = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    let ready = notify.wait_for("READY=1", Duration::from_secs(60));
    assert!(ready.is_some(), "no READY=1 within 60 s; log:\n{}", logs());
    let ready = ready.unwrap();
    assert!(ready.contains("STATUS=running: 6 sources"), "{ready}");
    let t_ready = notify.times_of("READY=1")[0];
    let before: Vec<_> = notify.messages().into_iter().filter(|(t, _)| *t < t_ready).collect();
    assert!(
        before.iter().all(|(_, m)| !m.contains("WATCHDOG=1")),
        "no ping before READY: {before:?}"
    );

    // 6 s of healthy running with one sensor missing: pings every WatchdogSec / 2.
    // What systemd enforces is WatchdogSec itself (a gap that long restarts the
    // daemon): that is the bound, twice the ping interval, so a ping late by a
    // scheduling hiccup on a loaded machine passes and a ping missed fails.
    std::thread::sleep(Duration::from_secs(6));
    let pings: Vec<Instant> = notify.times_of("WATCHDOG=1");
    let since_ready: Vec<Instant> = pings.iter().copied().filter(|t| *t >= t_ready).collect();
    assert!(
        since_ready.len() >= 5,
        "{} pings in 6 s (expected one per {:?}); log:\n{}",
        since_ready.len(),
        WATCHDOG / 2,
        logs()
    );
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    // And from READY=1 to the first ping, and from the last ping to now.
    gaps.push(pings[0].saturating_duration_since(t_ready));
    gaps.push(pings.last().unwrap().elapsed());
    let longest = gaps.into_iter().max().unwrap();
    assert!(
        longest < WATCHDOG,
        "a gap of {longest:?} between pings: systemd (WatchdogSec={WATCHDOG:?}) would restart the daemon"
    );
    let statuses: Vec<String> = notify
        .messages()
        .into_iter()
        .flat_map(|(_, m)| m.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with("STATUS=") && l.contains("streams up"))
        .collect();
    let last = statuses.last().expect("STATUS= lines with streams up");
    assert!(last.contains("5/6 streams up"), "{last}");
    assert!(
        last.contains("windows/s") && last.contains("gone reconnecting"),
        "{last}"
    );
    let rate: f64 = last
        .split(", ")
        .find(|p| p.ends_with("windows/s"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!(rate > 1.0, "five streams on a 1 s hop publish ~5 windows/s: {last}");

    daemon.stop();
    assert!(
        notify.wait_for("STOPPING=1", Duration::from_secs(1)).is_some(),
        "STOPPING=1 at SIGTERM"
    );
}
