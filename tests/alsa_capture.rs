//! The ALSA driver on a real ALSA stack, without a sound card: ALSA's `file` plugin
//! with an `infile` hands a capture stream the bytes of a file (here a recording of
//! speech, `tests/fixtures/speech16k.wav`, 16 kHz mono s16). The plugin reads the
//! file unpaced and repeats stale data past its end, so the source stops at the
//! file's length (`max_seconds`).
//!
//! - The captured samples equal the file's, exactly, and timestamps advance by
//!   exactly one period per frame.
//! - Captured audio, windowed and embedded the daemon's way, gives the embeddings
//!   `sensebind embed --audio` (the real binary) gives for the same WAV.
#![cfg(feature = "alsa")]

mod common;

use sensebind::modality::Modality;
use sensebind::sources::{Frame, FrameData, ImageLimits, Source, SourceContext, StopFlag};
use sensebind::window::{Outcome, WindowParams, Windower};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const RATE: u32 = 16_000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech16k.wav")
}

fn fixture_samples() -> Vec<i16> {
    let mut r = hound::WavReader::open(fixture()).unwrap();
    let spec = r.spec();
    assert_eq!((spec.sample_rate, spec.channels, spec.bits_per_sample), (RATE, 1, 16));
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// A HOME whose `.asoundrc` defines `pcm.sbtest`: the fixture's samples as a capture
/// stream. ALSA reads `$HOME/.asoundrc` when it first loads its configuration, so
/// HOME is set once, before any test opens a PCM (each test calls this first).
fn alsa_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        // Cargo's scratch folder for integration tests: rewritten, identically, by each run.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("alsa-home");
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("speech16k.raw");
        let bytes: Vec<u8> = fixture_samples().iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&raw, bytes).unwrap();
        std::fs::write(
            dir.join(".asoundrc"),
            format!(
                "pcm.sbtest {{\n    type file\n    slave.pcm \"null\"\n    file \"/dev/null\"\n    infile \"{}\"\n    format \"raw\"\n}}\n",
                raw.display()
            ),
        )
        .unwrap();
        std::env::set_var("HOME", &dir);
        dir
    })
}

/// The `sbtest` device as a configured `[sources.mic]`, through the driver registry.
fn mic(extra: &str) -> Box<dyn Source> {
    alsa_home();
    let n = fixture_samples().len();
    let table: toml::Table = toml::from_str(&format!(
        "type = \"alsa\"\ndevice = \"sbtest\"\nrate = {RATE}\nchannels = 1\nperiod_ms = 20\n\
         max_seconds = {}\n{extra}",
        n as f64 / RATE as f64
    ))
    .unwrap();
    let cfg = sensebind::sources::parse("mic", &table).unwrap();
    assert_eq!(cfg.kind, "alsa");
    let ctx = SourceContext {
        id: "mic".into(),
        epoch_ns: 0,
        image_limits: ImageLimits::default(),
        stop: StopFlag::default(),
    };
    cfg.driver.unwrap().build(&ctx).unwrap()
}

/// Every frame until the source ends.
fn capture(src: &mut dyn Source) -> Vec<Frame> {
    src.open().unwrap();
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        frames.push(f);
        assert!(frames.len() < 10_000, "the source did not stop at max_seconds");
    }
    frames
}

fn samples_of(f: &Frame) -> &[f32] {
    match &f.data {
        FrameData::Audio {
            sample_rate,
            channels,
            samples,
        } => {
            assert_eq!((*sample_rate, *channels), (RATE, 1));
            samples
        }
        other => panic!("expected audio, got {other:?}"),
    }
}

