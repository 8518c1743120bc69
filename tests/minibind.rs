//! The built-in MiniBind pack means something, through the real paths:
//! - `sensebind embed` on held-out digit-world files (fonts, writers, voices and noise
//!   never used in training, written by tools/minibind/heldout.py): emergent
//!   zero-shot → text for every sensed modality, audio → image retrieval, and an
//!   embedding-sum compositional query;
//! - `sensebind embed` on real people (tests/fixtures/real-heldout: FSDD speakers and
//!   load_digits writers that training never sees, issue 23): emergent zero-shot → text
//!   for speech, per speaker, and for handwriting;
//! - the daemon on the bus, playing the demo's digit world: labels name the digit on
//!   screen, events start and end with it, the demo query fires on sevens only.

use crate::common;

use common::*;
use sensebind::sources::digit_world::{digit_at, WORDS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SENSED: [&str; 5] = ["image", "audio", "depth", "thermal", "imu"];

/// Least held-out zero-shot top-1 per modality (chance: 0.10): issue 8's goal, 0.90
/// everywhere. The committed pack reaches, through `sensebind embed`
/// (tools/minibind/eval, 200 per modality): image 0.995, audio 0.925, depth 0.990,
/// thermal 0.935, IMU 1.000; on this test's 30 fixed samples 29, 29, 30, 27 and 30.
/// A regression of the pack or of the daemon's preprocessing fails here.
const MIN_ZERO_SHOT: [(&str, f64); 5] = [
    ("image", 0.9),
    ("audio", 0.9),
    ("depth", 0.9),
    ("thermal", 0.9),
    ("imu", 0.9),
];

/// Least emergent zero-shot top-1 (→ the daemon's default digit labels; chance 0.10) on
/// the committed real held-out set, tests/fixtures/real-heldout (written by
/// tools/minibind/real_heldout.py; evaluation only, never trained or tuned on): 180 FSDD
/// recordings (6 speakers × 10 digits × repetitions 0-2, 8 kHz) and 200 load_digits
/// 8×8 scans (20 per digit). The committed pack (`sensebind embed`, first window, as
/// tools/minibind/eval's "real held-out people"): speech 143/180 = 0.794 (george 19/30,
/// jackson 28, lucas 26, nicolas 23, theo 24, yweweler 23), handwriting 195/200 = 0.975.
/// The second real-people pack: speech 132/180 (george 18/30), handwriting 195/200; the
/// first: speech 133/180, handwriting 152/200; the pack before real people were added:
/// speech 0.183 (lucas 3/30), handwriting 0.445. The floors sit a few recordings below
/// today's figures (issue 23's goals, on all of FSDD and load_digits: speech ≥ 0.80,
/// handwriting ≥ 0.90; tools/minibind/eval measures 0.812 and 0.981).
const MIN_REAL_SPEECH: f64 = 0.75;
/// Every FSDD speaker on their own (30 recordings each; 0.6 → at least 18 right).
const MIN_REAL_SPEECH_PER_SPEAKER: f64 = 0.6;
const MIN_REAL_HANDWRITING: f64 = 0.94;

/// The Python with the digit-world generator's packages (numpy, Pillow; espeak-ng on
/// PATH): $SENSEBIND_PYTHON, else the repository's .venv made by `tools/dev.sh setup`.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SENSEBIND_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the MiniBind tests need the digit-world generator's Python: run `tools/dev.sh setup` or set SENSEBIND_PYTHON"
    );
    venv
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

/// The daemon's default label of each digit: its prompts' mean, renormalised.
fn label_embeddings(text: &BTreeMap<String, Vec<f32>>) -> Vec<Vec<f32>> {
    (0..10)
        .map(|d| {
            let a = &text[&format!("the number {}", WORDS[d])];
            let b = &text[&format!("the digit {d}")];
            unit(&a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<_>>())
        })
        .collect()
}

