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
//! - A real overrun, on a paced capture device built by the test as an ALSA plugin
//!   (`tests/fixtures/alsa_paced_pcm.c`; the stock `null` and `file` PCMs are unpaced
//!   and never overrun): the driver's recovery counts it, restarts the stream, and
//!   delivers the device's frames from its restart, stamped from a fresh anchor on
//!   the host clock that never goes back over what was stamped.
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
        // `sbpaced` and `sbfast`: the paced test device ([`paced_device`]), true to its
        // rate and twice as fast as it says.
        let paced = |name: &str, speed: f64| {
            format!(
                "pcm.{name} {{\n    type sbpaced\n    speed {speed:?}\n    log \"{}\"\n}}\n",
                dir.join(format!("{name}-starts.log")).display()
            )
        };
        std::fs::write(
            dir.join(".asoundrc"),
            format!(
                "pcm.sbtest {{\n    type file\n    slave.pcm \"null\"\n    file \"/dev/null\"\n    infile \"{}\"\n    format \"raw\"\n}}\n\
                 pcm_type.sbpaced {{\n    lib \"{}\"\n}}\n{}{}",
                raw.display(),
                dir.join(PACED_LIB).display(),
                paced("sbpaced", 1.0),
                paced("sbfast", 2.0),
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
    alsa_source(&table)
}

/// The ALSA source `table` configures, built as the daemon builds it (id `mic`).
fn alsa_source(table: &toml::Table) -> Box<dyn Source> {
    let cfg = sensebind::sources::parse("mic", table).unwrap();
    assert_eq!(cfg.kind, "alsa");
    let ctx = SourceContext {
        id: "mic".into(),
        epoch_ns: 0,
        image_limits: ImageLimits::default(),
        stop: StopFlag::default(),
        ros2: Default::default(),
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
    let mut src = alsa_source(&table);
    let e = src.open().unwrap_err().to_string();
    assert!(e.contains("sbtest_missing") && e.contains("cannot open"), "{e}");
}

/// File name of the paced test device's ALSA plugin in the test HOME.
const PACED_LIB: &str = "libasound_module_pcm_sbpaced.so";

/// The paced test device (`tests/fixtures/alsa_paced_pcm.c`, an ALSA I/O plugin):
/// built here with the system C compiler, then opened by the ALSA driver by name
/// (`sbpaced` or `sbfast`, defined in the test HOME's `.asoundrc`) as a 16 kHz
/// stereo microphone with 50 ms periods. Returns the source and the device's start
/// log (the number of the first frame of each start, one per line), emptied.
fn paced_device(name: &str) -> (Box<dyn Source>, PathBuf) {
    static BUILT: OnceLock<()> = OnceLock::new();
    let home = alsa_home();
    BUILT.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alsa_paced_pcm.c");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = std::process::Command::new(&cc)
            .args(["-shared", "-fPIC", "-DPIC", "-O2", "-o"])
            .arg(home.join(PACED_LIB))
            .arg(&src)
            .arg("-lasound")
            .output()
            .unwrap_or_else(|e| panic!("running `{cc}` to build the test PCM: {e}"));
        assert!(
            out.status.success(),
            "building the test PCM: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let log = home.join(format!("{name}-starts.log"));
    let _ = std::fs::remove_file(&log);
    let table: toml::Table = toml::from_str(&format!(
        "type = \"alsa\"\ndevice = \"{name}\"\nrate = {RATE}\nchannels = 2\nperiod_ms = 50"
    ))
    .unwrap();
    (alsa_source(&table), log)
}

/// The frames the paced device captured, in order: frame `g` carries bits 0..15 of
/// `g` in the left channel and bits 15..30 in the right.
fn device_frames(first: u64, n: usize) -> Vec<i16> {
    (first..first + n as u64)
        .flat_map(|g| [(g & 0x7fff) as i16, ((g >> 15) & 0x7fff) as i16])
        .collect()
}

/// A captured stereo chunk as S16 (exact: the driver divides by 32768).
fn s16_of(f: &Frame) -> Vec<i16> {
    let FrameData::Audio {
        sample_rate,
        channels,
        samples,
    } = &f.data
    else {
        panic!("expected audio, got {f:?}")
    };
    assert_eq!((*sample_rate, *channels), (RATE, 2));
    samples.iter().map(|s| (s * 32768.0) as i16).collect()
}

/// The device's start log: the number of the first frame of each start.
fn starts(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// 50 ms periods: the driver asks for a buffer of 8 periods, 400 ms, so a reader on a
/// busy machine does not overrun before the test makes it.
const PERIOD: usize = 800;
const PERIOD_NS: i64 = 50_000_000;

#[test]
fn a_real_overrun_is_recovered_and_the_clock_re_anchors_on_the_host() {
    // A device true to its rate. The reader takes five periods, then stays away for
    // longer than the device's buffer: the device overruns (alsa-lib puts the stream
    // in XRUN and the next read or wait fails with EPIPE), and what it captured
    // meanwhile is lost. The driver's own recovery (`next_frame`) must count it,
    // prepare and restart the stream, and stamp the next chunk from a fresh anchor on
    // the host clock, not as if it followed the last one.
    let (mut src, log) = paced_device("sbpaced");
    src.open().unwrap();
    let before: Vec<Frame> = (0..5).map(|_| src.next_frame().unwrap().unwrap()).collect();
    let st = src.status();
    assert_eq!(
        (st["xruns"].as_u64(), st["period_frames"].as_u64()),
        (Some(0), Some(PERIOD as u64)),
        "{st:?}"
    );
    let buffer = st["buffer_frames"].as_u64().unwrap();
    for (i, f) in before.iter().enumerate() {
        assert!(s16_of(f) == device_frames((i * PERIOD) as u64, PERIOD), "chunk {i}");
        assert_eq!(f.t_ns - before[0].t_ns, i as i64 * PERIOD_NS);
    }

    std::thread::sleep(std::time::Duration::from_millis(buffer * 1000 / RATE as u64 + 150));
    let after: Vec<Frame> = (0..3).map(|_| src.next_frame().unwrap().unwrap()).collect();

    let st = src.status();
    assert_eq!(st["xruns"], 1, "one overrun, counted: {st:?}");
    assert_eq!(
        st["reanchors"], 0,
        "an overrun's fresh anchor is not a drift step: {st:?}"
    );
    // The device started twice: at frame 0, then after the recovery at frame `b`;
    // frames 5·800..b were captured and lost.
    let s = starts(&log);
    assert_eq!(s.len(), 2, "started {s:?}");
    let (first, b) = (s[0], s[1]);
    assert_eq!(first, 0);
    assert!(
        b > 5 * PERIOD as u64 + buffer,
        "restart at frame {b}: nothing was lost?"
    );
    // The chunks after the recovery are exactly what the device delivered from its
    // restart on (none of the lost frames).
    for (i, f) in after.iter().enumerate() {
        assert!(
            s16_of(f) == device_frames(b + (i * PERIOD) as u64, PERIOD),
            "chunk {i} after the overrun is not the device's frames {}..",
            b + (i * PERIOD) as u64
        );
    }
    // Time: never back over what was stamped, and re-anchored on the host clock: the
    // restart's first frame is `b / rate` after frame 0 on the device's crystal (true
    // to the host here), so the lost audio is a gap in time of that length.
    let last_end = before[4].t_ns + PERIOD_NS;
    assert!(
        after[0].t_ns >= last_end,
        "stepped back: {} < {last_end}",
        after[0].t_ns
    );
    let want = before[0].t_ns + (b as i64 * 1_000_000_000 / RATE as i64);
    eprintln!(
        "overrun: {:.1} ms of audio lost; the next chunk is stamped {:.1} ms after the last one's end \
         ({:+.2} ms from the device's time)",
        (b - 5 * PERIOD as u64) as f64 * 1e3 / RATE as f64,
        (after[0].t_ns - last_end) as f64 / 1e6,
        (after[0].t_ns - want) as f64 / 1e6
    );
    assert!(
        (after[0].t_ns - want).abs() < 10_000_000,
        "the chunk after the overrun is stamped {:.1} ms after the last one's end; \
         the device lost {:.1} ms ({:.1} ms off)",
        (after[0].t_ns - last_end) as f64 / 1e6,
        (b - 5 * PERIOD as u64) as f64 * 1e3 / RATE as f64,
        (after[0].t_ns - want) as f64 / 1e6
    );
    for w in after.windows(2) {
        assert_eq!(w[1].t_ns - w[0].t_ns, PERIOD_NS, "contiguous again after the overrun");
    }
}

#[test]
fn after_an_overrun_a_clock_running_ahead_of_the_host_never_steps_back() {
    // A device twice as fast as the rate it announces: in 0.75 s it delivers 1.5 s of
    // "16 kHz" audio, so its sample clock runs ahead of the host's. It then overruns.
    // The host places the restart's first frame earlier than the end of the chunks
    // already stamped; the fresh anchor must not go back over them.
    let (mut src, log) = paced_device("sbfast");
    src.open().unwrap();
    let before: Vec<Frame> = (0..30).map(|_| src.next_frame().unwrap().unwrap()).collect();
    let buffer = src.status()["buffer_frames"].as_u64().unwrap();
    for (i, f) in before.iter().enumerate() {
        assert!(s16_of(f) == device_frames((i * PERIOD) as u64, PERIOD), "chunk {i}");
    }
    assert_eq!(src.status()["xruns"], 0);
    // At twice the rate the buffer fills in half its nominal time.
    std::thread::sleep(std::time::Duration::from_millis(buffer * 500 / RATE as u64 + 100));
    let after = src.next_frame().unwrap().unwrap();
    let host = sensebind::clock::realtime_ns();

    let st = src.status();
    assert_eq!(st["xruns"], 1, "{st:?}");
    let s = starts(&log);
    assert_eq!(s.len(), 2, "started {s:?}");
    assert!(s[1] > 30 * PERIOD as u64 + buffer, "restart at frame {}", s[1]);
    assert!(
        s16_of(&after) == device_frames(s[1], PERIOD),
        "the chunk after the overrun is not the device's frames from its restart"
    );
    // The last chunk before the overrun ended well ahead of the host clock, so the
    // host's estimate for the new chunk (which started before `host`) lies before
    // it. The chunk is stamped right at its end: never earlier.
    let last_end = before[29].t_ns + PERIOD_NS;
    eprintln!(
        "fast device: restarted at frame {}; the last chunk ended {:.1} ms ahead of the host clock",
        s[1],
        (last_end - host) as f64 / 1e6
    );
    assert!(
        last_end > host + 100_000_000,
        "the sample clock is not ahead of the host"
    );
    assert_eq!(
        after.t_ns,
        last_end,
        "stamped {} ns from the last chunk's end",
        after.t_ns - last_end
    );
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
                m.data.into(),
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
