//! `[prometheus] listen`: a Prometheus text endpoint (`GET /metrics`, exposition
//! format 0.0.4) rendered from the same telemetry counters as the health JSON
//! ([`Telemetry::prometheus`]; every name in [`crate::telemetry::metrics::METRICS`]). Off
//! by default.
//!
//! Served by hyper (HTTP/1.1): a client has [`HEADER_TIMEOUT`] to send its request
//! head and [`CONNECTION_TIMEOUT`] in all, one request per connection. Slow clients
//! (slowloris) are cut off by those timeouts, not by a small connection cap: up to
//! [`MAX_CONNECTIONS`] are served at once, so a scrape gets through while dozens of
//! sockets dribble a byte a second.

use crate::telemetry::{names, Telemetry};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Time to send the request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the whole exchange.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (each ends within the timeouts above).
pub const MAX_CONNECTIONS: usize = 1024;

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
            let service = hyper::service::service_fn(move |req| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(answer(&req, &telemetry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(8192)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

/// The response to one request.
fn answer<B>(req: &Request<B>, telemetry: &Telemetry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(telemetry.prometheus()),
        ),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"GET only\n"),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"metrics are on /metrics\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn scrape(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_gets_through_while_fifty_slow_sockets_are_open() {
        let telemetry = Arc::new(Telemetry::new(Duration::from_secs(10)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, telemetry));
        // Fifty slowloris sockets: a byte a second, never a whole request head.
        let mut slow = Vec::new();
        for _ in 0..50 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"G").await.unwrap();
            slow.push(s);
        }
        let dribble = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for s in &mut slow {
                    let _ = s.write_all(b"E").await;
                }
            }
            // Every slow socket was cut off by the header timeout (read: EOF or a
            // 408 answer, then EOF).
            let mut ended = 0;
            for s in &mut slow {
                let mut b = [0u8; 256];
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await {
                    ended += 1;
                }
            }
            ended
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                scrape(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            )
            .await
            .expect("a scrape answered within 2 s while 50 slow sockets are open");
            assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
            assert!(r.contains("sensebind_"), "{r}");
            assert!(t0.elapsed() < Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let ended = dribble.await.unwrap();
        assert_eq!(ended, 50, "every slow socket is closed by the header timeout");
        let r = scrape(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = scrape(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        server.abort();
    }
}
