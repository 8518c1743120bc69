//! Fusion, richer queries and search, by meaning, with the built-in MiniBind pack.
//!
//! Two daemons replay the same recording (held-out digit-world files, never seen in
//! training): a thermal camera showing 3, 5, 3, 8 and a microphone hearing 1, 3, 3, 4,
//! six seconds each (three 2 s windows). So a three is seen alone (segment 0), heard
//! alone (1), both (2), and neither (3). Thresholds sit midway between the cosines of
//! threes and of the other digits, measured with `sensebind embed` on the same files.

use crate::common;
use sensebind::bus::msg::{AlertMsg, JsonMsg, SearchHit};
use sensebind::queries::QuerySpec;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const THERMAL: [usize; 4] = [3, 5, 3, 8];
const AUDIO: [usize; 4] = [1, 3, 3, 4];
/// Windows per segment (6 s, 2 s windows every 2 s).
const PER: i64 = 3;

fn python() -> PathBuf {
    std::env::var("SENSEBIND_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `sensebind embed` of each file / text: input → unit vector.
fn embed(args: &[String]) -> BTreeMap<String, Vec<f32>> {
    let out = Command::new(bin()).arg("embed").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            let v = j["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (j["input"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Midway between the least cosine of `yes` and the greatest of `no` (asserting they
/// are apart).
fn midway(what: &str, yes: &[f32], no: &[f32]) -> f32 {
    let lo = yes.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = no.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(
        lo > hi + 0.02,
        "{what}: threes {yes:?} do not stand apart from the others {no:?}"
    );
    (lo + hi) / 2.0
}

struct Recording {
    thermal_dir: PathBuf,
    wav: PathBuf,
    /// The example clip: a three by another voice than the recording's.
    example: PathBuf,
    thr_thermal: f32,
    thr_audio: f32,
    thr_example: f32,
    text3: Vec<f32>,
}

fn make_recording(dir: &Path) -> Recording {
    let files = dir.join("heldout");
    let st = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/minibind/heldout.py"))
        .arg(&files)
        .args(["--per-digit", "3", "--seed", "5", "--modalities", "thermal,audio"])
        .status()
        .unwrap();
    assert!(st.success(), "tools/minibind/heldout.py failed");
    let f =
        |m: &str, d: usize, i: usize| files.join(format!("{m}_{d}_{i}.{}", if m == "audio" { "wav" } else { "png" }));
    // Thermal frames at 1 fps; audio: the 2 s clip of each window.
    let thermal_dir = dir.join("thermal");
    std::fs::create_dir_all(&thermal_dir).unwrap();
    let mut n = 0;
    for d in THERMAL {
        for _ in 0..PER * 2 {
            std::fs::copy(f("thermal", d, 2), thermal_dir.join(format!("f{n:03}.png"))).unwrap();
            n += 1;
        }
    }
    let wav = dir.join("mic.wav");
    let mut w: Option<hound::WavWriter<_>> = None;
    for d in AUDIO {
        for _ in 0..PER {
            let mut r = hound::WavReader::open(f("audio", d, 2)).unwrap();
            let spec = r.spec();
            let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
            assert_eq!(samples.len() as u32, spec.sample_rate * 2, "2 s clips");
            let w = w.get_or_insert_with(|| hound::WavWriter::create(&wav, spec).unwrap());
            samples.iter().for_each(|s| w.write_sample(*s).unwrap());
        }
    }
    w.unwrap().finalize().unwrap();
    // Cosines of the very files the recording is made of.
    let text = "the number three".to_string();
    let mut args = vec!["--text".to_string(), text.clone()];
    for d in [1, 3, 4, 5, 8] {
        for (m, i) in [("thermal", 2), ("audio", 2), ("audio", 0)] {
            args.push(format!("--{m}"));
            args.push(f(m, d, i).display().to_string());
        }
    }
    let e = embed(&args);
    let v = |m: &str, d: usize, i: usize| e[&f(m, d, i).display().to_string()].clone();
    let text3 = e[&text].clone();
    let thr_thermal = midway(
        "thermal vs text",
        &[dot(&v("thermal", 3, 2), &text3)],
        &[5, 8].map(|d| dot(&v("thermal", d, 2), &text3)),
    );
    let thr_audio = midway(
        "audio vs text",
        &[dot(&v("audio", 3, 2), &text3)],
        &[1, 4].map(|d| dot(&v("audio", d, 2), &text3)),
    );
    let ex = v("audio", 3, 0);
    let thr_example = midway(
        "audio example",
        &[dot(&v("audio", 3, 2), &ex)],
        &[1, 4].map(|d| dot(&v("audio", d, 2), &ex)),
    );
    eprintln!("thresholds: thermal {thr_thermal:.3}, audio {thr_audio:.3}, example {thr_example:.3}");
    Recording {
        thermal_dir,
        wav,
        example: f("audio", 3, 0),
        thr_thermal,
        thr_audio,
        thr_example,
        text3,
    }
}

/// A robot's config: its bus with the default settings but for the one router it
/// connects to (it listens nowhere, so everything it exchanges crosses the router).
fn daemon_config(dir: &Path, robot: &str, router: u16, rec: &Recording) -> PathBuf {
    use base64::Engine as _;
    let example = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&rec.example).unwrap());
    let path = dir.join(format!("{robot}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[robot]
id = "{robot}"
state_dir = "{state}"
[window]
length_s = 2.0
hop_s = 2.0
[bus]
listen = []
connect = ["tcp/127.0.0.1:{router}"]
[engine]
when_full = "block"
[health]
interval_s = 0.5
[queries.presets.both]
all = [
  {{ text = "the number three", modalities = ["thermal"], threshold = {tt} }},
  {{ text = "the number three", modalities = ["audio"], threshold = {ta} }},
]
cooldown_s = 0.0
[queries.presets.voice3]
example = {{ media = "{example}", mime = "audio/wav" }}
modalities = ["audio"]
threshold = {te}
cooldown_s = 0.0
[sources.thermal]
type = "file"
sensor = "thermal"
path = "{thermal}"
fps = 1.0
pace = "fast"
start_ns = 0
[sources.mic]
type = "file"
sensor = "microphone"
path = "{wav}"
pace = "fast"
start_ns = 0
"#,
            state = dir.join(format!("state-{robot}")).display(),
            tt = rec.thr_thermal,
            ta = rec.thr_audio,
            te = rec.thr_example,
            thermal = rec.thermal_dir.display(),
            wav = rec.wav.display(),
        ),
    )
    .unwrap();
    path
}

/// `sensebind search` through a tool config that reaches both daemons.
fn search(cli_cfg: &Path, args: &[&str]) -> (bool, Vec<SearchHit>, String) {
    let out = Command::new(bin())
        .args(["--config"])
        .arg(cli_cfg)
        .arg("search")
        .args(args)
        .output()
        .unwrap();
    let hits = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status.success(),
        hits,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn segment(seq: i64) -> usize {
    (seq / PER) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_queries_audio_examples_search_and_fleet_search_mean_what_they_say() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let rec = make_recording(dir.path());
    // The fleet's topology as deployed: a zenoh router; two robots and the operator
    // (this test's session, and the command line) connect to it with the default
    // `[bus]` settings and nothing else.
    let hub = free_port();
    let _router = zenoh_router(hub).await;
    let z = router_client(hub).await;
    let sub = z.declare_subscriber("sensebind/**").await.unwrap();
    let (c1, c2) = (
        daemon_config(dir.path(), "r1", hub, &rec),
        daemon_config(dir.path(), "r2", hub, &rec),
    );
    let mut d1 = Daemon::start(&c1, &dir.path().join("r1.log"));
    let mut d2 = Daemon::start(&c2, &dir.path().join("r2.log"));
    let dump = |r: &str| std::fs::read_to_string(dir.path().join(format!("{r}.log"))).unwrap_or_default();

    // Collect until each robot has published its 12 + 12 windows and 12 fused ones.
    let mut embeddings: BTreeMap<(String, String, i64), Vec<f32>> = BTreeMap::new();
    let mut alerts: Vec<AlertMsg> = Vec::new();
    let mut fused: Vec<sensebind::bus::FusedMsg> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = |e: &BTreeMap<(String, String, i64), Vec<f32>>, f: &[sensebind::bus::FusedMsg]| {
        e.keys().filter(|k| k.0 == "r1").count() >= 24 && f.iter().filter(|m| m.robot == "r1").count() >= 12
    };
    while !done(&embeddings, &fused) {
        assert!(Instant::now() < deadline, "the replay did not finish:\n{}", dump("r1"));
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), sub.recv_async()).await else {
            assert!(
                d1.running() && d2.running(),
                "a daemon exited:\n{}\n{}",
                dump("r1"),
                dump("r2")
            );
            continue;
        };
        let key = s.key_expr().as_str().to_string();
        let body = s.payload().to_bytes();
        if key.ends_with("/embedding/fused") {
            fused.push(sensebind::bus::FusedMsg::from_cbor(&body).unwrap());
        } else if key.contains("/embedding/") {
            let m = sensebind::bus::EmbeddingMsg::from_cbor(&body).unwrap();
            embeddings.insert(
                (m.robot.clone(), format!("{}/{}", m.modality, m.source), m.seq),
                m.vector(),
            );
        } else if key.starts_with("sensebind/r1/alerts/") {
            alerts.push(AlertMsg::from_json(&body).unwrap());
        }
    }
    // Late alerts of the last windows (health keeps arriving: a fixed spell).
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(s)) = tokio::time::timeout(until.saturating_duration_since(Instant::now()), sub.recv_async()).await
    {
        if s.key_expr().as_str().starts_with("sensebind/r1/alerts/") {
            alerts.push(AlertMsg::from_json(&s.payload().to_bytes()).unwrap());
        }
    }

    // Fused: one per window, both streams in it, complete.
    let f1: Vec<_> = fused.iter().filter(|m| m.robot == "r1").collect();
    assert_eq!(f1.len(), 12, "one fused window per seq");
    assert!(
        f1.iter().filter(|m| m.complete && m.members.len() == 2).count() >= 11,
        "fused windows hold both streams: {:?}",
        f1.iter()
            .map(|m| (m.seq, m.members.len(), m.complete))
            .collect::<Vec<_>>()
    );

    // `all`: fires only where a three is both seen and heard (segment 2).
    let seqs = |id: &str| -> Vec<i64> { alerts.iter().filter(|a| a.query_id == id).map(|a| a.seq).collect() };
    let both = seqs("both");
    eprintln!("`all` alerts at {both:?}; example alerts at {:?}", seqs("voice3"));
    assert!(!both.is_empty(), "the all query never fired:\n{}", dump("r1"));
    assert!(
        both.iter().all(|s| segment(*s) == 2),
        "the all query fired outside segment 2: {both:?}"
    );
    let a = alerts.iter().find(|a| a.query_id == "both").unwrap();
    assert_eq!(a.conditions.as_ref().map(|c| c.len()), Some(2), "{a:?}");
    // The audio example (a three, another voice) fires on the recording's threes.
    let voice = seqs("voice3");
    assert!(
        voice.iter().all(|s| matches!(segment(*s), 1 | 2)),
        "example query off the threes: {voice:?}"
    );
    assert!(
        voice.len() >= 5,
        "the example query missed spoken threes: {voice:?} of 6"
    );

    // Search: threes first, with the cosines a client computes.
    let cli = dir.path().join("cli.toml");
    std::fs::write(
        &cli,
        format!("[robot]\nid = \"r1\"\n[bus]\nlisten = []\nconnect = [\"tcp/127.0.0.1:{hub}\"]\n"),
    )
    .unwrap();
    let args = [
        "the number three",
        "--k",
        "6",
        "--json",
        "--modalities",
        "thermal,audio",
    ];
    let (ok, hits, err) = search(&cli, &args);
    assert!(ok, "{err}");
    assert_eq!(hits.len(), 6, "{err}");
    let before_kill = hits.clone();
    for h in &hits {
        let seq = h.seq;
        let digit = if h.modality.to_string() == "thermal" {
            THERMAL[segment(seq)]
        } else {
            AUDIO[segment(seq)]
        };
        assert_eq!(digit, 3, "a top hit is not a three: {h:?}");
        assert_eq!(h.robot, "r1");
        let key = ("r1".to_string(), format!("{}/{}", h.modality, h.source), seq);
        let client = dot(&embeddings[&key], &rec.text3);
        assert!((h.score - client).abs() < 1e-5, "score {h:?} vs {client}");
    }
    let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    // By example window: a fused window of segment 2 finds itself and its twins (the
    // segment's three windows hold the same recording), each at cosine 1.
    let (ok, hits, err) = search(
        &cli,
        &["--example", "fused/7", "--k", "3", "--json", "--modalities", "fused"],
    );
    assert!(ok, "{err}");
    let mut found: Vec<i64> = hits.iter().map(|h| h.seq).collect();
    found.sort();
    assert_eq!(found, [6, 7, 8], "{hits:?}");
    assert!(hits.iter().all(|h| h.score > 0.999), "{hits:?}");
    // Fleet: both robots answer, merged best first. The two replay the same recording,
    // so their six thermal threes tie: k = 12 holds both robots' windows.
    let (ok, hits, err) = search(&cli, &["the number three", "--k", "12", "--json", "--robot", "*"]);
    assert!(ok, "{err}");
    assert_eq!(hits.len(), 12, "{hits:?}");
    let robots: std::collections::BTreeSet<&str> = hits.iter().map(|h| h.robot.as_str()).collect();
    assert_eq!(robots.into_iter().collect::<Vec<_>>(), ["r1", "r2"], "{hits:?}");
    let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "merged best first: {scores:?}");
    // Errors say what is wrong.
    let (ok, _, err) = search(&cli, &["x", "--k", "100000", "--robot", "r1"]);
    assert!(!ok && err.contains("history.max_k"), "{err}");
    let (ok, _, err) = search(&cli, &["x", "--robot", "nobody"]);
    assert!(!ok && err.contains("no daemon answers"), "{err}");

    // The command line registers every form; the daemon embeds the WAV itself.
    let query = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&cli)
            .args(["query"])
            .args(args)
            .args(["--robot", "r1"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let example = rec.example.display().to_string();
    let (ok, out) = query(&["add", "ex", "--audio", &example, "--modalities", "audio,fused"]);
    assert!(ok && out.contains("[audio/wav example"), "{out}");
    let (ok, out) = query(&[
        "add",
        "seen-and-heard",
        "--within",
        "1",
        "--all",
        "text=the number three;modalities=thermal;threshold=0.5",
        "--all",
        &format!("audio={example};modalities=audio"),
    ]);
    assert!(
        ok && out.contains("all of: the number three; [audio/wav example"),
        "{out}"
    );
    let (ok, out) = query(&["add", "sum", "--text", "the number three", "--window", "fused/7"]);
    assert!(ok && out.contains("\"the number three\" + [window fused/7]"), "{out}");
    let (ok, out) = query(&["list"]);
    assert!(ok, "{out}");
    let kinds: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<QuerySpec>(l).ok())
        .map(|q| (q.id, format!("{:?}", q.kind).to_lowercase()))
        .collect();
    for want in [
        ("ex", "example"),
        ("seen-and-heard", "all"),
        ("sum", "terms"),
        ("both", "all"),
    ] {
        assert!(kinds.contains(&(want.0.into(), want.1.into())), "{want:?} in {kinds:?}");
    }
    // Refusals name what is wrong: locally, and from the daemon.
    let (ok, out) = query(&["add", "bad", "--all", "colour=red"]);
    assert!(!ok && out.contains("unknown key `colour`"), "{out}");
    let (ok, out) = query(&["add", "bad", "--window", "audio/nowhere/99999"]);
    assert!(!ok && out.contains("no such window in the history"), "{out}");

    // The history survives kill -9 and a restart: reloaded, whole, before any new window.
    assert_eq!(d2.stop_within(Duration::from_secs(10)), Some(0), "r2:\n{}", dump("r2"));
    d1.child.kill().unwrap();
    d1.child.wait().unwrap();
    // Restarted with an IMU recording instead of the replays, so no new thermal or
    // audio window joins the reloaded ones. It is stamped from 0 like them: a window on
    // today's clock would make the reloaded 1970 windows older than `history.retention`
    // and expire them (a synthetic IMU did, whenever its first window closed before
    // the search below ran).
    let text = std::fs::read_to_string(&c1).unwrap();
    let cut = text.find("[queries.presets.both]").unwrap();
    let imu_csv = dir.path().join("imu.csv");
    let mut csv = String::from("t_s,ax,ay,az,gx,gy,gz\n");
    for i in 0..400 {
        csv.push_str(&format!("{:.3},0.1,0.2,9.8,0.01,0.0,-0.01\n", i as f64 * 0.005));
    }
    std::fs::write(&imu_csv, csv).unwrap();
    let c1b = dir.path().join("r1b.toml");
    std::fs::write(
        &c1b,
        format!(
            "{}[sources.imu]\ntype = \"file\"\nsensor = \"imu\"\npath = \"{}\"\npace = \"fast\"\nstart_ns = 0\n",
            &text[..cut],
            imu_csv.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("r1b.log");
    let mut d1 = Daemon::start(&c1b, &log);
    let t0 = Instant::now();
    let loaded = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("history_loaded")) {
            break l.to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no history_loaded in:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        loaded.contains("windows=36"),
        "12 thermal, 12 audio and 12 fused windows reloaded: {loaded}"
    );
    // The same search gives the same hits and scores as before the kill.
    // (took_ms and the rest of a reply differ; the hits may not.)
    let strip = |hits: &[SearchHit]| -> Vec<SearchHit> { hits.to_vec() };
    // (The router may still route to the killed session for its lease: ask again.)
    let mut tries = Vec::new();
    for _ in 0..20 {
        let (ok, hits, err) = search(&cli, &[&args[..], &["--robot", "r1"]].concat());
        if ok && strip(&hits) == strip(&before_kill) {
            break;
        }
        tries.push(format!("ok={ok} hits={} {}", hits.len(), err.trim()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        tries.len() < 20,
        "search after kill -9 and restart never gave the same hits: {tries:#?}\nr1 after restart:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let code = d1.stop_within(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "r1 after restart:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
