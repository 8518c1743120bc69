//! Helpers shared by the integration tests: a daemon process on a free loopback port.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sensebind")
}

/// ONNX Runtime must be available: the test command (`make test`) sets it up.
pub fn require_ort() -> String {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(p) if Path::new(&p).is_file() => p,
        _ => {
            panic!("ORT_DYLIB_PATH must point at libonnxruntime.so; run the tests with `make test` (tools/dev.sh test)")
        }
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The built-in demo's five synthetic sources, as a user file lists them.
pub const DEMO_SOURCES: &str = r#"
[sources.camera]
type = "synthetic"
sensor = "camera"
[sources.depth]
type = "synthetic"
sensor = "depth"
[sources.thermal]
type = "synthetic"
sensor = "thermal"
[sources.microphone]
type = "synthetic"
sensor = "microphone"
[sources.imu]
type = "synthetic"
sensor = "imu"
"#;

/// A config for a test daemon: 2 s windows every 1 s; the demo's five synthetic
/// sources unless `extra` names its own.
pub fn write_config(dir: &Path, robot: &str, port: u16, extra: &str) -> PathBuf {
    let sources = if extra.contains("[sources.") { "" } else { DEMO_SOURCES };
    let path = dir.join("sensebind.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"
[robot]
id = "{robot}"
state_dir = "{state}"

[window]
length_s = 2.0
hop_s = 1.0

[bus]
listen = ["tcp/127.0.0.1:{port}"]

[health]
interval_s = 1.0

{extra}
{sources}
"#,
        state = dir.join("state").display()
    )
    .unwrap();
    path
}

pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,zenoh=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sensebind");
        Daemon { child }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait up to `within`: the exit code, or `None` if it had to be killed.
    pub fn stop_within(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// SIGTERM; the daemon must exit 0 within 10 s.
    pub fn stop(&mut self) {
        let code = self.stop_within(Duration::from_secs(10));
        assert_eq!(code, Some(0), "the daemon must exit 0 within 10 s of SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback zenoh session in `mode` listening on / connecting to `port`, without
/// multicast scouting (a test's peers also without gossip).
async fn session(mode: &str, port: u16, listen: bool) -> zenoh::Session {
    let ep = format!("[\"tcp/127.0.0.1:{port}\"]");
    let (connect, listen) = if listen {
        ("[]", ep.as_str())
    } else {
        (ep.as_str(), "[]")
    };
    let mut c = zenoh::Config::default();
    c.insert_json5("mode", &format!("\"{mode}\"")).unwrap();
    c.insert_json5("connect/endpoints", connect).unwrap();
    c.insert_json5("listen/endpoints", listen).unwrap();
    c.insert_json5("scouting/multicast/enabled", "false").unwrap();
    if mode == "peer" {
        c.insert_json5("scouting/gossip/enabled", "false").unwrap();
    }
    zenoh::open(c).await.unwrap()
}

/// A loopback zenoh peer without scouting: connecting to or listening on `port`.
async fn peer(port: u16, role: &str) -> zenoh::Session {
    session("peer", port, role != "connect").await
}

/// A zenoh router on `tcp/127.0.0.1:<port>` (the fleet's hub).
pub async fn zenoh_router(port: u16) -> zenoh::Session {
    session("router", port, true).await
}

/// A client of the router on `port` (an operator's session).
pub async fn router_client(port: u16) -> zenoh::Session {
    session("client", port, false).await
}

/// A zenoh peer that connects to the daemon.
pub async fn client(port: u16) -> zenoh::Session {
    peer(port, "connect").await
}

/// A zenoh peer that listens on `port` (a daemon configured to connect to it misses
/// nothing it publishes after its session opens).
pub async fn listener(port: u16) -> zenoh::Session {
    peer(port, "listen").await
}

/// The ids of the queries `robot`'s daemon lists on `get queries/**` (empty when the
/// get is refused or unanswered).
pub async fn query_ids(z: &zenoh::Session, robot: &str) -> Vec<String> {
    let mut ids = Vec::new();
    if let Ok(replies) = z.get(format!("sensebind/{robot}/queries/**")).await {
        while let Ok(r) = replies.recv_async().await {
            if let Ok(s) = r.result() {
                if let Ok(q) = serde_json::from_slice::<sensebind::queries::QuerySpec>(&s.payload().to_bytes()) {
                    ids.push(q.id);
                }
            }
        }
    }
    ids
}

/// Register query `id` on `robot`'s daemon through `z` with a threshold that every
/// window passes, and wait up to 15 s for its first alert.
pub async fn a_query_fires(z: &zenoh::Session, robot: &str, id: &str) -> bool {
    let alerts = z
        .declare_subscriber(format!("sensebind/{robot}/alerts/{id}"))
        .await
        .unwrap();
    z.put(
        format!("sensebind/{robot}/queries/{id}"),
        r#"{"text":"anything","threshold":-1,"cooldown_s":0}"#,
    )
    .await
    .unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(15), alerts.recv_async()).await,
        Ok(Ok(_))
    )
}

/// A stand-in for systemd's notify socket: collects every datagram the daemon sends
/// (sd_notify(3): `KEY=value` lines) with the time it arrived.
pub struct NotifySocket {
    pub path: PathBuf,
    msgs: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let msgs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let weak = std::sync::Arc::downgrade(&msgs);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Some(m) = weak.upgrade() {
                if let Ok(n) = sock.recv(&mut buf) {
                    let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().unwrap().push((std::time::Instant::now(), s));
                }
            }
        });
        NotifySocket { path, msgs }
    }

    /// Every datagram so far.
    pub fn messages(&self) -> Vec<(std::time::Instant, String)> {
        self.msgs.lock().unwrap().clone()
    }

    /// Times of the datagrams holding the line `line` (e.g. `WATCHDOG=1`).
    pub fn times_of(&self, line: &str) -> Vec<std::time::Instant> {
        self.messages()
            .into_iter()
            .filter(|(_, m)| m.lines().any(|l| l == line))
            .map(|(t, _)| t)
            .collect()
    }

    /// Wait up to `within` for a datagram with a line starting with `prefix`.
    pub fn wait_for(&self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some((_, m)) = self
                .messages()
                .into_iter()
                .find(|(_, m)| m.lines().any(|l| l.starts_with(prefix)))
            {
                return Some(m);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Resident memory of a process, in MiB (0 once it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// An encoder that calls `before` with every batch (and the encoder's modality), then
/// encodes it with the encoder it wraps unless `before` fails: how a test looks at, or
/// holds and fails, what reaches an encoder (plugged in through
/// `pipeline::Hooks::wrap_encoder`).
pub struct Intercept<F> {
    pub inner: std::sync::Arc<dyn sensebind::engine::Encoder>,
    pub before: F,
}

impl<F> sensebind::engine::Encoder for Intercept<F>
where
    F: Fn(sensebind::Modality, &[sensebind::preprocess::ModelInput]) -> Result<(), sensebind::engine::EngineError>
        + Send
        + Sync,
{
    fn modality(&self) -> sensebind::Modality {
        self.inner.modality()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn logit_scale(&self) -> f32 {
        self.inner.logit_scale()
    }
    fn input_shape(&self) -> &[usize] {
        self.inner.input_shape()
    }
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn nodes_per_provider(&self) -> Vec<(String, usize)> {
        self.inner.nodes_per_provider()
    }
    fn encode(
        &self,
        batch: &[sensebind::preprocess::ModelInput],
    ) -> Result<Vec<Vec<f32>>, sensebind::engine::EngineError> {
        (self.before)(self.inner.modality(), batch)?;
        self.inner.encode(batch)
    }
}