#[test]
fn captured_samples_and_times_match_the_file() {
    // Replayed faster than real time: a drift bound that never re-anchors.
    let mut src = mic("drift_ms = 3600000");
    let before = sensebind::clock::realtime_ns();
    let frames = capture(src.as_mut());
    let want = fixture_samples();

    let st = src.status();
    assert_eq!(st["rate"], RATE);
    assert_eq!(st["channels"], 1);
    assert_eq!(st["format"], "S16_LE");
    assert_eq!(st["period_frames"], 320, "20 ms at 16 kHz: {st:?}");
    assert_eq!((st["xruns"].as_u64(), st["reanchors"].as_u64()), (Some(0), Some(0)));
    let info = src.info();
    assert!(
        info.description.contains("16000 Hz") && info.description.contains("320-frame periods"),
        "{}",
        info.description
    );
    assert_eq!(info.streams[0].modality, Modality::Audio);
    assert_eq!(info.streams[0].nominal_rate_hz, 50.0);

    // Exactly the file's samples, as s16.
    let got: Vec<i16> = frames
        .iter()
        .flat_map(|f| samples_of(f).iter().map(|s| (s * 32768.0) as i16))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "captured samples differ from the file");
    // Whole periods, then the remainder.
    let lens: Vec<usize> = frames.iter().map(|f| samples_of(f).len()).collect();
    assert!(lens[..lens.len() - 1].iter().all(|n| *n == 320), "{lens:?}");
    assert_eq!(*lens.last().unwrap(), want.len() - 320 * (lens.len() - 1));

    // Sample-clock times: exactly 320 / 16000 s apart, anchored on the realtime clock.
    for w in frames.windows(2) {
        assert_eq!(w[1].t_ns - w[0].t_ns, 20_000_000);
    }
    let t0 = frames[0].t_ns;
    // (The plugin reports its whole buffer as still waiting, so the anchor lies up to
    // a buffer's length before the first read.)
    assert!(
        t0 >= before - 1_000_000_000 && t0 <= sensebind::clock::realtime_ns(),
        "{t0} vs {before}"
    );

    // The end is the end; reopening starts the file again.
    assert!(src.next_frame().unwrap().is_none());
    let again = capture(src.as_mut());
    assert_eq!(again.len(), frames.len());
    assert_eq!(samples_of(&again[0]), samples_of(&frames[0]));
}

#[test]
fn unpaced_capture_with_the_default_drift_bound_loses_nothing_and_never_steps_back() {
    // The plugin returns 3.3 s of audio in milliseconds: with the default 20 ms bound
    // the sample clock runs ahead of the host clock. It slews (each period at most
    // 500 ppm shorter), it never steps back over samples already stamped, and every
    // sample of the file is delivered.
    let mut src = mic("");
    let frames = capture(src.as_mut());
    let got: Vec<i16> = frames
        .iter()
        .flat_map(|f| samples_of(f).iter().map(|s| (s * 32768.0) as i16))
        .collect();
    assert!(got == fixture_samples(), "captured samples differ from the file");
    for w in frames.windows(2) {
        let end = w[0].t_ns + samples_of(&w[0]).len() as i64 * 1_000_000_000 / RATE as i64;
        let gap = w[1].t_ns - end;
        assert!(
            (-10_000..=0).contains(&gap),
            "a period starts {gap} ns from the last one's end"
        );
    }
    // Every sample reaches the windows: the daemon's default 2 s windows every 1 s, on
    // a grid starting at the first sample. Each window holds a contiguous run of the
    // file's samples (none overwritten or reordered by the slewing clock) and together
    // they leave no sample out.
    let params = WindowParams {
        length_ns: 2_000_000_000,
        hop_ns: 1_000_000_000,
        origin_ns: frames[0].t_ns,
        min_coverage: 0.01,
    };
    let mut w = Windower::new("mic", Modality::Audio, params, 50.0);
    let mut windows = Vec::new();
    for f in &frames {
        for o in w.push(f.clone()) {
            match o {
                Outcome::Ready(win) => windows.push(win),
                other => panic!("{other:?}"),
            }
        }
    }
    windows.extend(w.flush().into_iter().map(|o| match o {
        Outcome::Ready(win) => win,
        other => panic!("{other:?}"),
    }));
    let want = fixture_samples();
    let mut covered = 0usize;
    for win in &windows {
        let sensebind::window::WindowData::Audio { samples, valid, .. } = &win.data else {
            panic!("not audio")
        };
        // (The grid starts at the first sample: no window starts with silence.)
        let run: Vec<i16> = samples[..*valid].iter().map(|s| (s * 32768.0) as i16).collect();
        let near = win.seq.max(0) as usize * RATE as usize;
        let at = (near.saturating_sub(200)..=near + 200)
            .find(|&i| want.get(i..i + run.len()) == Some(&run[..]))
            .unwrap_or_else(|| panic!("window {} is not a run of the file's samples", win.seq));
        assert!(at <= covered, "samples {covered}..{at} are in no window");
        covered = covered.max(at + run.len());
    }
    assert_eq!(covered, want.len(), "{} windows", windows.len());

    let st = src.status();
    assert_eq!(st["reanchors"], 0, "no step: {st:?}");
    assert!(st["clock_offset_ms"].as_f64().unwrap() > 20.0, "running ahead: {st:?}");
}

