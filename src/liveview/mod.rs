//! The live view: an optional Foxglove WebSocket server (`[foxglove]`, off by default,
//! loopback when on) that streams what the robot senses and how sensebind reads it.
//! Open the Foxglove app → "Open connection" → `ws://127.0.0.1:8765`.
//!
//! Channels (schemas as in recordings, see [`crate::record::codec`]):
//! - `frames/<modality>/<source>`: camera, depth and thermal images, downscaled to
//!   `image_max_side` and at most `image_rate_hz`; IMU samples;
//! - `audio_level/<source>`: `sensebind.AudioLevel` per audio chunk (RMS and peak dBFS);
//! - `labels/<modality>/<source>`, `events/…`, `alerts/<id>`: as published on the bus;
//! - `similarity/<query id>`: `sensebind.Similarity`, the cosine of each registered
//!   query with every window it applies to (plot `.score` over time).
//!
//! Clients reach the server through [`guard`], which disconnects a client that keeps
//! sending requests the server cannot use (`foxglove.max_client_errors`).
//!
//! The viewer listens on the pipeline's taps: a slow or absent client never slows the
//! pipeline (the taps drop what a listener cannot take; Foxglove drops for slow clients).

pub mod guard;

use crate::config::FoxgloveConfig;
use crate::engine::worker::Embedded;
use crate::modality::Modality;
use crate::outputs::Published;
use crate::queries::Registry;
use crate::record::codec;
use crate::sources::{Frame, FrameData, TappedFrame};
use crate::telemetry::names;
use foxglove::{PartialMetadata, RawChannel};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};

pub const AUDIO_LEVEL: &str = "sensebind.AudioLevel";
pub const SIMILARITY: &str = "sensebind.Similarity";

const AUDIO_LEVEL_SCHEMA: &str = r#"{"title":"sensebind.AudioLevel","type":"object","properties":{"t_ns":{"type":"integer"},"rms_dbfs":{"type":"number"},"peak_dbfs":{"type":"number"}},"required":["t_ns","rms_dbfs","peak_dbfs"]}"#;
const SIMILARITY_SCHEMA: &str = r#"{"title":"sensebind.Similarity","type":"object","properties":{"query_id":{"type":"string"},"source":{"type":"string"},"modality":{"type":"string"},"seq":{"type":"integer"},"t_end_ns":{"type":"integer"},"score":{"type":"number"},"threshold":{"type":"number"}},"required":["query_id","source","modality","score"]}"#;

#[derive(Debug, thiserror::Error)]
#[error("foxglove live view on {addr}: {reason}")]
pub struct LiveViewError {
    pub addr: String,
    pub reason: String,
}

/// A running live view.
pub struct LiveView {
    pub port: u16,
    server: Option<foxglove::WebSocketServerHandle>,
    task: tokio::task::JoinHandle<()>,
    guard: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

impl LiveView {
    pub async fn stop(mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.task.abort();
        self.guard.abort();
        if let Some(s) = self.server.take() {
            s.stop().wait().await;
        }
    }
}

/// The receivers the live view listens on.
pub struct LiveInputs {
    pub frames: broadcast::Receiver<Arc<TappedFrame>>,
    pub published: broadcast::Receiver<Arc<Published>>,
    pub embeddings: broadcast::Receiver<Arc<Embedded>>,
}

/// Start the server and the task feeding it.
pub async fn start(
    cfg: &FoxgloveConfig,
    inputs: LiveInputs,
    registry: Arc<Mutex<Registry>>,
) -> Result<LiveView, LiveViewError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let err = |reason: String| LiveViewError {
        addr: addr.clone(),
        reason,
    };
    // Clients connect to the guard; the server itself listens on a loopback port.
    let front = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| err(e.to_string()))?;
    let port = front.local_addr().map_err(|e| err(e.to_string()))?.port();
    let ctx = foxglove::Context::new();
    let server = ctx
        .websocket_server()
        .name("sensebind")
        .bind("127.0.0.1", 0)
        .start()
        .await
        .map_err(|e| err(e.to_string()))?;
    let inner = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let stopping = Arc::new(AtomicBool::new(false));
    let guard = tokio::spawn(guard::serve(front, inner, cfg.max_client_errors, stopping.clone()));
    tracing::info!(event = names::LIVEVIEW_STARTED, host = %cfg.host, port, "Foxglove live view: open ws://{}:{port} in the Foxglove app", cfg.host);
    let feeder = Feeder {
        ctx,
        channels: HashMap::new(),
        last_image: HashMap::new(),
        image_every: crate::config::secs(1.0 / cfg.image_rate_hz),
        max_side: cfg.image_max_side,
        registry,
    };
    let task = tokio::spawn(feeder.run(inputs));
    Ok(LiveView {
        port,
        server: Some(server),
        task,
        guard,
        stopping,
    })
}

