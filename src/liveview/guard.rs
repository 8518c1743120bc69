//! The live view's front door: a TCP relay between each Foxglove client and the
//! Foxglove server (which listens on a loopback port of its own). The relay watches
//! what the server answers: the server replies to every request it cannot use
//! (invalid JSON, an unknown channel, an unsupported operation) with an error status,
//! `{"op":"status","level":2,…}`. A client that earns more than
//! `foxglove.max_client_errors` of them within [`ERROR_WINDOW`] is disconnected, and
//! the daemon says so once (`liveview_client_closed`, `reason = "too_many_errors"`).
//! The server itself offers no way to close one client. It does drop a client whose
//! flood overflows its reply queue, sometimes before a single error status got out:
//! the relay reports that once too (`reason = "server_dropped"`), except while the
//! daemon is stopping.
//!
//! [`Scanner`] is the pure part: fed the server → client bytes in any chunking (the
//! HTTP upgrade response, then WebSocket frames), it counts error statuses.

use crate::telemetry::names;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Errors are counted over this span.
pub const ERROR_WINDOW: Duration = Duration::from_secs(10);
/// Longest HTTP response head the scanner waits for before giving up on the stream.
const MAX_HEAD: usize = 16 * 1024;
/// Text frames longer than this are passed on unread (a status is a few hundred bytes).
const MAX_TEXT: u64 = 64 * 1024;

/// What [`Scanner`] is reading.
#[derive(Debug)]
enum Phase {
    /// The HTTP response head, up to its blank line.
    Head(Vec<u8>),
    /// A frame header (2 to 14 bytes).
    Header(Vec<u8>),
    /// A frame's payload: bytes still to come, and the text kept (a small text frame).
    Payload { left: u64, text: Option<Vec<u8>> },
    /// Not a WebSocket stream as expected: pass bytes on, read nothing.
    Blind,
}

/// Reads one direction of a WebSocket connection: counts the error statuses in a
/// server → client stream, and notes a close frame in either.
#[derive(Debug)]
pub struct Scanner {
    phase: Phase,
    /// A close frame went by.
    pub closing: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            phase: Phase::Head(Vec::new()),
            closing: false,
        }
    }
}

#[derive(Deserialize)]
struct Op {
    op: String,
    level: Option<u8>,
}

/// An error status (`op` = `status`, `level` = 2).
fn is_error_status(text: &[u8]) -> bool {
    serde_json::from_slice::<Op>(text).is_ok_and(|o| o.op == "status" && o.level == Some(2))
}

/// The length of a frame header that starts with `h` (at least 2 bytes).
fn header_len(h: &[u8]) -> usize {
    let ext = match h[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
}

impl Scanner {
    /// Read `bytes`; the number of error statuses they completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u32 {
        let mut errors = 0;
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Blind => return errors,
                Phase::Head(head) => {
                    let before = head.len();
                    head.extend_from_slice(bytes);
                    match head.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(end) => {
                            let used = end + 4 - before;
                            bytes = &bytes[used..];
                            self.phase = Phase::Header(Vec::new());
                        }
                        None if head.len() > MAX_HEAD => self.phase = Phase::Blind,
                        None => return errors,
                    }
                }
                Phase::Header(h) => {
                    let need = if h.len() < 2 { 2 } else { header_len(h) };
                    let take = (need - h.len()).min(bytes.len());
                    h.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if h.len() < 2 || h.len() < header_len(h) {
                        continue;
                    }
                    let len = match h[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                        127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()),
                        n => u64::from(n),
                    };
                    self.closing |= h[0] & 0x0f == 0x8;
                    // An unfragmented, unmasked text frame small enough to be a status.
                    let text =
                        (h[0] == 0x81 && h[1] & 0x80 == 0 && len <= MAX_TEXT).then(|| Vec::with_capacity(len as usize));
                    self.phase = Phase::Payload { left: len, text };
                    if len == 0 {
                        self.phase = Phase::Header(Vec::new());
                    }
                }
                Phase::Payload { left, text } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    if let Some(t) = text {
                        t.extend_from_slice(&bytes[..take]);
                    }
                    bytes = &bytes[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        if text.as_deref().is_some_and(is_error_status) {
                            errors += 1;
                        }
                        self.phase = Phase::Header(Vec::new());
                    }
                }
            }
        }
        errors
    }
}

/// Error statuses over a sliding [`ERROR_WINDOW`] (in one-second steps).
#[derive(Debug)]
struct Tally {
    max: u32,
    started: Instant,
    /// Errors per second since `started`, the last ten seconds.
    per_s: std::collections::VecDeque<(u64, u32)>,
}

impl Tally {
    fn new(max: u32, now: Instant) -> Self {
        Tally {
            max,
            started: now,
            per_s: Default::default(),
        }
    }
    /// Add `n` errors seen at `now`; whether the client is over its allowance.
    fn add(&mut self, n: u32, now: Instant) -> bool {
        let sec = now.duration_since(self.started).as_secs();
        while self
            .per_s
            .front()
            .is_some_and(|(s, _)| s + ERROR_WINDOW.as_secs() <= sec)
        {
            self.per_s.pop_front();
        }
        match self.per_s.back_mut() {
            Some((s, c)) if *s == sec => *c = c.saturating_add(n),
            _ => self.per_s.push_back((sec, n)),
        }
        self.per_s.iter().map(|(_, c)| u64::from(*c)).sum::<u64>() > u64::from(self.max)
    }
}

