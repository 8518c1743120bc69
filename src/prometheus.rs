//! `[prometheus] listen`: a Prometheus text endpoint (`GET /metrics`, exposition
//! format 0.0.4) rendered from the same telemetry counters as the health JSON
//! ([`Telemetry::prometheus`]; every name in [`crate::telemetry::PROMETHEUS`]). Off
//! by default. The server is minimal and bounded: at most 16 connections at once,
//! 8 KiB and 5 s to send a request, one response per connection.

use crate::telemetry::{names, Telemetry};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_CONNECTIONS: usize = 16;
const MAX_REQUEST: usize = 8192;

/// Bind `listen` (`host:port`); the error names the key.
pub async fn bind(listen: &str) -> Result<TcpListener, String> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("`prometheus.listen` = {listen:?}: cannot listen there: {e}"))?;
    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(event = names::PROMETHEUS_STARTED, listen = %addr, "Prometheus metrics on http://{addr}/metrics");
    Ok(l)
}

/// Serve `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the bound: closed at once
            continue;
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &telemetry)).await;
            drop(permit);
        });
    }
}

/// Read one request head and answer it.
async fn answer(mut stream: TcpStream, telemetry: &Telemetry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => {
            let body = telemetry.prometheus();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
            .await
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET only\n").await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"metrics are on /metrics\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
