//! Robustness round two, as an attacker on the same machine and on the bus would try
//! it, against one daemon:
//! - a planted symlink where earlier versions wrote a WAV example's temporary file
//!   (`/tmp/sensebind-example-<pid>-<n>.wav`) is never followed: examples are decoded
//!   in memory;
//! - ONNX Runtime profile traces left by a killed daemon are removed at start, and none
//!   is written to the shared temporary directory;
//! - query text with a newline and terminal escapes cannot forge a log line;
//! - 150 000 repeated modalities are stored once; the store is bounded
//!   (`queries.max_store_bytes`, refusal `too_large`);
//! - truncated and lying JPEG examples, a PNG example that would decode to 512 MiB,
//!   and audio examples over `queries.max_example_seconds`, are refused with the
//!   reason, before anything is allocated;
//! - a recording whose window holds more image bytes than `limits.max_window_bytes` is
//!   played with the frames beyond the budget rejected and counted.

use crate::common;
use sensebind::bus::msg::{HealthMsg, JsonMsg, QueryErrorMsg, SourceState};

use base64::Engine as _;
use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A mono 16-bit WAV of `seconds` at `rate`: a rising tone.
fn wav(seconds: f32, rate: u32, bits: u16) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..(seconds * rate as f32) as usize {
        let t = i as f32 / rate as f32;
        let v = (2.0 * std::f32::consts::PI * (300.0 + 100.0 * t) * t).sin();
        if bits == 8 {
            w.write_sample((v * 100.0) as i8).unwrap();
        } else {
            w.write_sample((v * 12000.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    out.into_inner()
}

/// A small PNG whose header declares `side`² pixels of 16-bit RGBA (8 bytes a pixel),
/// with a token of image data: what a decoder would allocate is in the header alone.
fn png_claiming(side: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
        out.extend((body.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(body);
        let crc = crc32fast::hash(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(side.to_be_bytes());
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([16, 6, 0, 0, 0]); // 16-bit, RGBA, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    // zlib, one stored block of 1 024 zero bytes, then its Adler-32 (of zeros: 1024 << 16 | 1).
    let mut z = vec![0x78, 0x01, 0x01, 0x00, 0x04, 0xFF, 0xFB];
    z.extend([0u8; 1024]);
    z.extend(((1024u32 << 16) | 1).to_be_bytes());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 2) as u8, 90]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_bus_attacks_of_round_two_are_refused() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let state = dir.path().join("state");
    // Traces a killed daemon left behind (pid 999999999 cannot exist: pid_max < 2^22).
    let profiles = state.join("ort-profile");
    std::fs::create_dir_all(&profiles).unwrap();
    let stale = profiles.join("sensebind-ort-999999999-vision_2026.json");
    std::fs::write(&stale, "[]").unwrap();
    let stale_tmp = std::env::temp_dir().join("sensebind-ort-999999999-audio_2026.json");
    std::fs::write(&stale_tmp, "[]").unwrap();
    let cfg = write_config(
        dir.path(),
        "hostile2",
        port,
        "[queries]\nregistrations_per_s = 1000.0\nregistration_burst = 1000\nid_min_interval_s = 0.0\nmax_store_bytes = 65536\n",
    );
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&cfg, &log);
    let pid = daemon.child.id();
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();

    // The symlinks a local attacker plants where the example files were written.
    let victim = dir.path().join("precious.txt");
    std::fs::write(&victim, "precious").unwrap();
    let planted: Vec<_> = (0..8)
        .map(|n| std::env::temp_dir().join(format!("sensebind-example-{pid}-{n}.wav")))
        .collect();
    for p in &planted {
        let _ = std::fs::remove_file(p);
        std::os::unix::fs::symlink(&victim, p).unwrap();
    }

    let z = client(port).await;
    let errors: Arc<Mutex<BTreeMap<String, QueryErrorMsg>>> = Arc::default();
    let e2 = errors.clone();
    let _errors = z
        .declare_subscriber("sensebind/hostile2/errors/queries/**")
        .callback(move |s| {
            let v = QueryErrorMsg::from_json(&s.payload().to_bytes()).unwrap();
            e2.lock().unwrap().insert(v.query_id.clone(), v);
        })
        .await
        .unwrap();
    // Every embedding published, to compare with the history after the SIGTERM.
    type Published = BTreeMap<(String, String, i64), (String, Vec<f32>)>;
    let published: Arc<Mutex<Published>> = Arc::default();
    let p2 = published.clone();
    let _embeddings = z
        .declare_subscriber("sensebind/hostile2/embedding/**")
        .callback(move |s| {
            let b = s.payload().to_bytes();
            let (source, target, seq, model, v) = if s.key_expr().as_str().ends_with("/fused") {
                let m = sensebind::bus::FusedMsg::from_cbor(&b).unwrap();
                (
                    "fused".to_string(),
                    "fused".to_string(),
                    m.seq,
                    m.model.clone(),
                    m.vector(),
                )
            } else {
                let m = sensebind::bus::EmbeddingMsg::from_cbor(&b).unwrap();
                (
                    m.source.clone(),
                    m.modality.to_string(),
                    m.seq,
                    m.model.clone(),
                    m.vector(),
                )
            };
            p2.lock().unwrap().insert((source, target, seq), (model, v));
        })
        .await
        .unwrap();
    // Up once the first labels arrive.
    let labels = z.declare_subscriber("sensebind/hostile2/labels/**").await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), labels.recv_async())
        .await
        .unwrap_or_else(|_| panic!("no labels; log:\n{}", dump()))
        .unwrap();

    // ORT traces: the stale ones are gone, none of this daemon is left anywhere.
    assert!(!stale.exists(), "a killed daemon's trace is removed at start");
    assert!(
        !stale_tmp.exists(),
        "a killed daemon's trace in /tmp is removed at start"
    );
    let ours = format!("sensebind-ort-{pid}-");
    for d in [std::env::temp_dir(), profiles.clone()] {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            assert!(
                !e.file_name().to_string_lossy().starts_with(&ours),
                "trace left in {}: {:?}",
                d.display(),
                e.file_name()
            );
        }
    }

    let put = |id: &str, body: String| {
        let z = &z;
        let key = format!("sensebind/hostile2/queries/{id}");
        async move { z.put(key, body).await.unwrap() }
    };
    let registered = |id: &'static str| {
        let z = &z;
        async move {
            for _ in 0..40 {
                if query_ids(z, "hostile2").await.iter().any(|q| q == id) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            false
        }
    };
    let refusal = |id: &'static str| {
        let errors = errors.clone();
        async move {
            for _ in 0..40 {
                if let Some(v) = errors.lock().unwrap().get(id) {
                    return v.clone();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            panic!("no refusal of `{id}`")
        }
    };

    // A WAV example is embedded without touching the planted links.
    put(
        "ex",
        format!(
            r#"{{"example":{{"media":"{}","mime":"audio/wav"}}}}"#,
            b64(&wav(3.0, 16000, 16))
        ),
    )
    .await;
    assert!(registered("ex").await, "the WAV example registers; log:\n{}", dump());
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious",
        "the symlink was followed"
    );
    for p in &planted {
        assert!(std::fs::symlink_metadata(p).unwrap().file_type().is_symlink());
        std::fs::remove_file(p).unwrap();
    }

    // Log injection: the text reaches the log on one line, its escapes escaped.
    let forged = "2026-01-01T00:00:00.000000Z ERROR sensebind::pipeline: event=\\\"stage_failed\\\"";
    put("inj", format!(r#"{{"text":"x\n{forged}\u001b[2J\r"}}"#)).await;
    assert!(registered("inj").await);
    let text = dump();
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a forged log line:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r'),
        "raw escapes in the log"
    );
    assert!(text.contains(r"x\n2026-01-01T00:00:00"), "the text is logged, escaped");

    // 150 000 × "audio" is one modality; the store stays small.
    put(
        "many",
        format!(
            r#"{{"text":"a drum","modalities":[{}"audio"]}}"#,
            "\"audio\",".repeat(150_000)
        ),
    )
    .await;
    assert!(registered("many").await, "log:\n{}", dump());
    let store = std::fs::read_to_string(state.join("queries.json")).unwrap();
    assert!(store.len() < 60_000, "{} bytes", store.len());
    let stored: serde_json::Value = serde_json::from_str(&store).unwrap();
    let many = stored["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == "many")
        .unwrap()
        .clone();
    assert_eq!(many["modalities"], serde_json::json!(["audio"]));

    // Truncated and lying JPEGs, a PNG declaring 8192² 16-bit RGBA pixels (512 MiB
    // decoded), and too long a WAV, are refused with the reason.
    let rss_before = rss_mib(pid);
    let good = jpeg(96, 64);
    let mut lying = good.clone();
    let sof = lying.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    lying[sof + 5..sof + 9].copy_from_slice(&[0x1F, 0x40, 0x1F, 0x40]); // 8000×8000
    for (id, media, mime, needle) in [
        ("cut", b64(&good[..good.len() / 2]), "image/jpeg", "not a valid JPEG"),
        ("lie", b64(&lying), "image/jpeg", "not a valid JPEG"),
        ("png16", b64(&png_claiming(8192)), "image/png", "bytes to decode"),
        (
            "long",
            b64(&wav(31.0, 1000, 8)),
            "audio/wav",
            "queries.max_example_seconds",
        ),
    ] {
        put(id, format!(r#"{{"example":{{"media":"{media}","mime":"{mime}"}}}}"#)).await;
        let e = refusal(id).await;
        assert!(e.error.contains(needle), "{id}: {e:?}");
    }
    let grown = rss_mib(pid) - rss_before;
    eprintln!("refusing the hostile examples grew RSS by {grown:.0} MiB");
    assert!(grown < 100.0, "refused examples grew RSS by {grown:.0} MiB");

    // The store is bounded: registrations beyond `queries.max_store_bytes` are refused
    // (`too_large`), the file stays within it, and the daemon goes on.
    for i in 0..80 {
        put(&format!("fill{i}"), format!(r#"{{"text":"thing number {i}"}}"#)).await;
    }
    let full = refusal("fill79").await;
    assert_eq!(full.code, "too_large", "{full:?}");
    assert!(full.error.contains("queries.max_store_bytes"), "{full:?}");
    let size = std::fs::metadata(state.join("queries.json")).unwrap().len();
    assert!(size <= 65536, "store of {size} bytes");
    assert!(daemon.running());
    daemon.stop();

    // Every window published before the SIGTERM is in the history, and nothing else.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = published.lock().unwrap().clone();
    assert!(published.len() >= 10, "{} windows", published.len());
    let (model, v0) = published.values().next().unwrap().clone();
    let opts = sensebind::history::HistoryOptions {
        retention_ns: i64::MAX / 4,
        max_bytes: 1 << 40,
        segment_ns: 600_000_000_000,
        sync: Duration::from_secs(1),
    };
    let h = sensebind::history::History::open(&state.join("history"), &model, v0.len(), opts).unwrap();
    assert_eq!(h.len(), published.len(), "the history holds exactly what was published");
    for ((source, target, seq), (_, v)) in &published {
        let t: sensebind::modality::Target = target.parse().unwrap();
        let got = h.get(source, t, *seq).unwrap();
        assert_eq!(got.map(|r| r.vector).as_ref(), Some(v), "{target}/{source} seq {seq}");
    }
}

/// 13 frames of 3000×2000 RGB (18 MB each, a few KB compressed) in one 2 s window, with
/// `limits.max_window_bytes` = 50 MiB: two frames fit; the other ten of that window are
/// rejected and counted, the frame that closes the window is taken, and the replay ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_beyond_its_byte_budget_rejects_frames_instead_of_growing() {
    use sensebind::record::codec;
    use sensebind::sources::{Frame, FrameData};
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mcap");
    let mut rec = sensebind::record::Recorder::create(&path).unwrap();
    let t0 = 1_000_000_000_000i64;
    let times: Vec<i64> = (0..12)
        .map(|i| t0 + i * 150_000_000)
        .chain([t0 + 2_000_000_000])
        .collect();
    for (i, t) in times.iter().enumerate() {
        let f = Frame {
            t_ns: *t,
            data: FrameData::Rgb8 {
                width: 3000,
                height: 2000,
                data: vec![i as u8 * 10; 3000 * 2000 * 3],
            },
        };
        rec.write(&codec::encode_frame("cam", &f)).unwrap();
    }
    rec.finish().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 4 << 20, "{size} bytes");

    let port = free_port();
    let sources = format!(
        "[limits]\nmax_window_bytes = 52428800\n\
         [sources.cam]\ntype = \"mcap\"\npath = \"{}\"\npace = \"fast\"\n",
        path.display()
    );
    let cfg = write_config(dir.path(), "budget", port, &sources);
    let log = dir.path().join("daemon.log");
    let mut d = Daemon::start(&cfg, &log);
    let z = client(port).await;
    let sub = z.declare_subscriber("sensebind/budget/health").await.unwrap();
    let mut last = None;
    let mut peak = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while d.running() && std::time::Instant::now() < deadline {
        peak = peak.max(rss_mib(d.child.id()));
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(50), sub.recv_async()).await {
            let h = HealthMsg::from_json(&s.payload().to_bytes()).unwrap();
            if h.sources["cam"].state == SourceState::Ended {
                last = Some(h);
                break;
            }
        }
    }
    d.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let h = last.unwrap_or_else(|| panic!("the replay never ended; log:\n{text}"));
    let cam = &h.sources["cam"].streams["vision"];
    eprintln!("byte budget: peak RSS {peak:.0} MiB; {cam:?}");
    assert_eq!(cam.frames_rejected, 10, "{cam:?}");
    assert!(
        text.contains("limits.max_window_bytes"),
        "the reason is logged:\n{text}"
    );
}