/// Accept clients on `listener` and relay each to the server on `server`.
/// `stopping` is set when the daemon shuts the server down: the connections it then
/// closes are not reported as dropped clients.
pub async fn serve(listener: TcpListener, server: SocketAddr, max_errors: u32, stopping: Arc<AtomicBool>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(relay(client, peer, server, max_errors, stopping.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(event = names::LIVEVIEW_ACCEPT_FAILED, error = %e, "Foxglove live view: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How a relayed connection ended.
enum End {
    /// The client closed its side (or its socket failed).
    Client,
    /// The server closed the connection.
    Server,
    /// The relay cut the client off: too many error statuses.
    Cut,
}

/// One client: bytes both ways until either side closes, or the client has earned
/// too many error statuses.
async fn relay(client: TcpStream, peer: SocketAddr, server: SocketAddr, max_errors: u32, stopping: Arc<AtomicBool>) {
    let Ok(upstream) = TcpStream::connect(server).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = upstream.into_split();
    // Client → server: passed on as is, watched for the client's close frame.
    let mut said_bye = false;
    let up = async {
        let mut scanner = Scanner::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            scanner.feed(&buf[..n]);
            said_bye |= scanner.closing;
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whether the relay cut the client off, and the error statuses it earned.
    let mut earned = 0u64;
    let down = async {
        let mut scanner = Scanner::default();
        let mut tally = Tally::new(max_errors, Instant::now());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return End::Server,
                Ok(n) => n,
            };
            let errors = scanner.feed(&buf[..n]);
            earned += u64::from(errors);
            if errors > 0 && tally.add(errors, Instant::now()) {
                return End::Cut;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return End::Client;
            }
        }
    };
    let end = tokio::select! {
        _ = up => End::Client,
        e = down => e,
    };
    let window = ERROR_WINDOW.as_secs();
    match end {
        End::Cut => tracing::warn!(
            event = names::LIVEVIEW_CLIENT_CLOSED,
            client = %peer,
            errors = earned,
            reason = "too_many_errors",
            "Foxglove live view: closed a client that sent more than {max_errors} unusable requests in {window} s"
        ),
        // The server drops a client on its own only when the client broke the
        // protocol or flooded it (its reply queue overflowed, possibly before a
        // single error status reached the relay). Not when the daemon stops it.
        End::Server if !said_bye && !stopping.load(Ordering::Relaxed) => tracing::warn!(
            event = names::LIVEVIEW_CLIENT_CLOSED,
            client = %peer,
            errors = earned,
            reason = "server_dropped",
            "Foxglove live view: the server dropped a client (protocol error or request flood; {earned} error statuses relayed)"
        ),
        // The client left (the server answering its close frame ends the relay too);
        // say so only when it had been refused.
        End::Client | End::Server if earned > 0 => tracing::info!(
            event = names::LIVEVIEW_CLIENT_CLOSED,
            client = %peer,
            errors = earned,
            reason = "client_left",
            "Foxglove live view: a client left after {earned} unusable requests"
        ),
        _ => {}
    }
    let _ = cw.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn error_statuses_are_counted_in_any_chunking() {
        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let error = br#"{"op":"status","level":2,"message":"Unknown channel ID: 7"}"#;
        let warning = br#"{"op":"status","level":1,"message":"slow"}"#;
        let advertise = format!(r#"{{"op":"advertise","channels":[{}]}}"#, "{},".repeat(40_000) + "{}");
        stream.extend(frame(1, br#"{"op":"serverInfo","name":"sensebind"}"#));
        stream.extend(frame(1, error));
        stream.extend(frame(2, &[1u8; 70_000])); // binary: message data
        stream.extend(frame(1, warning));
        stream.extend(frame(1, advertise.as_bytes())); // 64-bit length
        stream.extend(frame(1, &[b' '; 300])); // 16-bit length, not JSON
        stream.extend(frame(1, error));
        stream.extend(frame(1, b""));
        stream.extend(frame(1, error));
        for chunk in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let mut s = Scanner::default();
            let n: u32 = stream.chunks(chunk).map(|c| s.feed(c)).sum();
            assert_eq!(n, 3, "chunks of {chunk}");
        }
        // A stream that is not a WebSocket upgrade is passed on unread.
        let mut s = Scanner::default();
        assert_eq!(s.feed(&vec![b'x'; MAX_HEAD + 10]), 0);
        assert_eq!(s.feed(&frame(1, error)), 0);
    }

    #[test]
    fn a_clients_close_frame_is_noticed_masked_and_in_pieces() {
        let mut stream = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let masked = |opcode: u8, payload: &[u8]| {
            let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 1, 2, 3, 4];
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
            f
        };
        stream.extend(masked(1, br#"{"op":"subscribe","subscriptions":[]}"#));
        let before_close = stream.len();
        stream.extend(masked(8, &[0x03, 0xe8]));
        for chunk in [1, 5, stream.len()] {
            let mut s = Scanner::default();
            for (i, c) in stream.chunks(chunk).enumerate() {
                s.feed(c);
                if (i + 1) * chunk <= before_close {
                    assert!(!s.closing, "chunks of {chunk}");
                }
            }
            assert!(s.closing, "chunks of {chunk}");
        }
    }

    #[test]
    fn the_allowance_is_per_ten_seconds() {
        let t0 = Instant::now();
        let mut t = Tally::new(100, t0);
        assert!(!t.add(60, t0));
        assert!(!t.add(40, t0 + Duration::from_secs(9)));
        // Ten seconds on, the first 60 no longer count.
        assert!(!t.add(60, t0 + Duration::from_secs(10)));
        assert!(t.add(1, t0 + Duration::from_secs(11)));
    }
}
