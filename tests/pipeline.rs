//! The supervised graph with simulated sources plugged in (`pipeline::run_graph`):
//! a driver that blocks forever in a read cannot hold the exit, and a driver that
//! panics is restarted while the rest of the pipeline goes on. And the IMU
//! calibration as the window stage applies it, checked at the encoder's input.

use crate::common;

use common::*;
use sensebind::clock::{Clock, ReplayClock};
use sensebind::engine::Encoder;
use sensebind::pipeline::{self, BuiltSource, Taps};
use sensebind::preprocess::ModelInput;
use sensebind::sources::{Frame, FrameData, Source, SourceConfig, SourceError, SourceInfo, StopFlag, StreamInfo};
use sensebind::Modality;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A 30 fps camera on a replay clock: `frames` frames, then it either ends, blocks
/// forever (ignoring every stop request), or panics once at frame `panic_at`.
struct Sim {
    clock: Arc<ReplayClock>,
    i: u64,
    frames: u64,
    block_after: bool,
    panic_at: Option<u64>,
    /// The device "goes away" once at this frame: a read error, then a failed reopen.
    fail_at: Option<u64>,
    reopen_fails: u32,
}

impl Source for Sim {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: "simulated camera".into(),
            streams: vec![StreamInfo {
                modality: Modality::Vision,
                nominal_rate_hz: 30.0,
            }],
        }
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
    fn open(&mut self) -> Result<(), SourceError> {
        if self.reopen_fails > 0 {
            self.reopen_fails -= 1;
            return Err(SourceError::Open {
                what: "simulated camera".into(),
                reason: "No such device".into(),
            });
        }
        Ok(())
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.fail_at == Some(self.i) {
            self.fail_at = None;
            self.reopen_fails = 1;
            return Err(SourceError::Read {
                what: "simulated camera".into(),
                reason: "device unplugged".into(),
            });
        }
        if self.panic_at == Some(self.i) {
            self.panic_at = None;
            panic!("simulated driver bug");
        }
        if self.i >= self.frames {
            if self.block_after {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            return Ok(None);
        }
        let t_ns = (self.i as i64) * 1_000_000_000 / 30;
        self.i += 1;
        self.clock.advance(t_ns);
        // Throttle a little so the graph is running when it is stopped.
        std::thread::sleep(Duration::from_millis(2));
        Ok(Some(Frame {
            t_ns,
            data: FrameData::Rgb8 {
                width: 32,
                height: 24,
                data: vec![(self.i % 255) as u8; 32 * 24 * 3],
            },
        }))
    }
}

impl Sim {
    /// A camera with `frames` frames that then ends, with no faults.
    fn camera(frames: u64) -> Sim {
        Sim {
            clock: ReplayClock::new(),
            i: 0,
            frames,
            block_after: false,
            panic_at: None,
            fail_at: None,
            reopen_fails: 0,
        }
    }

    /// Any simulated driver, boxed for `built`.
    fn wrap(s: impl Source + 'static) -> Box<dyn Source> {
        Box::new(s)
    }
}

fn built(id: &str, source: impl Into<Box<dyn Source>>) -> BuiltSource {
    let table: toml::Table =
        toml::from_str("type = \"synthetic\"\nsensor = \"camera\"\nwhen_full = \"block\"").unwrap();
    let config: SourceConfig = sensebind::sources::parse(id, &table).unwrap();
    BuiltSource {
        config,
        source: source.into(),
        ros2: Default::default(),
    }
}

fn config(dir: &std::path::Path, extra: &str) -> sensebind::config::Config {
    config_with_deadline(dir, extra, 1.0)
}

/// [`config`] with `daemon.shutdown_timeout_s` = `deadline_s`.
fn config_with_deadline(dir: &std::path::Path, extra: &str, deadline_s: f64) -> sensebind::config::Config {
    let path = write_config(
        dir,
        "sim",
        free_port(),
        &format!("[daemon]\nshutdown_timeout_s = {deadline_s:?}\n[engine]\nproviders = [\"cpu\"]\n[sources.unused]\ntype = \"off\"\n{extra}"),
    );
    sensebind::config::Config::load(Some(&path)).unwrap()
}

