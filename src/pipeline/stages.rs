//! The stages between the sources and the bus: a windower per stream, the outputs
//! stage, health reports and the query service. Each is a plain function run by the
//! [`Supervisor`](super::supervise::Supervisor); [`dispatch`] is the one place that
//! handles what a windower produces.

use crate::bus::msg::{JsonMsg, QueryErrorMsg};
use crate::bus::{Enc, Sink, Topics};
use crate::calibration::ImuCorrection;
use crate::clock::Clock;
use crate::edge::{Receiver, Recv};
use crate::engine::worker::{Embedded, Submit, WorkerHandle};
use crate::fusion::{Fused, Fuser};
use crate::history::Record;
use crate::ident::clip;
use crate::modality::Target;
use crate::outputs::{Outputs, Published};
use crate::queries::service::{Answer, QueryService, Request};
use crate::queries::Registry;
use crate::sources::{Frame, FrameData, ImuSample, StopFlag};
use crate::telemetry::{names, DaemonEvent, LogLimiter, StreamEvent, StreamStats, Telemetry, WindowDrop};
use crate::window::{Outcome, Window, Windower};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Handle a windower's outcomes: count each, log problems (rate limited), and hand
/// every ready window to `ready`.
pub fn dispatch(outcomes: Vec<Outcome>, stats: &StreamStats, limiter: &mut LogLimiter, mut ready: impl FnMut(Window)) {
    for o in outcomes {
        match o {
            Outcome::Ready(win) => {
                stats.emit(StreamEvent::WindowClosed);
                ready(win);
            }
            Outcome::Dropped { seq, coverage, .. } => {
                stats.emit(StreamEvent::WindowClosed);
                stats.emit(StreamEvent::WindowDropped(WindowDrop::Coverage));
                tracing::debug!(event = names::WINDOW_DROPPED, source = %stats.source, modality = %stats.modality, seq, coverage, reason = "coverage", "window dropped");
            }
            Outcome::Rejected { reason } => {
                stats.emit(StreamEvent::FrameRejected);
                if let Some(suppressed) = limiter.allow() {
                    tracing::warn!(event = names::FRAME_REJECTED, source = %stats.source, modality = %stats.modality, reason = %clip(&reason, 300), suppressed, "frame discarded");
                }
            }
            Outcome::LateFrames { count } => stats.emit(StreamEvent::LateFrames(count)),
            Outcome::TimeJump { from_ns, to_ns } => {
                stats.emit(StreamEvent::TimeJump);
                tracing::warn!(event = names::TIME_JUMP, source = %stats.source, modality = %stats.modality, from_ns, to_ns, jump_s = (to_ns as f64 - from_ns as f64) / 1e9, "stream time jumped; windowing restarted at the new time");
            }
        }
    }
}

/// One stream's windowing stage: its frames in, its encoder's queue out.
pub struct WindowStage {
    pub rx: Receiver<Arc<Frame>>,
    pub windower: Windower,
    /// The stream's own clock (idle flushing asks it).
    pub clock: Arc<dyn Clock>,
    pub worker: WorkerHandle,
    pub stats: Arc<StreamStats>,
    /// A quiet stream's open windows close after this long.
    pub idle_flush: Duration,
    pub stop: StopFlag,
    /// IMU samples: bias correction and rotation into the body frame.
    pub imu: Option<ImuCorrection>,
}

/// Frames → windows → encoder queue, for one stream. Idle flushing asks the stream's
/// own clock, so a replay at any pace closes exactly the windows a real-time run does.
pub fn window_stage(ctx: WindowStage) {
    let WindowStage {
        rx,
        windower: mut w,
        clock,
        worker,
        stats,
        idle_flush,
        stop,
        imu,
    } = ctx;
    let imu = imu.filter(|c| !c.is_identity());
    let mut limiter = LogLimiter::new(Duration::from_secs(10));
    let idle_ns = idle_flush.as_nanos() as i64;
    let poll = idle_flush.min(Duration::from_millis(200));
    let submit = |win: Window| match worker.submit(win, stats.clone()) {
        // Over the frame-rate budget: counted by the handle, by design, not logged.
        Submit::Queued | Submit::OverBudget => {}
        Submit::Dropped(seq) => {
            tracing::debug!(event = names::WINDOW_DROPPED, source = %stats.source, modality = %stats.modality, seq, reason = "backpressure", "encoder behind; window dropped")
        }
        Submit::Closed => {
            stats.emit(StreamEvent::WindowDropped(WindowDrop::Shutdown));
        }
    };
    loop {
        stats.beat();
        match rx.recv_timeout(poll) {
            // A compressed frame (UVC MJPEG) is decoded here, off the capture thread.
            Recv::Item(frame) => match crate::sources::pixfmt::decoded(frame, w.limits().image) {
                Ok(frame) => {
                    // IMU samples: bias-corrected and rotated into the body frame.
                    let frame = match (&imu, &frame.data) {
                        (Some(c), FrameData::Imu(s)) => {
                            let (accel, gyro) = c.apply(s.accel, s.gyro);
                            Arc::new(Frame {
                                t_ns: frame.t_ns,
                                data: FrameData::Imu(ImuSample { accel, gyro }),
                            })
                        }
                        _ => frame,
                    };
                    dispatch(w.push(frame), &stats, &mut limiter, submit)
                }
                Err(reason) => dispatch(vec![Outcome::Rejected { reason }], &stats, &mut limiter, submit),
            },
            Recv::Closed => {
                dispatch(w.flush(), &stats, &mut limiter, submit);
                return;
            }
            Recv::Timeout => {
                if stop.is_stopped() {
                    return;
                }
                let now = clock.now_ns();
                if now > i64::MIN + idle_ns {
                    dispatch(w.advance(now - idle_ns), &stats, &mut limiter, submit);
                }
            }
        }
    }
}