/// `sensebind embed` on the given `(flag, path)` inputs plus the digit labels' prompts:
/// each input's (and prompt's) first embedding, unit length, by its `input` string.
fn embed_first_windows<'a>(inputs: impl IntoIterator<Item = (&'a str, &'a Path)>) -> BTreeMap<String, Vec<f32>> {
    let mut cmd = Command::new(bin());
    cmd.arg("embed");
    for (flag, path) in inputs {
        cmd.arg(flag).arg(path);
    }
    for (d, w) in WORDS.iter().enumerate() {
        cmd.args(["--text", &format!("the number {w}")]);
        cmd.args(["--text", &format!("the digit {d}")]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut by_input: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let v: Vec<f32> = j["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        by_input
            .entry(j["input"].as_str().unwrap().to_string())
            .or_insert(unit(&v));
    }
    by_input
}

#[test]
fn embed_recognises_held_out_digits_in_every_modality() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/minibind/heldout.py"))
        .arg(dir.path())
        .args(["--per-digit", "3", "--seed", "1"])
        .status()
        .unwrap();
    assert!(st.success(), "tools/minibind/heldout.py failed");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("index.json")).unwrap()).unwrap();
    let files = index["files"].as_array().unwrap();
    let flags: Vec<String> = files
        .iter()
        .map(|f| format!("--{}", f["modality"].as_str().unwrap()))
        .collect();
    let by_input = embed_first_windows(
        flags
            .iter()
            .zip(files)
            .map(|(flag, f)| (flag.as_str(), Path::new(f["path"].as_str().unwrap()))),
    );
    let labels = label_embeddings(&by_input);
    let mut emb: BTreeMap<&str, Vec<(usize, Vec<f32>)>> = BTreeMap::new();
    for f in files {
        let m = f["modality"].as_str().unwrap();
        let d = f["digit"].as_u64().unwrap() as usize;
        let e = by_input[f["path"].as_str().unwrap()].clone();
        emb.entry(SENSED.iter().find(|s| **s == m).unwrap())
            .or_default()
            .push((d, e));
    }
    let mut report = Vec::new();
    let mut acc = BTreeMap::new();
    for m in SENSED {
        let items = &emb[m];
        assert_eq!(items.len(), 30, "{m}: one embedding per file");
        let right = items
            .iter()
            .filter(|(d, e)| argmax(&labels.iter().map(|l| dot(e, l)).collect::<Vec<_>>()) == *d)
            .count();
        acc.insert(m, right as f64 / items.len() as f64);
        report.push(format!("{m} {right}/30"));
    }
    for (m, min) in MIN_ZERO_SHOT {
        assert!(
            acc[m] >= min,
            "{m} → text zero-shot top-1 {:.2} < {min} ({report:?})",
            acc[m]
        );
    }
    // Audio → image retrieval: the nearest held-out image shows the spoken digit.
    let images = &emb["image"];
    let hits = emb["audio"]
        .iter()
        .filter(|(d, a)| {
            let best = argmax(&images.iter().map(|(_, e)| dot(a, e)).collect::<Vec<_>>());
            images[best].0 == *d
        })
        .count();
    report.push(format!("audio→image {hits}/30"));
    // eval: 0.925 over 200 (chance 0.10); 28/30 here.
    assert!(hits >= 24, "audio → image retrieval {hits}/30 ({report:?})");
    // Compositional (embedding sum, as the seed): image of a + audio of b names a and b.
    let (mut ok, mut n) = (0, 0);
    for (a, ea) in images {
        for (b, eb) in emb["audio"].iter().step_by(7) {
            if a == b {
                continue;
            }
            let q = unit(&ea.iter().zip(eb).map(|(x, y)| x + y).collect::<Vec<_>>());
            let mut order: Vec<usize> = (0..10).collect();
            order.sort_by(|&i, &j| dot(&q, &labels[j]).total_cmp(&dot(&q, &labels[i])));
            ok += usize::from(order[..2].contains(a) && order[..2].contains(b));
            n += 1;
        }
    }
    report.push(format!("image+audio top-2 {ok}/{n}"));
    // eval: 0.865 over 200 (chance of naming both in the top 2: 1/45 ≈ 0.02); 118/135 here.
    assert!(ok as f64 >= 0.7 * n as f64, "compositional query {ok}/{n} ({report:?})");
    eprintln!("MiniBind held-out through `sensebind embed`: {}", report.join(", "));
}

/// Rows: truth 0-9, columns: predicted 0-9.
fn confusion_text(conf: &[[usize; 10]; 10]) -> String {
    let mut s = String::from("  confusion (rows: truth 0-9, columns: predicted 0-9):\n");
    for row in conf {
        s += "   ";
        for x in row {
            s += &format!(" {x:3}");
        }
        s += "\n";
    }
    s
}