#[test]
fn a_missing_pcm_is_an_open_error() {
    alsa_home();
    let table: toml::Table = toml::from_str("type = \"alsa\"\ndevice = \"sbtest_missing\"").unwrap();
    let cfg = sensebind::sources::parse("mic", &table).unwrap();
    let ctx = SourceContext {
        id: "mic".into(),
        epoch_ns: 0,
        image_limits: ImageLimits::default(),
        stop: StopFlag::default(),
    };
    let mut src = cfg.driver.unwrap().build(&ctx).unwrap();
    let e = src.open().unwrap_err().to_string();
    assert!(e.contains("sbtest_missing") && e.contains("cannot open"), "{e}");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn captured_speech_embeds_like_the_offline_cli() {
    common::require_ort();
    // The daemon-free path: the real binary on the WAV.
    let out = std::process::Command::new(common::bin())
        .args(["embed", "--audio"])
        .arg(fixture())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sensebind embed");
    assert!(
        out.status.success(),
        "sensebind embed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(offline.len() >= 2, "a 3.3 s clip in 2 s windows: {offline:?}");

    // The driver's path: captured through ALSA, on the stream's own time axis from its
    // first sample (as the offline path starts the file at t = 0), windowed and
    // embedded the daemon's way.
    let mut src = mic("drift_ms = 3600000");
    let frames = capture(src.as_mut());
    let t0 = frames[0].t_ns;
    let cfg = sensebind::config::Config::load(None).unwrap();
    let mut params = WindowParams::from_config(&cfg.window);
    params.origin_ns = 0;
    let mut w = Windower::new("mic", Modality::Audio, params, src.info().streams[0].nominal_rate_hz)
        .with_limits(sensebind::pipeline::window_limits(&cfg));
    let mut windows = Vec::new();
    let mut keep = |outcomes: Vec<Outcome>| {
        for o in outcomes {
            match o {
                Outcome::Ready(win) => windows.push(win),
                Outcome::Dropped { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    for f in frames {
        keep(w.push(Frame {
            t_ns: f.t_ns - t0,
            data: f.data,
        }));
    }
    keep(w.flush());
    assert_eq!(windows.len(), offline.len(), "same windows as the offline path");
    let models = sensebind::pipeline::Models::load(&cfg, &[Modality::Audio]).unwrap();
    let refs: Vec<&sensebind::window::Window> = windows.iter().collect();
    let live = sensebind::engine::worker::embed_windows(
        models.preprocessors[&Modality::Audio].as_ref(),
        models.encoders[&Modality::Audio].as_ref(),
        &refs,
    );
    for ((win, v), off) in windows.iter().zip(live).zip(&offline) {
        let v = v.unwrap();
        let t_start = off["t_start"].as_f64().unwrap();
        let t_end = off["t_end"].as_f64().unwrap();
        assert_eq!(
            (win.t_start_ns, win.t_end_ns),
            ((t_start * 1e9).round() as i64, (t_end * 1e9).round() as i64)
        );
        let e: Vec<f32> = off["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&v, &e);
        assert!(c >= 0.9999, "window {}..{} s: cosine {c}", t_start, t_end);
    }
}

#[test]
fn captured_audio_is_recorded_to_mcap_sample_exact() {
    common::require_ort();
    let home = alsa_home();
    let n = fixture_samples().len();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "alsarec",
        common::free_port(),
        &format!(
            "[sources.mic]\ntype = \"alsa\"\ndevice = \"sbtest\"\nrate = {RATE}\nchannels = 1\nperiod_ms = 20\n\
             max_seconds = {}\n[daemon]\nexit_when_sources_end = true\n\
             [engine]\nproviders = [\"cpu\"]\n",
            n as f64 / RATE as f64
        ),
    );
    let out = dir.path().join("mic.mcap");
    let run = std::process::Command::new(common::bin())
        .args(["record", "--seconds", "60", "--embeddings", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sensebind record");
    assert!(
        run.status.success(),
        "sensebind record failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut recorded: Vec<i16> = Vec::new();
    let mut embeddings = 0;
    for m in sensebind::sources::mcap::reader::Messages::open(&out).unwrap() {
        let m = m.unwrap();
        if m.channel.topic == "frames/audio/mic" {
            let f = sensebind::sources::mcap::frames::decode_frame(
                Modality::Audio,
                &m.channel.schema,
                &m.channel.message_encoding,
                &m.data,
                m.log_time_ns,
                ImageLimits::default(),
            )
            .unwrap();
            recorded.extend(
                samples_of(&f)
                    .iter()
                    .map(|x| sensebind::sources::mcap::frames::to_s16(*x)),
            );
        } else if m.channel.topic == "embedding/audio/mic" {
            embeddings += 1;
        }
    }
    assert_eq!(recorded.len(), n, "every captured sample is recorded");
    assert!(recorded == fixture_samples(), "recorded samples equal the file's");
    assert!(embeddings >= 1, "the pipeline's embeddings are recorded too");
}