/// The outputs stage: every encoder's embeddings in; the bus, the history and the
/// taps out.
pub struct OutputsStage<S: Sink> {
    pub rx: Receiver<Embedded>,
    pub outputs: Outputs,
    pub fuser: Option<Fuser>,
    /// Every published embedding is sent here to be kept.
    pub history: Option<crate::edge::Sender<Record>>,
    pub registry: Arc<Mutex<Registry>>,
    pub sink: Arc<S>,
    pub telemetry: Arc<Telemetry>,
    pub taps: super::Taps,
    /// The runtime the sink's puts run on.
    pub rt: tokio::runtime::Handle,
}

/// Embeddings → labels, events, alerts → bus; every embedding is offered to the tap.
/// With a [`Fuser`], each stream's embedding also joins its window's fused embedding,
/// published (with its labels, events and alerts) once the window is ready.
pub fn outputs_stage<S: Sink>(ctx: OutputsStage<S>) {
    let OutputsStage {
        rx,
        mut outputs,
        mut fuser,
        history,
        registry,
        sink,
        telemetry,
        taps,
        rt,
    } = ctx;
    let base = format!("{}/", outputs.topics.base());
    let publish = |produced: crate::outputs::Produced| {
        telemetry.emit(DaemonEvent::Alerts(produced.alerts as u64));
        for (key, body, enc) in produced.messages {
            if taps.published.is_listened() {
                taps.published.offer(Arc::new(Published {
                    topic: key.strip_prefix(&base).unwrap_or(&key).to_string(),
                    payload: body.clone(),
                    enc,
                }));
            }
            if let Err(err) = rt.block_on(sink.put(key, body, enc)) {
                telemetry.emit(DaemonEvent::BusError);
                tracing::warn!(event = names::PUBLISH_FAILED, error = %err, "publish failed");
            }
        }
    };
    let reg = || registry.lock().unwrap_or_else(|p| p.into_inner());
    // Every published embedding goes to the history (its queue drops the oldest when
    // the disk cannot keep up; a write error is the history thread's to report).
    let keep = |r: Record| {
        if let Some(tx) = &history {
            // Every loss is counted: a full queue drops its oldest, a gone thread all.
            if !matches!(tx.send(r), crate::edge::Sent::Queued) {
                telemetry.emit(DaemonEvent::HistoryDropped);
            }
        }
    };
    let fused = |outputs: &mut Outputs, ready: Vec<Fused>| {
        for f in ready {
            let produced = outputs.on_fused(&f, &mut reg());
            publish(produced);
            keep(Record {
                source: "fused".into(),
                target: Target::Fused,
                seq: f.seq,
                t_start_ns: f.t_start_ns,
                t_end_ns: f.t_end_ns,
                vector: f.vector.clone(),
            });
            telemetry.emit(DaemonEvent::FusedPublished { complete: f.complete });
            taps.fused.offer(Arc::new(f));
        }
    };
    loop {
        let e = match rx.recv_timeout(Duration::from_millis(100)) {
            Recv::Item(e) => e,
            Recv::Timeout => {
                if let Some(f) = fuser.as_mut() {
                    let ready = f.tick(Instant::now());
                    fused(&mut outputs, ready);
                }
                continue;
            }
            Recv::Closed => break,
        };
        let produced = outputs.on_embedded(&e, &mut reg());
        publish(produced);
        telemetry.stream(&e.source, e.modality).emit(StreamEvent::Published);
        keep(Record {
            source: e.source.to_string(),
            target: e.modality.into(),
            seq: e.seq,
            t_start_ns: e.t_start_ns,
            t_end_ns: e.t_end_ns,
            vector: e.vector.clone(),
        });
        if let Some(f) = fuser.as_mut() {
            let ready = f.push(&e, Instant::now());
            fused(&mut outputs, ready);
        }
        taps.embeddings.offer(Arc::new(e));
    }
    if let Some(f) = fuser.as_mut() {
        let ready = f.flush();
        fused(&mut outputs, ready);
    }
}

