//! Clocks: a fast-paced replay and a real-time replay of the same recording give the
//! same windows (seq, span) and the same embeddings, because windowing and idle
//! flushing use the replay clock, never wall time against sensor time. And a driver
//! whose timestamps never advance cannot make the daemon allocate without bound. A
//! looped MCAP replay keeps its times increasing.

use crate::common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// 5 s of camera frames (64×48 PNG @ 30 fps) and a 5 s WAV, both changing over time.
fn record(dir: &Path) {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..150u32 {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([
                ((x * 4 + i) % 256) as u8,
                ((y * 5 + 2 * i) % 256) as u8,
                ((i * 7) % 256) as u8,
            ])
        });
        img.save(frames.join(format!("f{i:04}.png"))).unwrap();
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.join("mic.wav"), spec).unwrap();
    for i in 0..80_000 {
        let t = i as f32 / 16000.0;
        w.write_sample(((2.0 * std::f32::consts::PI * (200.0 + 150.0 * t) * t).sin() * 9000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

type Seen = BTreeMap<(String, i64), (i64, i64, Vec<f32>)>;

/// Run the pipeline in-process on the recording at `pace`, listening on the embedding
/// tap, until no embedding has come for 3 s; return every embedding by (stream, seq).
async fn replay(dir: &Path, pace: &str) -> Seen {
    let run = dir.join(pace);
    std::fs::create_dir_all(&run).unwrap();
    let sources = format!(
        r#"
[sources.cam]
type = "file"
sensor = "camera"
path = "{frames}"
fps = 30.0
pace = "{pace}"
start_ns = 0
[sources.mic]
type = "file"
sensor = "microphone"
path = "{wav}"
pace = "{pace}"
start_ns = 0
[engine]
when_full = "block"
providers = ["cpu"]
"#,
        frames = dir.join("frames").display(),
        wav = dir.join("mic.wav").display(),
    );
    let path = write_config(&run, "replay", free_port(), &sources);
    let cfg = sensebind::config::Config::load(Some(&path)).unwrap();
    let taps = sensebind::pipeline::Taps::default();
    let mut rx = taps.embeddings.listen();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(sensebind::pipeline::run_with_taps(cfg, taps, async {
        let _ = stop_rx.await;
    }));
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Ok(e)) => {
                let key = format!("{}/{}", e.modality, e.source);
                seen.insert((key, e.seq), (e.t_start_ns, e.t_end_ns, e.vector.clone()));
            }
            Ok(Err(e)) => {
                // The graph ended: say why.
                let ended = tokio::time::timeout(Duration::from_secs(10), daemon).await;
                panic!("embedding tap: {e}; the graph ended with {ended:?}")
            }
            Err(_) if !seen.is_empty() => break,
            Err(_) => {}
        }
    }
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_realtime_replays_give_the_same_windows_and_embeddings() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    record(dir.path());
    let fast = replay(dir.path(), "fast").await;
    let real = replay(dir.path(), "realtime").await;
    assert!(fast.len() >= 8, "{:?}", fast.keys().collect::<Vec<_>>());
    assert_eq!(
        fast.keys().collect::<Vec<_>>(),
        real.keys().collect::<Vec<_>>(),
        "same windows (stream, seq)"
    );
    for (k, (s0, e0, v0)) in &fast {
        let (s1, e1, v1) = &real[k];
        assert_eq!((s0, e0), (s1, e1), "{k:?}: same span");
        let d = v0.iter().zip(v1).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-5, "{k:?}: embeddings differ by {d}");
    }
    // The recording starts at 0: window seq k covers [k, k + 2) s (hop 1 s).
    let (s0, e0, _) = &fast[&("vision/cam".to_string(), 0)];
    assert_eq!((*s0, *e0), (0, 2_000_000_000));
    assert!(fast.keys().any(|(key, _)| key == "audio/mic"));
}