struct Feeder {
    ctx: Arc<foxglove::Context>,
    channels: HashMap<String, Arc<RawChannel>>,
    last_image: HashMap<String, Instant>,
    image_every: Duration,
    max_side: u32,
    registry: Arc<Mutex<Registry>>,
}

impl Feeder {
    async fn run(mut self, mut inputs: LiveInputs) {
        loop {
            tokio::select! {
                f = inputs.frames.recv() => match f {
                    Ok(f) => self.frame(&f),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                p = inputs.published.recv() => match p {
                    Ok(p) => self.published(&p),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                e = inputs.embeddings.recv() => match e {
                    Ok(e) => self.similarity(&e),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
            }
        }
    }

    /// The channel of `topic` (made, and so advertised, on first use), or `None` when
    /// no client is subscribed to it: then nothing is downscaled or encoded for it.
    fn watched(&mut self, topic: &str, schema: &str) -> Option<Arc<RawChannel>> {
        let ch = match self.channels.get(topic) {
            Some(c) => c.clone(),
            None => {
                let schema_def = match schema {
                    AUDIO_LEVEL => Some(foxglove::Schema::new(
                        AUDIO_LEVEL,
                        "jsonschema",
                        AUDIO_LEVEL_SCHEMA.as_bytes(),
                    )),
                    SIMILARITY => Some(foxglove::Schema::new(
                        SIMILARITY,
                        "jsonschema",
                        SIMILARITY_SCHEMA.as_bytes(),
                    )),
                    s => codec::schema_of(s),
                };
                let c = self
                    .ctx
                    .channel_builder(topic.to_string())
                    .schema(schema_def)
                    .message_encoding(codec::message_encoding(schema))
                    .build_raw()
                    .ok()?;
                self.channels.insert(topic.to_string(), c.clone());
                c
            }
        };
        ch.has_sinks().then_some(ch)
    }

    /// Log on `topic` what `data` builds, if anyone watches it.
    fn log(&mut self, topic: &str, schema: &str, log_time_ns: u64, data: impl FnOnce() -> Vec<u8>) {
        if let Some(ch) = self.watched(topic, schema) {
            ch.log_with_meta(
                &data(),
                PartialMetadata {
                    log_time: Some(log_time_ns),
                },
            );
        }
    }

    fn frame(&mut self, f: &TappedFrame) {
        let frame = &f.frame;
        let t = frame.t_ns.max(0) as u64;
        match &frame.data {
            FrameData::Audio { samples, .. } => {
                self.log(&format!("audio_level/{}", f.source), AUDIO_LEVEL, t, || {
                    let (rms, peak) = audio_level(samples);
                    serde_json::json!({"t_ns": frame.t_ns, "rms_dbfs": rms, "peak_dbfs": peak})
                        .to_string()
                        .into_bytes()
                });
            }
            FrameData::Imu(_) => {
                let topic = codec::frame_topic(Modality::Imu, &f.source);
                self.log(&topic, codec::IMU, t, || codec::encode_frame(&f.source, frame).data);
            }
            _ => {
                let topic = codec::frame_topic(frame.data.modality(), &f.source);
                let now = Instant::now();
                if self
                    .last_image
                    .get(&topic)
                    .is_some_and(|t| now.duration_since(*t) < self.image_every)
                {
                    return;
                }
                self.last_image.insert(topic.clone(), now);
                let max_side = self.max_side;
                self.log(&topic, codec::schema_name(&frame.data), t, || {
                    let small = Frame {
                        t_ns: frame.t_ns,
                        data: downscale(&frame.data, max_side),
                    };
                    codec::encode_frame(&f.source, &small).data
                });
            }
        }
    }

    fn published(&mut self, p: &Published) {
        if p.topic.starts_with("embedding/") {
            return; // vectors are not something to look at; similarity is
        }
        if let Some(Ok(e)) = codec::encode_published(&p.topic, &p.payload, false) {
            self.log(&e.topic, e.schema, e.log_time_ns, || e.data);
        }
    }

    fn similarity(&mut self, e: &Embedded) {
        let scores = match self.registry.lock() {
            Ok(r) => r.scores(&e.source, e.modality.into(), &e.vector),
            Err(p) => p.into_inner().scores(&e.source, e.modality.into(), &e.vector),
        };
        for (id, score, threshold) in scores {
            self.log(
                &format!("similarity/{id}"),
                SIMILARITY,
                e.t_end_ns.max(0) as u64,
                || {
                    serde_json::json!({
                        "query_id": id, "source": &*e.source, "modality": e.modality, "seq": e.seq,
                        "t_end_ns": e.t_end_ns, "score": score, "threshold": threshold,
                    })
                    .to_string()
                    .into_bytes()
                },
            );
        }
    }
}

/// RMS and peak level of a chunk, dBFS (−120 for silence).
pub fn audio_level(samples: &[f32]) -> (f32, f32) {
    if samples.is_empty() {
        return (-120.0, -120.0);
    }
    let db = |x: f32| if x > 1e-6 { 20.0 * x.log10() } else { -120.0 };
    let rms = (samples.iter().map(|x| x * x).sum::<f32>() / samples.len() as f32).sqrt();
    let peak = samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    (db(rms), db(peak))
}

/// An image no larger than `max_side` (nearest-neighbour; compressed images as is).
pub fn downscale(d: &FrameData, max_side: u32) -> FrameData {
    fn pick<T: Copy>(w: u32, h: u32, c: usize, data: &[T], max_side: u32) -> Option<(u32, u32, Vec<T>)> {
        let step = w.max(h).div_ceil(max_side.max(1)).max(1);
        if step == 1 || data.len() < w as usize * h as usize * c {
            return None;
        }
        let (nw, nh) = (w.div_ceil(step), h.div_ceil(step));
        let mut out = Vec::with_capacity(nw as usize * nh as usize * c);
        for y in (0..h).step_by(step as usize) {
            for x in (0..w).step_by(step as usize) {
                let i = (y as usize * w as usize + x as usize) * c;
                out.extend_from_slice(&data[i..i + c]);
            }
        }
        Some((nw, nh, out))
    }
    match d {
        FrameData::Rgb8 { width, height, data } => match pick(*width, *height, 3, data, max_side) {
            Some((width, height, data)) => FrameData::Rgb8 { width, height, data },
            None => d.clone(),
        },
        FrameData::Depth16 { width, height, data } => match pick(*width, *height, 1, data, max_side) {
            Some((width, height, data)) => FrameData::Depth16 { width, height, data },
            None => d.clone(),
        },
        FrameData::Thermal16 { width, height, data } => match pick(*width, *height, 1, data, max_side) {
            Some((width, height, data)) => FrameData::Thermal16 { width, height, data },
            None => d.clone(),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_downscaled_to_the_max_side() {
        let d = FrameData::Rgb8 {
            width: 640,
            height: 480,
            data: vec![7; 640 * 480 * 3],
        };
        let FrameData::Rgb8 { width, height, data } = downscale(&d, 320) else {
            panic!()
        };
        assert_eq!((width, height, data.len()), (320, 240, 320 * 240 * 3));
        let t = FrameData::Thermal16 {
            width: 160,
            height: 120,
            data: vec![1; 160 * 120],
        };
        assert_eq!(downscale(&t, 320), t, "small images pass as they are");
    }

    #[test]
    fn audio_level_in_dbfs() {
        let (rms, peak) = audio_level(&[0.5, -0.5, 0.5, -0.5]);
        assert!((rms + 6.02).abs() < 0.01 && (peak + 6.02).abs() < 0.01);
        assert_eq!(audio_level(&[0.0; 8]), (-120.0, -120.0));
    }
}