/// Publish `health` now.
pub async fn publish_health<S: Sink>(sink: &S, topics: &Topics, telemetry: &Telemetry, robot: &str) {
    let health = telemetry.health(robot, crate::clock::realtime_ns());
    if let Err(e) = sink.put(topics.health(), health.to_json(), Enc::Json).await {
        telemetry.emit(DaemonEvent::BusError);
        tracing::warn!(event = names::PUBLISH_FAILED, error = %e, "health not published");
    }
}

/// `health` every `interval`.
pub async fn health_stage<S: Sink>(
    sink: Arc<S>,
    topics: Topics,
    telemetry: Arc<Telemetry>,
    robot: String,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        publish_health(sink.as_ref(), &topics, &telemetry, &robot).await;
    }
}

/// What the query service needs to embed a query's text.
pub type EmbedText = Arc<dyn Fn(String) -> Result<Vec<f32>, String> + Send + Sync>;

pub use crate::queries::service::{resolve_plan, ResolveTerm};

/// `queries/<id>`: put registers, delete removes; `get queries/**` lists. Every
/// request from the bus passes [`Admission`] (overall rate, per-id rate) and the size
/// bounds of `[queries]` before it can reach the text encoder or the disk; every
/// refusal is answered on `errors/queries/<id>` and counted. Requests are handled one
/// at a time, so at most one text encoding runs for the bus at any moment.
pub async fn query_service(
    session: zenoh::Session,
    topics: Topics,
    registry: Arc<Mutex<Registry>>,
    resolve: ResolveTerm,
    qcfg: crate::config::QueriesConfig,
    telemetry: Arc<Telemetry>,
) {
    let sub = match session.declare_subscriber(topics.queries_sub()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(event = names::BUS_ERROR, error = %e, "cannot subscribe to queries");
            return;
        }
    };
    let queryable = match session.declare_queryable(topics.queries_all()).await {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(event = names::BUS_ERROR, error = %e, "cannot declare the queries queryable");
            return;
        }
    };
    let mut service = QueryService::new(registry, resolve, qcfg, telemetry.clone());
    let mut limiter = LogLimiter::new(Duration::from_secs(10));
    let answer = |a: Answer, limiter: &mut LogLimiter| {
        telemetry.emit(DaemonEvent::QueryRefused(a.code.as_str()));
        if let Some(suppressed) = limiter.allow() {
            tracing::warn!(event = names::QUERY_REJECTED, query_id = %clip(&a.id, 80), code = a.code.as_str(), error = %clip(&a.error, 300), suppressed, "query request refused");
        }
        let (session, topic) = (session.clone(), topics.query_error(&a.id));
        let body = QueryErrorMsg {
            query_id: a.id,
            key: a.key,
            code: a.code.as_str().to_string(),
            error: a.error,
        }
        .to_json();
        async move {
            let _ = session
                .put(topic, body)
                .encoding(zenoh::bytes::Encoding::APPLICATION_JSON)
                // Every refusal is answered: Block, bounded like alerts (a peer that
                // cannot take it for `bus.alert_block_ms` has its session closed).
                .congestion_control(zenoh::qos::CongestionControl::Block)
                .await;
        }
    };
    let mut retry = tokio::time::interval(Duration::from_secs(10));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            s = sub.recv_async() => {
                let Ok(sample) = s else { break };
                let key = sample.key_expr().as_str().to_string();
                let Some(id) = topics.query_id(&key).map(str::to_string) else { continue };
                let size = sample.payload().len();
                let request = match sample.kind() {
                    zenoh::sample::SampleKind::Put => Request::Put(sample.payload().to_bytes().to_vec()),
                    zenoh::sample::SampleKind::Delete => Request::Remove,
                };
                // A registration may embed its terms: on a blocking thread.
                let now = std::time::Instant::now();
                let done = tokio::task::spawn_blocking(move || {
                    let reply = service.handle(&id, &key, size, request, now);
                    (service, reply)
                })
                .await;
                let Ok((s, reply)) = done else {
                    tracing::error!(event = names::STAGE_FAILED, stage = "queries", "the query service panicked");
                    break;
                };
                service = s;
                if let Some(a) = reply {
                    answer(a, &mut limiter).await;
                }
            }
            q = queryable.recv_async() => {
                let Ok(query) = q else { break };
                let specs = service.specs();
                for spec in specs {
                    let key = topics.query(&spec.id);
                    let Ok(ke) = zenoh::key_expr::KeyExpr::try_from(key.as_str()) else { continue };
                    if !query.key_expr().intersects(&ke) {
                        continue;
                    }
                    let body = serde_json::to_string(&spec).unwrap_or_default();
                    if let Err(e) = query.reply(ke, body).encoding(zenoh::bytes::Encoding::APPLICATION_JSON).await {
                        tracing::warn!(event = names::BUS_ERROR, error = %e, "query reply failed");
                    }
                }
            }
            _ = retry.tick() => service.retry_store(),
        }
    }
}