/// A daemon with a file IMU of `csv` (fast pace) and a synthetic microphone, one window
/// per encoder call (so both daemons below run the same encoder shapes).
fn imu_daemon(dir: &Path, robot: &str, csv: &Path) -> (Daemon, u16, std::path::PathBuf) {
    let port = free_port();
    let sources = format!(
        "[engine]\nmax_batch = 1\n\
         [sources.imu]\ntype = \"file\"\nsensor = \"imu\"\npath = \"{}\"\npace = \"fast\"\n\
         [sources.mic]\ntype = \"synthetic\"\nsensor = \"microphone\"\n",
        csv.display()
    );
    let dir = dir.join(robot);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write_config(&dir, robot, port, &sources);
    let log = dir.join("daemon.log");
    (Daemon::start(&cfg, &log), port, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_imu_timestamps_are_rejected_not_buffered() {
    use sensebind::bus::msg::{HealthMsg, JsonMsg};
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // A million readings that all claim the same time; beside it, the same daemon
    // with a file of one reading: its memory is the baseline, measured over the same
    // time on the same machine.
    const N: usize = 1_000_000;
    let csv = dir.path().join("stuck.csv");
    let mut text = String::from("t_s,ax,ay,az,gx,gy,gz\n");
    for _ in 0..N {
        text.push_str("1.0,0.1,0.2,9.8,0.01,0.02,0.03\n");
    }
    std::fs::write(&csv, text).unwrap();
    let one = dir.path().join("one.csv");
    std::fs::write(&one, "t_s,ax,ay,az,gx,gy,gz\n1.0,0.1,0.2,9.8,0.01,0.02,0.03\n").unwrap();
    let (mut d, port, log) = imu_daemon(dir.path(), "stuck", &csv);
    let (mut base, _, base_log) = imu_daemon(dir.path(), "base", &one);
    let z = client(port).await;
    let sub = z.declare_subscriber("sensebind/stuck/health").await.unwrap();
    let (mut peak, mut peak_base, mut verdict, mut mic_out) = (0.0f64, 0.0f64, None, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        peak = peak.max(rss_mib(d.child.id()));
        peak_base = peak_base.max(rss_mib(base.child.id()));
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), sub.recv_async()).await else {
            assert!(d.running(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
            assert!(
                base.running(),
                "{}",
                std::fs::read_to_string(&base_log).unwrap_or_default()
            );
            continue;
        };
        let h = HealthMsg::from_json(&s.payload().to_bytes()).unwrap();
        mic_out = h.sources["mic"].streams["audio"].windows_out;
        if h.sources["imu"].state == sensebind::bus::msg::SourceState::Ended && mic_out >= 2 {
            verdict = Some(h);
            break;
        }
    }
    let h = verdict.unwrap_or_else(|| {
        panic!(
            "mic windows {mic_out}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let imu = &h.sources["imu"].streams["imu"];
    // Had the windower kept the readings, it would hold N frames (each an Arc'd
    // `Frame`: the struct, Arc's two counts and the allocator's header).
    let frame = (std::mem::size_of::<sensebind::sources::Frame>() + 16 + 16) as f64;
    let buffered = N as f64 * frame / (1 << 20) as f64;
    eprintln!(
        "stuck IMU: peak RSS {peak:.0} MiB, the one-reading daemon's {peak_base:.0} MiB (buffering the readings would take {buffered:.0} MiB more); {} frames rejected",
        imu.frames_rejected
    );
    assert!(imu.frames_rejected >= (N - 20_000) as u64, "{imu:?}");
    assert!(
        peak < peak_base + buffered / 2.0,
        "resident memory peaked at {peak:.0} MiB, {:.0} MiB over the same daemon without the stuck readings ({peak_base:.0} MiB): half of what buffering them takes ({buffered:.0} MiB)",
        peak - peak_base
    );
    d.stop();
    base.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_produces_nothing_is_degraded_not_ok() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // A 1 Hz WAV: every chunk is refused by the windower, so no window ever comes.
    let wav = dir.path().join("one_hz.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 1,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for i in 0..600 {
        w.write_sample((i % 100) as i16 * 100).unwrap();
    }
    w.finalize().unwrap();
    let port = free_port();
    let sources = format!(
        "[sources.mic]\ntype = \"file\"\nsensor = \"microphone\"\npath = \"{}\"\nchunk_ms = 1000\n\
         [sources.cam]\ntype = \"synthetic\"\nsensor = \"camera\"\nwidth = 64\nheight = 48\n",
        wav.display()
    );
    let cfg = write_config(dir.path(), "quiet", port, &sources);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("interval_s = 1.0", "interval_s = 1.0\nstall_s = 3.0"),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut d = Daemon::start(&cfg, &log);
    let z = client(port).await;
    let sub = z.declare_subscriber("sensebind/quiet/health").await.unwrap();
    let mut verdict = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), sub.recv_async()).await else {
            assert!(d.running(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
            continue;
        };
        let h: serde_json::Value = serde_json::from_slice(&s.payload().to_bytes()).unwrap();
        let cam_out = h["sources"]["cam"]["streams"]["vision"]["windows_out"]
            .as_u64()
            .unwrap();
        if h["uptime_s"].as_f64().unwrap() > 5.0 && cam_out > 0 {
            verdict = Some(h);
            break;
        }
    }
    let h = verdict.expect("no health after 5 s");
    assert_eq!(h["sources"]["mic"]["state"], "running", "{h}");
    let mic = &h["sources"]["mic"]["streams"]["audio"];
    assert_eq!(mic["state"], "stalled", "{h}");
    assert!(mic["frames_rejected"].as_u64().unwrap() >= 3, "{mic}");
    assert_eq!(mic["windows_out"], 0);
    assert_eq!(h["sources"]["cam"]["streams"]["vision"]["state"], "ok");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["problems"][0].as_str().unwrap().contains("mic/audio"), "{h}");
    d.stop();
}

/// `type = "mcap"` with `loop = true`: the recording plays again and again, its times
/// shifted by the recording's span (rounded up to whole seconds), so sensor time keeps
/// increasing and the window grid is kept; a recording's bad message is skipped.
#[test]
fn an_mcap_replay_loops_with_increasing_times() {
    use sensebind::record::codec;
    use sensebind::sources::{Frame, FrameData, ImageLimits, ImuSample, SourceContext, SourceError, StopFlag};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imu.mcap");
    let mut rec = sensebind::record::Recorder::create(&path).unwrap();
    let t0 = 1_000_000_000_000i64;
    for i in 0..20i64 {
        let f = Frame {
            t_ns: t0 + i * 100_000_000,
            data: FrameData::Imu(ImuSample {
                accel: [i as f32, 0.0, 9.81],
                gyro: [0.0; 3],
            }),
        };
        rec.write(&codec::encode_frame("imu0", &f)).unwrap();
    }
    // A message the replay cannot play (not an IMU sample) on the same channel.
    rec.write(&codec::Encoded {
        topic: "frames/imu/imu0".into(),
        schema: codec::IMU,
        log_time_ns: (t0 + 2_000_000_000) as u64,
        data: b"{\"t_ns\": 1}".to_vec(),
    })
    .unwrap();
    rec.finish().unwrap();

    let table: toml::Table = toml::from_str(&format!(
        "type = \"mcap\"\npath = \"{}\"\npace = \"fast\"\nloop = true",
        path.display()
    ))
    .unwrap();
    let cfg = sensebind::sources::parse("imu0", &table).unwrap();
    let ctx = SourceContext {
        id: "imu0".into(),
        epoch_ns: 0,
        image_limits: ImageLimits::default(),
        stop: StopFlag::default(),
        ros2: Default::default(),
    };
    let mut src = cfg.driver.unwrap().build(&ctx).unwrap();
    assert_eq!(src.info().streams.len(), 1);
    src.open().unwrap();
    let (mut times, mut bad) = (Vec::new(), 0);
    while times.len() < 50 {
        match src.next_frame() {
            Ok(Some(f)) => times.push(f.t_ns),
            Ok(None) => panic!("a looped replay does not end"),
            Err(SourceError::BadData { .. }) => bad += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(times.windows(2).all(|w| w[1] > w[0]), "times increase across loops");
    // The played span is 1.9 s, rounded up to whole seconds: each loop is 2 s later.
    assert_eq!(times[20], t0 + 2_000_000_000, "{:?}", &times[15..25]);
    assert_eq!(bad, 2, "the unplayable message is skipped (once per loop)");
    assert_eq!(src.status()["skipped"], 2);
}
