//! Supervision by systemd (`Type=notify`): `READY=1` once the graph runs, a `STATUS=`
//! line (streams up, windows/s, drops) every few seconds, `STOPPING=1` at shutdown,
//! and, when the unit sets `WatchdogSec=`, `WATCHDOG=1` at half that interval **only
//! while the pipeline makes progress**: a stage holding waiting windows without
//! handling one for `daemon.watchdog_stall_s` (a stalled encoder, a wedged outputs
//! stage or windower) stops the pings, and systemd restarts the daemon. An idle stream
//! (a sensor reconnecting, nothing in front of it) has nothing waiting and keeps the
//! pings going.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use crate::telemetry::{names, Telemetry};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The service manager's notify socket (sd_notify(3): one datagram of `KEY=value`
/// lines per notification).
#[derive(Debug, Clone)]
pub struct Notifier {
    /// A path, or an abstract socket name starting with `@`.
    pub socket: PathBuf,
    /// Interval systemd expects pings within (`WATCHDOG_USEC`), if the watchdog is on.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// `Some` when systemd passed a notify socket (`NOTIFY_SOCKET`); the watchdog is on
    /// when `WATCHDOG_USEC` is set and `WATCHDOG_PID`, if set, is this process.
    pub fn from_env() -> Option<Notifier> {
        let socket = PathBuf::from(std::env::var_os("NOTIFY_SOCKET")?);
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        Some(Notifier { socket, watchdog })
    }

    fn try_send(&self, msg: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let path = self.socket.to_string_lossy();
        match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                sock.send_to_addr(msg.as_bytes(), &SocketAddr::from_abstract_name(name)?)?;
            }
            None => {
                sock.send_to(msg.as_bytes(), &self.socket)?;
            }
        }
        Ok(())
    }

    /// Send `KEY=value` lines; a failure is logged, never fatal.
    pub fn send(&self, lines: &[&str]) {
        if let Err(e) = self.try_send(&lines.join("\n")) {
            tracing::warn!(event = names::NOTIFY_FAILED, socket = %self.socket.display(), error = %e, "cannot notify systemd");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&["READY=1", &status_line(status)]);
    }

    pub fn stopping(&self) {
        self.send(&["STOPPING=1", "STATUS=stopping"]);
    }
}

/// `STATUS=` with the text on one line.
fn status_line(s: &str) -> String {
    format!("STATUS={}", s.replace('\n', " "))
}

/// Status lines every `status_every`, watchdog pings while the graph makes progress.
pub async fn systemd_stage(notifier: Notifier, telemetry: Arc<Telemetry>, status_every: Duration) {
    let tick_every = match notifier.watchdog {
        Some(w) => (w / 2).min(status_every),
        None => status_every,
    }
    .max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = Instant::now();
    let mut last_out = telemetry.windows_out();
    let mut withholding = false;
    loop {
        tick.tick().await;
        if notifier.watchdog.is_some() {
            let wedged = telemetry.wedged();
            if wedged.is_empty() {
                if withholding {
                    tracing::info!(
                        event = names::WATCHDOG_RESUMED,
                        "the pipeline makes progress again; watchdog pings resume"
                    );
                    withholding = false;
                }
                notifier.send(&["WATCHDOG=1"]);
            } else if !withholding {
                withholding = true;
                tracing::error!(event = names::WATCHDOG_WITHHELD, wedged = ?wedged, "pipeline wedged: watchdog pings stop, systemd will restart the daemon");
                notifier.send(&[&status_line(&format!("wedged: {}", wedged.join("; ")))]);
            }
        }
        if last_status.elapsed() >= status_every && !withholding {
            let out = telemetry.windows_out();
            let rate = (out - last_out) as f64 / last_status.elapsed().as_secs_f64();
            notifier.send(&[&status_line(&telemetry.status_line(rate))]);
            last_status = Instant::now();
            last_out = out;
        }
    }
}