/// The graph running on `sources`, with its embedding tap; send on the returned
/// channel to stop it.
struct Running {
    embeddings: tokio::sync::broadcast::Receiver<Arc<sensebind::engine::worker::Embedded>>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), pipeline::PipelineError>>,
}

fn start_graph(dir: &std::path::Path, sources: Vec<BuiltSource>) -> Running {
    start_graph_with(dir, sources, "")
}

/// [`start_graph`] with more config (TOML appended to the test's file).
fn start_graph_with(dir: &std::path::Path, sources: Vec<BuiltSource>, extra: &str) -> Running {
    start_graph_cfg(config(dir, extra), sources)
}

fn start_graph_cfg(cfg: sensebind::config::Config, sources: Vec<BuiltSource>) -> Running {
    let taps = Taps::default();
    let embeddings = taps.embeddings.listen();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline::run_graph(cfg, sources, StopFlag::default(), taps, async {
        let _ = rx.await;
    }));
    Running { embeddings, stop, run }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_blocked_in_a_read_cannot_hold_the_exit() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim {
        block_after: true,
        ..Sim::camera(150)
    };
    // The shutdown deadline: the daemon waits for its sources up to it, then leaves
    // a blocked driver behind. Shutdown takes at least that (it waited for the driver)
    // and less than 3 times that (encoders, outputs, history and the bus close are
    // not held by the driver); waiting for the driver would be forever.
    let deadline = Duration::from_secs(2);
    let Running {
        mut embeddings,
        stop: tx,
        run,
    } = start_graph_cfg(
        config_with_deadline(dir.path(), "", deadline.as_secs_f64()),
        vec![built("stuck", Sim::wrap(sim))],
    );
    // Windows flow while the driver works; then it blocks for good.
    let first = tokio::time::timeout(Duration::from_secs(30), embeddings.recv()).await;
    assert!(matches!(first, Ok(Ok(_))), "no embedding before the driver blocked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    tx.send(()).unwrap();
    let result = tokio::time::timeout(3 * deadline, run).await;
    let took = t0.elapsed();
    let result = result
        .unwrap_or_else(|_| {
            panic!("shutdown still waiting after 3 × its {deadline:?} deadline: held by the blocked driver")
        })
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        took >= deadline,
        "shutdown took {took:?}: it gave the driver less than its {deadline:?} deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_panics_is_restarted_and_windows_go_on() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // Panics at frame 70 (t ≈ 2.3 s); frames continue up to 8 s.
    let sim = Sim {
        panic_at: Some(70),
        ..Sim::camera(240)
    };
    let Running {
        mut embeddings,
        stop: tx,
        run,
    } = start_graph(dir.path(), vec![built("flaky", Sim::wrap(sim))]);
    let mut seqs = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(5), embeddings.recv()).await {
        assert_eq!(&*e.source, "flaky");
        seqs.push(e.seq);
    }
    tx.send(()).unwrap();
    let result = run.await.unwrap();
    assert!(result.is_ok(), "a driver panic must not fail the daemon: {result:?}");
    // Hop 1 s, 2 s windows over 8 s of frames: windows after the panic exist.
    assert!(seqs.iter().any(|s| *s >= 4), "windows after the panic: {seqs:?}");
    assert!(seqs.contains(&0), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_fails_and_recovers_while_another_keeps_publishing() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // `flaky` loses its device at frame 60 (t = 2 s) and cannot reopen at once; `steady`
    // runs alongside. Both have 8 s of frames.
    let sim = |fail_at| Sim {
        fail_at,
        ..Sim::camera(240)
    };
    let Running {
        mut embeddings,
        stop: tx,
        run,
    } = start_graph(
        dir.path(),
        vec![
            built("flaky", Sim::wrap(sim(Some(60)))),
            built("steady", Sim::wrap(sim(None))),
        ],
    );
    let mut seqs: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(6), embeddings.recv()).await {
        seqs.entry(e.source.to_string()).or_default().push(e.seq);
    }
    tx.send(()).unwrap();
    let result = run.await.unwrap();
    assert!(result.is_ok(), "a failing driver must not fail the daemon: {result:?}");
    let steady = &seqs["steady"];
    let flaky = &seqs["flaky"];
    // Every window of the steady source (hop 1 s, 2 s windows over 8 s: seq 0..=6).
    assert!((0..=6).all(|s| steady.contains(&s)), "steady: {steady:?}");
    // The flaky source published before the failure and again after it reopened.
    assert!(flaky.contains(&0), "flaky before the failure: {flaky:?}");
    assert!(flaky.iter().any(|s| *s >= 4), "flaky after recovering: {flaky:?}");
}