#[test]
fn embed_names_real_people_digits() {
    require_ort();
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-heldout"));
    let files = |sub: &str, ext: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        v.sort();
        v
    };
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let digit = |p: &Path| name(p)[..1].parse::<usize>().unwrap();
    // FSDD: {digit}_{speaker}_{repetition}.wav; load_digits: {digit}_{row}.png.
    let speech: Vec<(PathBuf, usize, String)> = files("fsdd", "wav")
        .into_iter()
        .map(|p| {
            let speaker = name(&p).split('_').nth(1).unwrap().to_string();
            (p.clone(), digit(&p), speaker)
        })
        .collect();
    let hand: Vec<(PathBuf, usize)> = files("load_digits", "png")
        .into_iter()
        .map(|p| (p.clone(), digit(&p)))
        .collect();
    assert_eq!(
        (speech.len(), hand.len()),
        (180, 200),
        "the committed set is incomplete"
    );
    let by_input = embed_first_windows(
        speech
            .iter()
            .map(|(p, _, _)| ("--audio", p.as_path()))
            .chain(hand.iter().map(|(p, _)| ("--image", p.as_path()))),
    );
    let labels = label_embeddings(&by_input);
    let predict = |p: &Path| {
        let e = by_input
            .get(p.to_str().unwrap())
            .unwrap_or_else(|| panic!("no embedding for {}", p.display()));
        argmax(&labels.iter().map(|l| dot(e, l)).collect::<Vec<_>>())
    };
    let mut report = String::new();
    // Speech: overall, per speaker, confusion.
    let mut speech_conf = [[0usize; 10]; 10];
    let mut per_speaker: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (p, d, speaker) in &speech {
        let guess = predict(p);
        speech_conf[*d][guess] += 1;
        let s = per_speaker.entry(speaker).or_default();
        s.0 += usize::from(guess == *d);
        s.1 += 1;
    }
    let speech_right: usize = per_speaker.values().map(|s| s.0).sum();
    let speech_acc = speech_right as f64 / speech.len() as f64;
    report += &format!("speech (FSDD) {speech_right}/{} = {speech_acc:.3}:", speech.len());
    for (speaker, (right, n)) in &per_speaker {
        report += &format!(" {speaker} {right}/{n}");
    }
    report += "\n";
    report += &confusion_text(&speech_conf);
    // Handwriting.
    let mut hand_conf = [[0usize; 10]; 10];
    for (p, d) in &hand {
        hand_conf[*d][predict(p)] += 1;
    }
    let hand_right: usize = (0..10).map(|d| hand_conf[d][d]).sum();
    let hand_acc = hand_right as f64 / hand.len() as f64;
    report += &format!(
        "handwriting (load_digits) {hand_right}/{} = {hand_acc:.3}\n",
        hand.len()
    );
    report += &confusion_text(&hand_conf);
    eprintln!("MiniBind on real held-out people through `sensebind embed`:\n{report}");
    assert_eq!(per_speaker.len(), 6, "six FSDD speakers:\n{report}");
    assert!(
        speech_acc >= MIN_REAL_SPEECH,
        "real speech → text zero-shot top-1 {speech_acc:.3} < {MIN_REAL_SPEECH}\n{report}"
    );
    for (speaker, (right, n)) in &per_speaker {
        let acc = *right as f64 / *n as f64;
        assert!(
            acc >= MIN_REAL_SPEECH_PER_SPEAKER,
            "real speech of {speaker} → text zero-shot top-1 {acc:.3} < {MIN_REAL_SPEECH_PER_SPEAKER}\n{report}"
        );
    }
    assert!(
        hand_acc >= MIN_REAL_HANDWRITING,
        "real handwriting → text zero-shot top-1 {hand_acc:.3} < {MIN_REAL_HANDWRITING}\n{report}"
    );
}

