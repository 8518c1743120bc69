//! Faults inside the graph, with simulated sensors and encoders plugged into the real
//! pipeline (`pipeline::run_graph_with`): a wedged encoder stops the systemd watchdog
//! and progress resumes it; an encoder that errors at run time loses only its own
//! windows; garbage from a sensor (truncated JPEG, wrong-size frames, NaN/inf IMU,
//! silence, clipped audio, timestamps going backwards or jumping hours) is counted and
//! skipped while every stream goes on.

use crate::common;

use common::*;
use sensebind::clock::{Clock, ReplayClock};
use sensebind::engine::{Encoder, EngineError};
use sensebind::pipeline::{self, systemd::Notifier, BuiltSource, Hooks, Taps};
use sensebind::preprocess::ModelInput;
use sensebind::sources::{
    Frame, FrameData, ImuSample, Source, SourceConfig, SourceError, SourceInfo, StopFlag, StreamInfo,
};
use sensebind::Modality;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A sensor that plays `make(i)` for i = 0, 1, … at `rate_hz` of sensor time, paced
/// at real time, on a replay clock; `None` ends it.
struct Scripted {
    modality: Modality,
    rate_hz: f64,
    clock: Arc<ReplayClock>,
    i: u64,
    make: Box<dyn FnMut(u64, i64) -> Option<Frame> + Send>,
}

impl Source for Scripted {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: format!("scripted {}", self.modality),
            streams: vec![StreamInfo {
                modality: self.modality,
                nominal_rate_hz: self.rate_hz,
            }],
        }
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let t = (self.i as f64 * 1e9 / self.rate_hz) as i64;
        let Some(f) = (self.make)(self.i, t) else {
            return Ok(None);
        };
        self.i += 1;
        self.clock.advance(f.t_ns.max(0));
        std::thread::sleep(Duration::from_secs_f64(1.0 / self.rate_hz));
        Ok(Some(f))
    }
}

fn scripted(
    id: &str,
    modality: Modality,
    rate_hz: f64,
    make: impl FnMut(u64, i64) -> Option<Frame> + Send + 'static,
) -> BuiltSource {
    let sensor = match modality {
        Modality::Audio => "microphone",
        Modality::Imu => "imu",
        Modality::Depth => "depth",
        Modality::Thermal => "thermal",
        _ => "camera",
    };
    let table: toml::Table = toml::from_str(&format!("type = \"synthetic\"\nsensor = \"{sensor}\"")).unwrap();
    let config: SourceConfig = sensebind::sources::parse(id, &table).unwrap();
    BuiltSource {
        config,
        source: Box::new(Scripted {
            modality,
            rate_hz,
            clock: ReplayClock::new(),
            i: 0,
            make: Box::new(make),
        }),
        ros2: Default::default(),
    }
}

fn rgb(t_ns: i64, v: u8) -> Frame {
    Frame {
        t_ns,
        data: FrameData::Rgb8 {
            width: 32,
            height: 24,
            data: vec![v; 32 * 24 * 3],
        },
    }
}

fn imu(t_ns: i64, x: f32) -> Frame {
    Frame {
        t_ns,
        data: FrameData::Imu(ImuSample {
            accel: [x, 0.0, 9.81],
            gyro: [0.0, 0.1, 0.0],
        }),
    }
}

/// What the test does to the vision encoder: hold it (wedged) or make it fail.
#[derive(Default)]
struct Fault {
    held: Mutex<bool>,
    released: Condvar,
    failing: AtomicBool,
}

impl Fault {
    fn hold(&self, on: bool) {
        *self.held.lock().unwrap() = on;
        self.released.notify_all();
    }
}

fn hooks(fault: &Arc<Fault>, notifier: Option<Notifier>) -> Hooks {
    let fault = fault.clone();
    Hooks {
        notifier,
        wrap_encoder: Some(Arc::new(move |inner: Arc<dyn Encoder>| -> Arc<dyn Encoder> {
            let fault = fault.clone();
            // Vision batches wait while the fault holds them, then fail while it fails.
            Arc::new(Intercept {
                inner,
                before: move |m: Modality, _: &[ModelInput]| {
                    if m != Modality::Vision {
                        return Ok(());
                    }
                    let mut held = fault.held.lock().unwrap();
                    while *held {
                        held = fault.released.wait(held).unwrap();
                    }
                    drop(held);
                    if fault.failing.load(Ordering::SeqCst) {
                        return Err(EngineError::Run {
                            modality: Modality::Vision,
                            reason: "CUDA error: an illegal memory access was encountered (simulated)".into(),
                        });
                    }
                    Ok(())
                },
            })
        })),
    }
}