/// One driver, two streams (a RealSense-like camera + IMU), one clock.
struct TwoStreams {
    clock: Arc<ReplayClock>,
    i: u64,
}

impl Source for TwoStreams {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: "simulated camera + IMU".into(),
            streams: vec![
                StreamInfo {
                    modality: Modality::Vision,
                    nominal_rate_hz: 200.0 / 7.0,
                },
                StreamInfo {
                    modality: Modality::Imu,
                    nominal_rate_hz: 200.0,
                },
            ],
        }
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        // 5 s at 200 Hz; every 7th tick (≈ 28.6 fps) is a camera frame.
        if self.i >= 1000 {
            return Ok(None);
        }
        let t_ns = self.i as i64 * 5_000_000;
        let camera = self.i % 7 == 0;
        self.i += 1;
        self.clock.advance(t_ns);
        let data = if camera {
            FrameData::Rgb8 {
                width: 32,
                height: 24,
                data: vec![(self.i % 251) as u8; 32 * 24 * 3],
            }
        } else {
            FrameData::Imu(sensebind::sources::ImuSample {
                accel: [0.0, 0.0, 9.81],
                gyro: [0.01 * self.i as f32, 0.0, 0.0],
            })
        };
        Ok(Some(Frame { t_ns, data }))
    }
}

/// The graph on one [`TwoStreams`] source `rs0` (with `extra` config), run until it
/// has published nothing for 4 s: every embedding it published.
async fn two_streams_embeddings(extra: &str) -> Vec<Arc<sensebind::engine::worker::Embedded>> {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let src = TwoStreams {
        clock: ReplayClock::new(),
        i: 0,
    };
    let Running {
        mut embeddings,
        stop: tx,
        run,
    } = start_graph_with(dir.path(), vec![built("rs0", Sim::wrap(src))], extra);
    let mut out = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(4), embeddings.recv()).await {
        out.push(e);
    }
    tx.send(()).unwrap();
    run.await.unwrap().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_with_two_streams_gives_both_on_one_grid() {
    let mut spans: std::collections::BTreeMap<(Modality, i64), (i64, i64)> = Default::default();
    for e in two_streams_embeddings("").await {
        assert_eq!(&*e.source, "rs0");
        spans.insert((e.modality, e.seq), (e.t_start_ns, e.t_end_ns));
    }
    for seq in 0..3 {
        let v = spans.get(&(Modality::Vision, seq)).copied();
        let i = spans.get(&(Modality::Imu, seq)).copied();
        assert!(
            v.is_some() && v == i,
            "seq {seq}: vision {v:?} vs imu {i:?} ({spans:?})"
        );
    }
}

