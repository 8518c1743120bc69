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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed its side (or its socket failed).
    Client,
    /// The server closed the connection (or writing to it failed).
    Server,
    /// The relay cut the client off: too many error statuses.
    Cut,
}

/// Which side sent the first close frame (`first_close`): none yet.
const NO_CLOSE: u8 = 0;
const CLIENT_CLOSED: u8 = 1;
const SERVER_CLOSED: u8 = 2;

/// Why a relayed client is reported as closed (`reason` of `liveview_client_closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The relay cut it off.
    TooManyErrors,
    /// The server dropped it (a flood overflowed its reply queue, or a protocol error).
    ServerDropped,
    /// It left after having been refused something.
    ClientLeft,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooManyErrors => "too_many_errors",
            Reason::ServerDropped => "server_dropped",
            Reason::ClientLeft => "client_left",
        }
    }
}

/// What to report for a connection that ended as `end`, where `first_close` says
/// which side's close frame came first. The server drops a flooding client by
/// sending an error status and a close frame: the client then answers with its own
/// close frame, or the relay's write of the rest of the flood fails, or the
/// server's EOF arrives first; which of those the relay sees first is a race, so the
/// server's close frame decides when there was one.
fn verdict(end: End, first_close: u8, stopping: bool, earned: u64) -> Option<Reason> {
    let server_initiated = first_close == SERVER_CLOSED || (end == End::Server && first_close != CLIENT_CLOSED);
    match end {
        End::Cut => Some(Reason::TooManyErrors),
        // Not when the daemon is stopping the server.
        _ if server_initiated && !stopping => Some(Reason::ServerDropped),
        // The client left; say so only when it had been refused.
        _ if earned > 0 && !stopping => Some(Reason::ClientLeft),
        _ => None,
    }
}

/// One client: bytes both ways until either side closes, or the client has earned
/// too many error statuses. Returns what it reported.
async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    server: SocketAddr,
    max_errors: u32,
    stopping: Arc<AtomicBool>,
) -> Option<Reason> {
    let Ok(upstream) = TcpStream::connect(server).await else {
        return None;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = upstream.into_split();
    let first_close = AtomicU8::new(NO_CLOSE);
    let note_close = |who: u8| {
        let _ = first_close.compare_exchange(NO_CLOSE, who, Ordering::Relaxed, Ordering::Relaxed);
    };
    // Client → server: passed on as is, watched for the client's close frame.
    let up = async {
        let mut scanner = Scanner::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return End::Client,
                Ok(n) => n,
            };
            scanner.feed(&buf[..n]);
            if scanner.closing {
                note_close(CLIENT_CLOSED);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return End::Server;
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
            if scanner.closing {
                note_close(SERVER_CLOSED);
            }
            earned += u64::from(errors);
            // Errors that come with the server's close frame (its "backlog full"
            // status) are its drop, not the relay's cut.
            if errors > 0 && !scanner.closing && tally.add(errors, Instant::now()) {
                return End::Cut;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return End::Client;
            }
        }
    };
    let end = tokio::select! {
        e = up => e,
        e = down => e,
    };
    let window = ERROR_WINDOW.as_secs();
    let reason = verdict(
        end,
        first_close.load(Ordering::Relaxed),
        stopping.load(Ordering::Relaxed),
        earned,
    );
    match reason {
        Some(Reason::TooManyErrors) => tracing::warn!(
            event = names::LIVEVIEW_CLIENT_CLOSED,
            client = %peer,
            errors = earned,
            reason = Reason::TooManyErrors.as_str(),
            "Foxglove live view: closed a client that sent more than {max_errors} unusable requests in {window} s"
        ),
        Some(Reason::ServerDropped) => tracing::warn!(
            event = names::LIVEVIEW_CLIENT_CLOSED,
            client = %peer,
            errors = earned,
            reason = Reason::ServerDropped.as_str(),
            "Foxglove live view: the server dropped a client (protocol error or request flood; {earned} error statuses relayed)"
        ),
        Some(Reason::ClientLeft) => tracing::info!(
            event = names::LIVEVIEW_CLIENT_CLOSED,
            client = %peer,
            errors = earned,
            reason = Reason::ClientLeft.as_str(),
            "Foxglove live view: a client left after {earned} unusable requests"
        ),
        None => {}
    }
    let _ = cw.shutdown().await;
    reason
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

    /// A masked client frame.
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 1, 2, 3, 4];
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
        f
    }

    /// Relay one connection between a scripted client and a scripted server: the
    /// server answers the upgrade, and then, when `server_drops`, sends an error status
    /// and a close frame as the Foxglove server does when a flood overflows its reply
    /// queue (the client answers with its own close frame, as websocket clients do);
    /// otherwise the client says goodbye first and the server answers it.
    async fn relay_once(server_drops: bool, stopping: bool) -> Option<Reason> {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let fake_server = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
            if server_drops {
                out.extend(frame(1, br#"{"op":"status","level":2,"message":"backlog full"}"#));
                out.extend(frame(8, b""));
                s.write_all(&out).await.unwrap();
                // Read the client's answer, then hang up.
                let _ = s.read(&mut buf).await;
            } else {
                s.write_all(&out).await.unwrap();
                let _ = s.read(&mut buf).await; // the client's close frame
                let _ = s.write_all(&frame(8, b"")).await;
            }
        });
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(front_addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            if server_drops {
                // Wait for the server's close frame, then answer it.
                while !got.ends_with(&[0x88, 0]) {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = c.write_all(&masked(8, b"")).await;
            } else {
                while !got.ends_with(b"\r\n\r\n") {
                    let n = c.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                c.write_all(&masked(8, b"")).await.unwrap();
            }
            while let Ok(n) = c.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        let (conn, peer) = front.accept().await.unwrap();
        let reason = relay(conn, peer, server_addr, 10, Arc::new(AtomicBool::new(stopping))).await;
        fake_server.await.unwrap();
        client.await.unwrap();
        reason
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_the_server_drops_is_reported_once_whatever_the_race() {
        for _ in 0..20 {
            assert_eq!(relay_once(true, false).await, Some(Reason::ServerDropped));
            assert_eq!(relay_once(true, true).await, None, "the daemon is stopping");
            assert_eq!(relay_once(false, false).await, None, "a client that leaves unrefused");
        }
    }

    #[test]
    fn the_verdict_follows_the_first_close_frame() {
        use End::*;
        // The server's close frame came first: it dropped the client, whichever
        // side's socket the relay saw end.
        for end in [Client, Server] {
            assert_eq!(verdict(end, SERVER_CLOSED, false, 0), Some(Reason::ServerDropped));
            assert_eq!(verdict(end, SERVER_CLOSED, true, 0), None);
            assert_eq!(verdict(end, CLIENT_CLOSED, false, 3), Some(Reason::ClientLeft));
            assert_eq!(verdict(end, CLIENT_CLOSED, false, 0), None);
        }
        // No close frame: the socket that ended says who left.
        assert_eq!(verdict(Server, NO_CLOSE, false, 0), Some(Reason::ServerDropped));
        assert_eq!(verdict(Client, NO_CLOSE, false, 0), None);
        assert_eq!(verdict(Cut, NO_CLOSE, false, 11), Some(Reason::TooManyErrors));
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