struct Running {
    embeddings: tokio::sync::broadcast::Receiver<Arc<sensebind::engine::worker::Embedded>>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), pipeline::PipelineError>>,
    port: u16,
}

fn start(dir: &std::path::Path, extra: &str, sources: Vec<BuiltSource>, hooks: Hooks) -> Running {
    let port = free_port();
    let path = write_config(
        dir,
        "faults",
        port,
        &format!("[engine]\nproviders = [\"cpu\"]\n[sources.unused]\ntype = \"off\"\n{extra}"),
    );
    let cfg = sensebind::config::Config::load(Some(&path)).unwrap();
    let taps = Taps::default();
    let embeddings = taps.embeddings.listen();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline::run_graph_with(
        cfg,
        sources,
        StopFlag::default(),
        taps,
        hooks,
        async {
            let _ = rx.await;
        },
    ));
    Running {
        embeddings,
        stop,
        run,
        port,
    }
}

/// Embeddings per stream `source` for `for_`, as (source, seq) in arrival order.
async fn collect(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<sensebind::engine::worker::Embedded>>,
    for_: Duration,
) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + for_;
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.entry(e.source.to_string()).or_default().push(e.seq);
    }
    out
}

async fn latest_health(port: u16) -> serde_json::Value {
    let z = client(port).await;
    let sub = z.declare_subscriber("sensebind/faults/health").await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(5), sub.recv_async())
        .await
        .expect("health within 5 s")
        .unwrap();
    let v = serde_json::from_slice(&s.payload().to_bytes()).unwrap();
    let _ = z.close().await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_encoder_stops_the_watchdog_and_progress_resumes_it() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let fault = Arc::new(Fault::default());
    let notifier = Notifier {
        socket: notify.path.clone(),
        watchdog: Some(Duration::from_millis(400)),
    };
    let camera = scripted("camera", Modality::Vision, 10.0, |i, t| Some(rgb(t, (i % 250) as u8)));
    let mut r = start(
        dir.path(),
        "[daemon]\nwatchdog_stall_s = 1.5\nshutdown_timeout_s = 1.0\n",
        vec![camera],
        hooks(&fault, Some(notifier)),
    );
    assert!(notify.wait_for("READY=1", Duration::from_secs(60)).is_some());
    let got = collect(&mut r.embeddings, Duration::from_secs(4)).await;
    assert!(got.get("camera").is_some_and(|s| s.len() >= 2), "{got:?}");
    let pings_healthy = notify.times_of("WATCHDOG=1").len();
    assert!(pings_healthy >= 8, "{pings_healthy} pings in ~3 s at 0.2 s");

    // The encoder hangs: windows queue up, none is handled; once none has been for
    // watchdog_stall_s the pings stop (STATUS=wedged, then silence). No wall-clock
    // allowance decides it: the daemon says when it stopped, and after that no ping
    // may come at all. The timing bounds are loose multiples of what is configured
    // (stall 1.5 s, hop 1 s, a ping every 0.2 s).
    let (stall, hop, ping) = (
        Duration::from_millis(1500),
        Duration::from_secs(1),
        Duration::from_millis(200),
    );
    fault.hold(true);
    let held_at = Instant::now();
    let wedged = notify
        .wait_for("STATUS=wedged", Duration::from_secs(15))
        .expect("STATUS=wedged within 15 s of the hang");
    assert!(wedged.contains("stream camera/vision"), "{wedged}");
    let wedged_at = notify
        .messages()
        .into_iter()
        .find(|(_, m)| m.contains("STATUS=wedged"))
        .unwrap()
        .0;
    // Silence for 10 ping intervals after it.
    tokio::time::sleep(10 * ping).await;
    let after: Vec<Instant> = notify
        .times_of("WATCHDOG=1")
        .into_iter()
        .filter(|t| *t > wedged_at)
        .collect();
    assert!(
        after.is_empty(),
        "{} pings after STATUS=wedged while the encoder still hangs",
        after.len()
    );
    let last = *notify
        .times_of("WATCHDOG=1")
        .iter()
        .rfind(|t| **t <= wedged_at)
        .unwrap();
    let took = wedged_at.saturating_duration_since(held_at);
    // Not before the stall time (the last window handled may predate the hang by up
    // to a hop), and not long after it: a hop for the next window to wait, 3 ticks.
    assert!(
        took + hop >= stall,
        "pings stopped {took:?} after the hang, before watchdog_stall_s"
    );
    assert!(
        took <= stall + hop + 3 * ping + Duration::from_secs(1),
        "pings stopped only {took:?} after the hang (watchdog_stall_s {stall:?})"
    );
    assert!(
        wedged_at.saturating_duration_since(last) <= 5 * ping,
        "pings went quiet {:?} before the wedge was declared",
        wedged_at.saturating_duration_since(last)
    );
    let health = latest_health(r.port).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("wedged")),
        "{health}"
    );

    // It comes back: pings resume (3 of them, waited for up to 10 s).
    fault.hold(false);
    let back = Instant::now();
    let resumed = |n: &NotifySocket| n.times_of("WATCHDOG=1").iter().filter(|t| **t > back).count();
    while resumed(&notify) < 3 && back.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(ping).await;
    }
    assert!(resumed(&notify) >= 3, "pings resume once windows are handled again");
    r.stop.send(()).unwrap();
    assert!(r.run.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_error_at_run_time_loses_only_its_windows() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let fault = Arc::new(Fault::default());
    let camera = scripted("camera", Modality::Vision, 10.0, |i, t| Some(rgb(t, (i % 250) as u8)));
    let motion = scripted("motion", Modality::Imu, 100.0, |i, t| {
        Some(imu(t, (i as f32 * 0.1).sin()))
    });
    let mut r = start(dir.path(), "", vec![camera, motion], hooks(&fault, None));
    // Wait for the graph, then fail the vision encoder for 3 s.
    assert!(tokio::time::timeout(Duration::from_secs(60), r.embeddings.recv())
        .await
        .is_ok());
    let _ = collect(&mut r.embeddings, Duration::from_secs(1)).await;
    fault.failing.store(true, Ordering::SeqCst);
    let during = collect(&mut r.embeddings, Duration::from_secs(3)).await;
    fault.failing.store(false, Ordering::SeqCst);
    let after = collect(&mut r.embeddings, Duration::from_secs(3)).await;
    let health = latest_health(r.port).await;
    r.stop.send(()).unwrap();
    let result = r.run.await.unwrap();
    assert!(result.is_ok(), "an encoder error must not stop the daemon: {result:?}");

    assert!(
        during.get("camera").is_none_or(|s| s.len() <= 1),
        "vision windows while its encoder fails: {during:?}"
    );
    assert!(
        during.get("motion").is_some_and(|s| s.len() >= 2),
        "IMU goes on: {during:?}"
    );
    assert!(
        after.get("camera").is_some_and(|s| s.len() >= 2),
        "vision recovers: {after:?}"
    );
    let cam = &health["sources"]["camera"]["streams"]["vision"];
    assert!(cam["windows_dropped"]["error"].as_u64().unwrap() >= 2, "{cam}");
    let imu = &health["sources"]["motion"]["streams"]["imu"];
    assert_eq!(imu["windows_dropped"]["error"], 0, "{imu}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_sensors_is_counted_and_skipped_while_every_stream_goes_on() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let fault = Arc::new(Fault::default());
    const S: i64 = 1_000_000_000;
    // A real JPEG, cut short.
    let jpeg = {
        let img = image::RgbImage::from_pixel(32, 24, image::Rgb([200, 30, 30]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    };
    // Camera at 10 fps for 8 s: every 10th frame is garbage of one kind.
    let camera = scripted("camera", Modality::Vision, 10.0, move |i, t| {
        if i >= 80 {
            return None;
        }
        Some(match i % 10 {
            // Truncated: a third of the file (decoders may fill the rest), or the
            // header alone (nothing to decode).
            3 => Frame {
                t_ns: t,
                data: FrameData::Jpeg {
                    width: 32,
                    height: 24,
                    data: jpeg[..if i % 20 == 3 { jpeg.len() / 3 } else { 30 }].to_vec(),
                },
            },
            5 => Frame {
                t_ns: t,
                data: FrameData::Rgb8 {
                    width: 32,
                    height: 24,
                    data: vec![7; 100],
                },
            },
            7 => rgb(t + 3 * 3600 * S, 0), // hours ahead
            8 => rgb(t - 5 * S, 0),        // backwards
            _ => rgb(t, (i % 250) as u8),
        })
    });
    // IMU at 100 Hz with NaN/inf readings in bursts and a backwards timestamp.
    let motion = scripted("motion", Modality::Imu, 100.0, |i, t| {
        if i >= 800 {
            return None;
        }
        Some(match i % 100 {
            10..=12 => imu(t, f32::NAN),
            40 => imu(t, f32::INFINITY),
            60 => imu(t - 10 * S, 0.0),
            _ => imu(t, (i as f32 * 0.05).sin()),
        })
    });
    // Microphone: 100 ms chunks alternating silence, full-scale clipping and speech-ish
    // noise; one chunk with NaN samples, one with an impossible rate.
    let mic = scripted("mic", Modality::Audio, 10.0, |i, t| {
        if i >= 80 {
            return None;
        }
        let n = 1600;
        let samples: Vec<f32> = match i % 8 {
            0 | 1 => vec![0.0; n],
            2 | 3 => (0..n).map(|j| if (j / 20) % 2 == 0 { 1.0 } else { -1.0 }).collect(),
            4 if i == 12 => vec![f32::NAN; n],
            _ => (0..n)
                .map(|j| ((j * 7919 + i as usize * 31) % 2000) as f32 / 1000.0 - 1.0)
                .collect(),
        };
        let sample_rate = if i == 20 { 7 } else { 16000 };
        Some(Frame {
            t_ns: t,
            data: FrameData::Audio {
                sample_rate,
                channels: 1,
                samples,
            },
        })
    });
    let mut r = start(dir.path(), "", vec![camera, motion, mic], hooks(&fault, None));
    let got = collect(&mut r.embeddings, Duration::from_secs(14)).await;
    let health = latest_health(r.port).await;
    r.stop.send(()).unwrap();
    let result = r.run.await.unwrap();
    assert!(result.is_ok(), "garbage must not stop the daemon: {result:?}");

    // Every window of every stream (2 s every 1 s over 8 s: seq 0..=6): the bad
    // frames are dropped alone, never the windows around them.
    for (id, m) in [("camera", "vision"), ("motion", "imu"), ("mic", "audio")] {
        let seqs = got.get(id).cloned().unwrap_or_default();
        let st = &health["sources"][id]["streams"][m];
        assert!((0..=6).all(|k| seqs.contains(&k)), "{id}: {seqs:?}\n{st}");
        assert_eq!(st["windows_dropped"]["error"], 0, "{id}: {st}");
        assert_eq!(st["time_jumps"], 0, "single wild stamps never move the grid: {st}");
    }
    let count = |id: &str, m: &str, k: &str| health["sources"][id]["streams"][m][k].as_u64().unwrap();
    // Camera: 4 header-only JPEGs, 8 wrong-size frames, 8 far-future stamps rejected;
    // 8 backwards frames late.
    assert!(count("camera", "vision", "frames_rejected") >= 20, "{health}");
    assert!(count("camera", "vision", "frames_rejected") <= 24, "{health}");
    assert!(count("camera", "vision", "late_frames") >= 7, "{health}");
    // IMU: 4 NaN/inf readings a second rejected (32), 8 backwards readings late.
    assert_eq!(count("motion", "imu", "frames_rejected"), 32, "{health}");
    assert!(count("motion", "imu", "late_frames") >= 7, "{health}");
    // Microphone: the NaN chunk and the 7 Hz chunk.
    assert_eq!(count("mic", "audio", "frames_rejected"), 2, "{health}");
}