/// A frame-rate budget configured for one modality reaches its worker: IMU windows
/// (2 s every 1 s, budget 0.5 windows/s: every other seq) keep the grid, vision (no
/// budget) keeps every window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_rate_budget_keeps_every_nth_window_on_the_grid() {
    let mut seqs: std::collections::BTreeMap<Modality, Vec<i64>> = Default::default();
    for e in two_streams_embeddings("[engine.modalities.imu]\nmax_rate_hz = 0.5\n").await {
        seqs.entry(e.modality).or_default().push(e.seq);
    }
    let imu = seqs.remove(&Modality::Imu).unwrap_or_default();
    let vision = seqs.remove(&Modality::Vision).unwrap_or_default();
    assert!(imu.contains(&0) && imu.contains(&2), "IMU {imu:?}");
    assert!(imu.iter().all(|s| s % 2 == 0), "IMU off the budget's grid: {imu:?}");
    assert!((0..3).all(|s| vision.contains(&s)), "vision has no budget: {vision:?}");
}

/// The IMU calibration as the daemon applies it: a file IMU CSV source and a
/// calibration file with biases and a body-frame rotation, run through the graph;
/// what reaches the IMU encoder is compared with values worked out by hand.
///
/// Readings (200 Hz, t = 0..4 s): accel = (t, 2.0, 9.5) m/s², gyro = (0.1, −0.2, 0.3)
/// rad/s. Calibration: accel bias (0.25, −0.5, 0.125), gyro bias (0.01, 0.02, −0.03),
/// IMU → body a 120° turn about (1,1,1) (quaternion [½, ½, ½, ½]), which takes the
/// IMU's x axis to the body's y, y to z and z to x: R·(x, y, z) = (z, x, y).
/// (`imu_to_camera` is a different rotation, 90° about z: the body frame is what
/// counts.) `[preprocess.imu]` scales accel by 0.5 and gyro by 2 after that.
///
/// So every sample the encoder sees, at time t (held at the window's first reading
/// before it and at its last after it):
/// - accel − bias = (t − 0.25, 2.5, 9.375) → body (9.375, t − 0.25, 2.5) → × 0.5 =
///   (4.6875, (t − 0.25)/2, 1.25)
/// - gyro − bias = (0.09, −0.22, 0.33) → body (0.33, 0.09, −0.22) → × 2 =
///   (0.66, 0.18, −0.44)
///
/// laid out as 6 rows (ax, ay, az, gx, gy, gz) of 2000 samples across each window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imu_samples_reach_the_encoder_bias_corrected_and_rotated_into_the_body_frame() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let example = sensebind::calibration::EXAMPLE_TOML;
    let mut calib = example
        .replace("accel_bias = [0.0, 0.0, 0.0]", "accel_bias = [0.25, -0.5, 0.125]")
        .replace("gyro_bias = [0.0, 0.0, 0.0]", "gyro_bias = [0.01, 0.02, -0.03]")
        .replace(
            "[extrinsics.imu_to_camera]\nrotation = [1.0, 0.0, 0.0, 0.0]",
            "[extrinsics.imu_to_camera]\nrotation = [0.7071067811865476, 0.0, 0.0, 0.7071067811865476]",
        );
    assert_eq!(
        calib.matches("0.7071067811865476").count(),
        2,
        "the example calibration changed"
    );
    assert!(calib.contains("[0.25, -0.5, 0.125]") && calib.contains("[0.01, 0.02, -0.03]"));
    calib.push_str("\n[extrinsics.imu_to_body]\nrotation = [0.5, 0.5, 0.5, 0.5]\ntranslation = [0.0, 0.0, 0.0]\n");
    let calib_path = dir.path().join("calibration.toml");
    std::fs::write(&calib_path, calib).unwrap();
    let mut csv = String::from("t_s,ax,ay,az,gx,gy,gz\n");
    for k in 0..=800 {
        let t = k as f64 * 0.005;
        csv.push_str(&format!("{t},{t},2.0,9.5,0.1,-0.2,0.3\n"));
    }
    let csv_path = dir.path().join("imu.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[calibration]\nfile = \"{}\"\n[preprocess.imu]\naccel_scale = 0.5\ngyro_scale = 2.0\n\
             [sources.imu]\ntype = \"file\"\nsensor = \"imu\"\npath = \"{}\"\npace = \"fast\"\nstart_ns = 0\n\
             when_full = \"block\"\n",
            calib_path.display(),
            csv_path.display()
        ),
    );
    assert_eq!(
        (cfg.window.length_s, cfg.window.hop_s, cfg.preprocess.imu.samples),
        (2.0, 1.0, 2000)
    );

    let inputs: Arc<Mutex<Vec<Vec<f32>>>> = Default::default();
    let kept = inputs.clone();
    let hooks = pipeline::Hooks {
        notifier: None,
        wrap_encoder: Some(Arc::new(move |e: Arc<dyn Encoder>| -> Arc<dyn Encoder> {
            if e.modality() == Modality::Imu {
                let kept = kept.clone();
                // Keeps a copy of every input, then encodes it.
                Arc::new(Intercept {
                    inner: e,
                    before: move |_, batch: &[ModelInput]| {
                        let mut kept = kept.lock().unwrap();
                        for input in batch {
                            match input {
                                ModelInput::F32(v) => kept.push(v.clone()),
                                other => panic!("an IMU input of i64: {} values", other.len()),
                            }
                        }
                        Ok(())
                    },
                })
            } else {
                e
            }
        })),
    };
    let stop = StopFlag::default();
    let sources = pipeline::build_sources(&cfg, &stop).unwrap();
    let taps = Taps::default();
    let mut embeddings = taps.embeddings.listen();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline::run_graph_with(cfg, sources, stop, taps, hooks, async {
        let _ = rx.await;
    }));
    let mut windows = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(4), embeddings.recv()).await {
        if e.modality == Modality::Imu {
            windows.push(e);
        }
    }
    tx.send(()).unwrap();
    run.await.unwrap().unwrap();

    // What each window's encoder input must be, from the hand-worked values above.
    let expected = |t_start: i64, t_end: i64| -> Vec<f32> {
        let n = 2000;
        // A window holds the readings in [t_start, t_end): every 5 ms from 0 to 4 s.
        let first = (t_start.max(0) + 4_999_999) / 5_000_000 * 5_000_000;
        let last = ((t_end - 1) / 5_000_000 * 5_000_000).min(4_000_000_000);
        let mut out = vec![0.0f32; 6 * n];
        for i in 0..n {
            let t_ns = t_start as f64 + i as f64 * (t_end - t_start) as f64 / n as f64;
            let t = t_ns.clamp(first as f64, last as f64) / 1e9;
            let row = [4.6875, (t - 0.25) / 2.0, 1.25, 0.66, 0.18, -0.44];
            for (r, v) in row.iter().enumerate() {
                out[r * n + i] = *v as f32;
            }
        }
        out
    };
    let inputs = inputs.lock().unwrap().clone();
    let seqs: Vec<i64> = windows.iter().map(|w| w.seq).collect();
    assert!((0..=2).all(|s| seqs.contains(&s)), "IMU windows {seqs:?}");
    assert_eq!(
        inputs.len(),
        windows.len(),
        "one encoder input per published IMU window"
    );
    // Each window's input is found among what the encoder was given, within f32
    // rounding (the ramp is resampled by linear interpolation, which keeps it exact).
    let mut worst = 0.0f32;
    for w in &windows {
        let want = expected(w.t_start_ns, w.t_end_ns);
        let off = |got: &Vec<f32>| got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let best = inputs.iter().map(off).fold(f32::INFINITY, f32::min);
        assert!(
            best < 1e-5,
            "window {} ({}..{} ns): no encoder input matches the hand-worked values (closest is {best} off); \
             the first one starts {:?}",
            w.seq,
            w.t_start_ns,
            w.t_end_ns,
            inputs
                .first()
                .map(|v| [v[0], v[2000], v[4000], v[6000], v[8000], v[10000]])
        );
        worst = worst.max(best);
    }
    eprintln!(
        "IMU calibration: {} windows (seq {seqs:?}) reach the encoder within {worst:e} of the hand-worked values",
        windows.len()
    );
}
