//! The command line: `sensebind embed` output, and one-line errors for the three
//! most common set-up mistakes.

use crate::common;

use common::*;
use std::process::Command;

fn write_wav(path: &std::path::Path, seconds: f32, rate: u32, channels: u16) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (seconds * rate as f32) as usize;
    for i in 0..n {
        let t = i as f32 / rate as f32;
        let v = ((2.0 * std::f32::consts::PI * (300.0 + 200.0 * t) * t).sin() * 12000.0) as i16;
        for _ in 0..channels {
            w.write_sample(v).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn norm(v: &serde_json::Value) -> f64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt()
}

/// `sensebind embed --audio` on a generated chirp; its JSON lines.
fn embed_wav(seconds: f32, rate: u32, channels: u16) -> Vec<serde_json::Value> {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("chirp.wav");
    write_wav(&wav, seconds, rate, channels);
    let out = Command::new(bin())
        .args(["embed", "--audio"])
        .arg(&wav)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lines(&out.stdout)
}

#[test]
fn embed_wav_gives_one_line_per_two_second_window() {
    let l = embed_wav(6.0, 44100, 2);
    assert_eq!(l.len(), 3, "6 s of audio must give 3 windows");
    let dim = sensebind::pack::Pack::builtin()
        .unwrap()
        .spec(sensebind::Modality::Audio)
        .unwrap()
        .dim;
    for (k, j) in l.iter().enumerate() {
        assert_eq!(j["modality"], "audio");
        assert_eq!(j["t_start"].as_f64().unwrap(), 2.0 * k as f64);
        assert_eq!(j["t_end"].as_f64().unwrap(), 2.0 * k as f64 + 2.0);
        assert_eq!(j["embedding"].as_array().unwrap().len(), dim);
        assert!((norm(&j["embedding"]) - 1.0).abs() < 1e-4);
        assert_eq!(j["scale"].as_f64().unwrap(), 20.0);
    }
    // Different windows of a chirp embed differently.
    assert_ne!(l[0]["embedding"], l[2]["embedding"]);
}

/// `sensebind embed` gives the official embeddings (the parity fixtures, recorded
/// from official ImageBind with the tiny random pack): audio at 16 kHz, a PNG and a
/// text, each at cosine ≥ 0.9999 and nearer its own fixture than any other.
#[test]
fn embed_gives_the_official_embeddings() {
    require_ort();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/parity");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("manifest.json")).unwrap()).unwrap();
    let floats =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let cos = |a: &[f64], b: &[f64]| -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        d / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
    };
    let audio = manifest["audio"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "speech_16k_mono_2s")
        .unwrap();
    let image = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["format"] == "png")
        .unwrap();
    let text = &manifest["texts"][0];
    let out = Command::new(bin())
        .args(["embed", "--pack"])
        .arg(root.join("packs/tiny-random"))
        .arg("--audio")
        .arg(fixtures.join(audio["file"].as_str().unwrap()))
        .arg("--image")
        .arg(fixtures.join(image["file"].as_str().unwrap()))
        .args(["--text", text["text"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let l = lines(&out.stdout);
    assert_eq!(l.len(), 3, "one audio window, one image, one text");
    let all: Vec<Vec<f64>> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .chain(manifest["texts"].as_array().unwrap())
        .map(|e| floats(&e["embedding"]))
        .chain(std::iter::once(floats(&audio["windows"][0]["embedding"])))
        .collect();
    for (line, want, what) in [
        (&l[0], floats(&audio["windows"][0]["embedding"]), "audio"),
        (&l[1], floats(&image["embedding"]), "image"),
        (&l[2], floats(&text["embedding"]), "text"),
    ] {
        let mine = floats(&line["embedding"]);
        let c = cos(&mine, &want);
        assert!(c >= 0.9999, "{what}: cosine {c} with the official embedding");
        for other in all.iter().filter(|o| **o != want) {
            assert!(cos(&mine, other) < c, "{what}: nearer another fixture than its own");
        }
    }
}

#[test]
fn embed_image_and_text_give_one_line_each() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("photo.png");
    let img = image::RgbImage::from_fn(321, 187, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    img.save(&png).unwrap();
    let out = Command::new(bin())
        .args(["embed", "--image"])
        .arg(&png)
        .args(["--text", "a photo of a dog"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let l = lines(&out.stdout);
    assert_eq!(l.len(), 2);
    assert_eq!(l[0]["modality"], "vision");
    assert!(l[0]["t_start"].is_null());
    assert!((norm(&l[0]["embedding"]) - 1.0).abs() < 1e-4);
    assert_eq!(l[1]["modality"], "text");
    assert_eq!(l[1]["input"], "a photo of a dog");
}

/// stderr must be exactly one non-empty line containing every needle.
fn assert_one_line_error(out: &std::process::Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    let l: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(l.len(), 1, "expected a one-line error, got:\n{err}");
    for n in needles {
        assert!(l[0].contains(n), "error `{}` should mention `{n}`", l[0]);
    }
}

#[test]
fn missing_onnxruntime_is_a_one_line_error() {
    let out = Command::new(bin())
        .args(["embed", "--text", "hello"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["/nonexistent/libonnxruntime.so.1.31.1", "ORT_DYLIB_PATH"]);
}

#[test]
fn pack_with_missing_file_is_a_one_line_error() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/packs/tiny-random");
    for f in [
        "pack.toml",
        "vision.onnx",
        "audio.onnx",
        "depth.onnx",
        "thermal.onnx",
        "imu.onnx",
    ] {
        std::fs::copy(format!("{src}/{f}"), dir.path().join(f)).unwrap();
    }
    let out = Command::new(bin())
        .args(["embed", "--pack"])
        .arg(dir.path())
        .args(["--text", "hello"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["text.onnx", "does not exist"]);
}

#[test]
fn config_with_a_bad_key_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[engine]\nmax_batchh = 4\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_one_line_error(&out, &["max_batchh"]);

    std::fs::write(&cfg, "[window]\nhop_s = \"soon\"\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_one_line_error(&out, &["window.hop_s"]);

    // Environment overrides are checked the same way.
    let out = Command::new(bin())
        .args(["check"])
        .env("SENSEBIND__WINDOW__MIN_COVERAGE", "2")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["window.min_coverage"]);
}

#[test]
fn out_of_range_durations_stop_run_and_check_with_a_line_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("huge.toml");
    // Each of these panicked (rc 101) or passed `check` before they were range-checked.
    std::fs::write(
        &cfg,
        "[health]\ninterval_s = 1e-6\nstall_s = 1e300\n[fusion]\ndeadline_s = 1e300\nactive_s = 1e300\n\
         [engine]\nmax_wait_s = 1e300\n[daemon]\nwatchdog_stall_s = 1e300\nshutdown_timeout_s = 1e300\n\
         [window]\nidle_flush_s = 1e300\n[queries]\nid_min_interval_s = 1e300\n[log]\nlevel = \"loud\"\n\
         [sources.mic]\ntype = \"file\"\nsensor = \"microphone\"\npath = \"a.wav\"\nstart_ns = 9223372036854775807\n",
    )
    .unwrap();
    let keys = [
        "health.interval_s",
        "health.stall_s",
        "fusion.deadline_s",
        "fusion.active_s",
        "engine.max_wait_s",
        "daemon.watchdog_stall_s",
        "daemon.shutdown_timeout_s",
        "window.idle_flush_s",
        "queries.id_min_interval_s",
        "log.level",
        "sources.mic.start_ns",
    ];
    for cmd in ["check", "run"] {
        let out = Command::new(bin()).args([cmd, "--config"]).arg(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), keys.len(), "{cmd}: one line per key:\n{err}");
        for k in keys {
            assert_eq!(
                lines.iter().filter(|l| l.contains(&format!("`{k}`"))).count(),
                1,
                "{cmd}: `{k}`:\n{err}"
            );
        }
    }
}

#[test]
fn systemd_unit_verifies() {
    // `systemd-analyze verify` where systemd is installed. On CI (`CI` set) it must be:
    // tools/dev.sh setup installs the `systemd` package that provides it.
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze not installed but CI is set: the unit must be verified on CI (apt-get install systemd; tools/dev.sh setup)"
        );
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/sensebind.service")).unwrap();
    let path = dir.path().join("sensebind.service");
    std::fs::write(&path, unit.replace("/usr/bin/sensebind", bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
fn check_opens_sources_and_names_a_missing_recording() {
    require_ort();
    let out = Command::new(bin()).arg("check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for s in ["camera", "depth", "thermal", "microphone", "imu"] {
        assert!(text.contains(&format!("source {s}: ok")), "{text}");
    }
    let out = Command::new(bin())
        .arg("check")
        .env("SENSEBIND__SOURCES__MICROPHONE__TYPE", "file")
        .env("SENSEBIND__SOURCES__MICROPHONE__PATH", "/nonexistent/take1.wav")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source microphone") && err.contains("/nonexistent/take1.wav"),
        "{err}"
    );
}

#[test]
fn check_json_is_the_doctors_report() {
    let ort = require_ort();
    // The demo: five sensors, so all six encoders are loaded.
    let out = Command::new(bin()).args(["check", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["ok"], true);
    assert_eq!(r["onnxruntime"]["library"], ort.as_str());
    assert_eq!(r["onnxruntime"]["version"], "1.31.1", "{}", r["onnxruntime"]);
    let providers: Vec<(&str, bool)> = r["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["available"].as_bool().unwrap()))
        .collect();
    // PyPI's CPU wheel: neither GPU provider is in the build.
    assert_eq!(providers, [("tensorrt", false), ("cuda", false), ("cpu", true)]);
    assert_eq!(r["engine_cache"]["used"], false);
    assert!(r["engine_cache"]["dir"].as_str().unwrap().ends_with("trt-cache"));
    let encoders = r["pack"]["encoders"].as_array().unwrap();
    assert_eq!(encoders.len(), 6);
    let mut total = 0;
    for e in encoders {
        let m = e["modality"].as_str().unwrap();
        assert_eq!(e["configured"], true, "{m}");
        assert_eq!(e["provider"], "CPUExecutionProvider", "{m}");
        assert!(
            e["nodes"]["CPUExecutionProvider"].as_u64().unwrap() > 50,
            "{m}: {}",
            e["nodes"]
        );
        let w = &e["weights"];
        assert!(w["params"].as_u64().unwrap() > 50_000, "{m}: {w}");
        assert!(w["params_by_dtype"]["float32"].as_u64().unwrap() > 50_000, "{m}: {w}");
        total += w["bytes"].as_u64().unwrap();
    }
    let mem = &r["memory"];
    assert_eq!(mem["modalities"].as_array().unwrap().len(), 6);
    let est = &mem["estimate"];
    assert_eq!(est["weights_bytes"].as_u64().unwrap(), total);
    // The ONNX files are the weights plus a little graph.
    let files: u64 = ["vision", "text", "audio", "depth", "thermal", "imu"]
        .iter()
        .map(|m| {
            std::fs::metadata(format!("{}/packs/minibind/{m}.onnx", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        total < files && total * 100 > files * 90,
        "weights {total} vs files {files}"
    );
    assert!(est["weights_fp16_bytes"].as_u64().unwrap() * 2 > total - 10_000);
    assert!(est["cpu_fp32_rss_bytes"].as_u64().unwrap() > total);
    assert!(mem["available_bytes"].as_u64().unwrap() <= mem["total_bytes"].as_u64().unwrap());

    // No ONNX Runtime and no sources: both named, the pack still weighed; exit 1.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("empty.toml");
    std::fs::write(&cfg, "[robot]\nid = \"doctor\"\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["ok"], false);
    let failed = r["failed"].to_string();
    assert!(
        failed.contains("no sources configured") && failed.contains("ORT_DYLIB_PATH"),
        "{failed}"
    );
    assert!(failed.contains("/etc/default/sensebind"), "{failed}");
    assert!(r["onnxruntime"].is_null() && r["providers"].as_array().unwrap().is_empty());
    assert_eq!(r["memory"]["modalities"], serde_json::json!(["text"]));
    assert!(r["memory"]["estimate"]["weights_bytes"].as_u64().unwrap() > 6_000_000);
}

#[test]
fn query_tools_fail_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "nobody", free_port(), "");
    for args in [
        &["query", "list"][..],
        &["query", "remove", "x"],
        &["query", "add", "x", "--text", "y"],
    ] {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert_one_line_error(&out, &["no daemon", "sensebind/nobody"]);
    }
}

#[test]
fn a_preprocessing_contract_mismatch_stops_run_and_check() {
    require_ort();
    for cmd in ["check", "run"] {
        let out = Command::new(bin())
            .arg(cmd)
            .env("SENSEBIND__PREPROCESS__VISION__SIZE", "112")
            .env("SENSEBIND__BUS__LISTEN", format!("tcp/127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        // `run` logs its start-up at info; the error is the last line.
        assert!(!out.status.success(), "{cmd} must refuse");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        for needle in [
            "vision",
            "preprocess.vision.size",
            "[3, 2, 224, 224]",
            "[3, 2, 112, 112]",
        ] {
            assert!(last.contains(needle), "{cmd}: `{last}` should mention `{needle}`");
        }
    }
}

#[test]
fn embed_a_short_wav_gives_one_clip() {
    let l = embed_wav(0.3, 16000, 1);
    assert_eq!(l.len(), 1, "a 0.3 s file is one clip");
    assert!((norm(&l[0]["embedding"]) - 1.0).abs() < 1e-4);
    assert_eq!(l[0]["t_start"].as_f64().unwrap(), 0.0);
}

#[test]
fn embed_refuses_a_degenerate_image_without_allocating() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for (w, h, needle) in [
        (1, 20000, "limits.max_image_side"),
        (2000, 10, "limits.max_aspect_ratio"),
    ] {
        let png = dir.path().join(format!("{w}x{h}.png"));
        image::GrayImage::new(w, h).save(&png).unwrap();
        let out = Command::new(bin())
            .args(["embed", "--image"])
            .arg(&png)
            .env("SENSEBIND__ENGINE__PROVIDERS", "cpu")
            .output()
            .unwrap();
        assert_one_line_error(&out, &[png.to_str().unwrap(), needle]);
    }
}