/// Least fraction of each demo stream's windows labelled with the digit shown.
/// Issue 8's goal is 0.9. Measured with the committed pack: camera, fused and
/// microphone 60/60, depth 59/60 (its 8 as "three"), IMU 54/60
/// (the air-written 8 as "zero" on both showings), thermal 49–50/60 (its 1 as "seven",
/// its 7 as "nine"). The pack before it read the microphone 56/60; the one before that
/// depth 60/60 and thermal 53–54/60, and under the whole suite's load thermal 3–4
/// windows fewer: the floors are depth 0.85 (51/60) and thermal 0.75 (45/60).
/// All streams together must reach 0.9 (MIN_DEMO_ALL).
const MIN_DEMO: [(&str, f64); 6] = [
    // The fused stream: all five streams' embeddings of a window, summed.
    ("fused/fused", 0.9),
    ("vision/camera", 0.9),
    ("audio/microphone", 0.9),
    ("depth/depth", 0.85),
    ("thermal/thermal", 0.75),
    ("imu/imu", 0.85),
];
const MIN_DEMO_ALL: f64 = 0.9;

/// The demo's query (configs/demo.toml), so the test checks what users get.
fn demo_query() -> String {
    let t: toml::Table = sensebind::config::DEMO_TOML.parse().unwrap();
    let mut q = toml::Table::new();
    q.insert("seven".into(), t["queries"]["presets"]["seven"].clone());
    let mut p = toml::Table::new();
    p.insert("presets".into(), toml::Value::Table(q));
    let mut root = toml::Table::new();
    root.insert("queries".into(), toml::Value::Table(p));
    toml::to_string(&root).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_daemon_labels_its_digits_and_the_query_fires_on_sevens() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The client listens first and the daemon connects to it, so nothing the daemon
    // publishes is missed. 120 s of the digit world (every digit twice), as fast as
    // the machine goes.
    let z = listener(port).await;
    let sub = z.declare_subscriber("sensebind/digits/**").await.unwrap();
    let src = |id: &str, sensor: &str, extra: &str| {
        format!("[sources.{id}]\ntype = \"synthetic\"\nsensor = \"{sensor}\"\nscene = \"digits\"\nrealtime = false\nduration_s = 120.0\n{extra}\n")
    };
    let cfg = dir.path().join("sensebind.toml");
    std::fs::write(
        &cfg,
        format!(
            "[robot]\nid = \"digits\"\nstate_dir = \"{}\"\n[bus]\nlisten = []\nconnect = [\"tcp/127.0.0.1:{port}\"]\nwhen_full = \"block\"\n\
             [daemon]\nexit_when_sources_end = true\n[engine]\nwhen_full = \"block\"\n{}\n{}{}{}{}{}",
            dir.path().join("state").display(),
            demo_query(),
            src("camera", "camera", "width = 320\nheight = 240\nrate_hz = 10.0"),
            src("depth", "depth", "width = 320\nheight = 240\nrate_hz = 10.0"),
            src("thermal", "thermal", ""),
            src("microphone", "microphone", ""),
            src("imu", "imu", ""),
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut d = Daemon::start(&cfg, &log);
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();

    // (stream) → [(t_start, top label)]; events; alerts (t_start).
    let mut labels: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let mut events = Vec::new();
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            Instant::now() < deadline,
            "the demo run did not finish in 240 s:\n{}",
            dump()
        );
        match tokio::time::timeout(Duration::from_millis(500), sub.recv_async()).await {
            Ok(Ok(s)) => {
                let key = s.key_expr().as_str().to_string();
                if key.contains("/embedding/") || key.ends_with("/health") {
                    continue;
                }
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&s.payload().to_bytes()) else {
                    continue;
                };
                if key.contains("/labels/") {
                    let stream = format!("{}/{}", v["modality"].as_str().unwrap(), v["source"].as_str().unwrap());
                    let top = v["top"][0]["label"].as_str().unwrap().to_string();
                    labels
                        .entry(stream)
                        .or_default()
                        .push((v["t_start_ns"].as_i64().unwrap(), top));
                } else if key.contains("/events/") {
                    events.push(v);
                } else if key.contains("/alerts/") {
                    alerts.push(v);
                }
            }
            _ => {
                if !d.running() {
                    break;
                }
            }
        }
    }
    let status = d.child.wait().unwrap();
    assert!(
        status.success(),
        "the daemon must exit 0 when its sources end:\n{}",
        dump()
    );

    // Labels: the digit on screen. Issue 8's goal is ≥ 90 % of every stream's windows;
    // MIN_DEMO records what the committed pack reaches on the demo's assets.
    assert_eq!(
        labels.len(),
        6,
        "labels from all five streams and the fused one: {:?}",
        labels.keys()
    );
    let mut acc = BTreeMap::new();
    // Nothing may be lost: every queue blocks (the unpaced sources', `engine` and
    // `outputs` by default or above, the bus's here), so each stream labels the 60
    // windows of the 2 s grid over 120 s, each once, one after another.
    for (stream, ws) in &labels {
        let starts: std::collections::BTreeSet<i64> = ws.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            (ws.len(), starts.len()),
            (60, 60),
            "{stream}: {} labels for {} distinct windows, not the 60 of the grid",
            ws.len(),
            starts.len()
        );
        let first = *starts.first().unwrap();
        assert!(
            starts
                .iter()
                .enumerate()
                .all(|(i, t)| *t == first + i as i64 * 2_000_000_000),
            "{stream}: windows are not the consecutive 2 s grid: {starts:?}"
        );
        let right = ws.iter().filter(|(t, l)| *l == WORDS[digit_at(*t) as usize]).count();
        let wrong: Vec<String> = ws
            .iter()
            .filter(|(t, l)| *l != WORDS[digit_at(*t) as usize])
            .map(|(t, l)| format!("{} as {l}", WORDS[digit_at(*t) as usize]))
            .collect();
        eprintln!(
            "{stream}: {right}/{} windows labelled right; wrong: {wrong:?}",
            ws.len()
        );
        acc.insert(stream.clone(), right as f64 / ws.len() as f64);
    }
    for (stream, min) in MIN_DEMO {
        assert!(
            acc[stream] >= min,
            "{stream}: {:.2} of windows labelled right < {min} ({acc:?})",
            acc[stream]
        );
    }
    let (right, all) = labels.values().flatten().fold((0, 0), |(r, n), (t, l)| {
        (r + usize::from(*l == WORDS[digit_at(*t) as usize]), n + 1)
    });
    assert!(
        right as f64 >= MIN_DEMO_ALL * all as f64,
        "{right}/{all} windows labelled right ({acc:?})"
    );
    // Events start and end with the digit: a start at the first window of the digit's
    // showing, an end at its last window's end.
    let (mut starts, mut ends, mut right) = (0, 0, 0);
    for e in &events {
        let label = e["label"].as_str().unwrap();
        let start = e["start_ns"].as_i64().unwrap();
        let ok = match e["state"].as_str().unwrap() {
            "start" => {
                starts += 1;
                WORDS[digit_at(start) as usize] == label && digit_at(start - 1) as usize != digit_of(label)
            }
            _ => {
                ends += 1;
                let end = e["end_ns"].as_i64().unwrap();
                WORDS[digit_at(end - 1) as usize] == label && digit_at(end) as usize != digit_of(label)
            }
        };
        right += usize::from(ok);
    }
    eprintln!("events: {starts} starts, {ends} ends, {right} aligned with the digit");
    // Every stream shows 20 digits (fewer may be complete at the run's edges); the
    // committed pack starts ~96 events in all.
    assert!(starts >= 60, "event starts: {starts}");
    // Goal 0.9; measured 182–183 of 187–192 with the committed pack.
    assert!(
        right as f64 >= 0.9 * events.len() as f64,
        "{right}/{} events aligned",
        events.len()
    );
    // The query fires on sevens and nowhere else; each showing of 7 fires it.
    let on_seven = alerts
        .iter()
        .filter(|a| digit_at(a["t_start_ns"].as_i64().unwrap()) == 7)
        .count();
    eprintln!("alerts: {} ({on_seven} while a 7 is shown)", alerts.len());
    assert!(!alerts.is_empty(), "the query never fired");
    assert!(
        on_seven as f64 >= 0.95 * alerts.len() as f64,
        "{on_seven}/{} alerts on sevens",
        alerts.len()
    );
    let showings: std::collections::BTreeSet<i64> = alerts
        .iter()
        .map(|a| a["t_start_ns"].as_i64().unwrap() / 60_000_000_000)
        .collect();
    assert!(showings.len() >= 2, "both showings of 7 fire the query");
}

fn digit_of(word: &str) -> usize {
    WORDS.iter().position(|w| *w == word).unwrap_or(99)
}
