//! End to end: the daemon on its embedded demo config (synthetic sensors, built-in
//! tiny pack) publishes on zenoh and serves queries; seen from a Rust client.

use crate::common;

use common::*;
use sensebind::bus::msg::{AlertMsg, EventState, HealthMsg, JsonMsg, Message, QueryErrorMsg, StreamHealth};
use sensebind::bus::EmbeddingMsg;
use sensebind::modality::Target;
use sensebind::queries::QuerySpec;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MODALITIES: [&str; 5] = ["vision", "audio", "depth", "thermal", "imu"];

/// The demo source that feeds each modality.
fn source_of(m: &str) -> &'static str {
    match m {
        "vision" => "camera",
        "audio" => "microphone",
        "depth" => "depth",
        "thermal" => "thermal",
        _ => "imu",
    }
}

/// Every stream's counters in a health message: (source, modality, stream).
fn streams(h: &HealthMsg) -> Vec<(String, String, StreamHealth)> {
    let mut v = Vec::new();
    for (id, src) in &h.sources {
        for (m, st) in &src.streams {
            v.push((id.clone(), m.clone(), st.clone()));
        }
    }
    v
}

/// The text embedding `sensebind embed` gives (the built-in pack), to check alert scores.
fn text_embedding(text: &str) -> Vec<f32> {
    let out = std::process::Command::new(bin())
        .args(["embed", "--text", text])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_end_to_end_over_zenoh() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Every top label starts an event at once (3 labels: the top prob is >= 1/3).
    let cfg = write_config(
        dir.path(),
        "itest",
        port,
        "[events]\nstart_prob = 0.33\nend_prob = 0.0\nmin_windows = 1\n",
    );
    let log = dir.path().join("daemon.log");
    let mut d = Daemon::start(&cfg, &log);
    let dump = |log: &std::path::Path| std::fs::read_to_string(log).unwrap_or_default();

    let z = client(port).await;
    let sub = z.declare_subscriber("sensebind/itest/**").await.unwrap();
    let manifest = sensebind::pack::Pack::builtin().unwrap();

    // 1. Embeddings of all five modalities, labels, health.
    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut labels = 0;
    let mut events = 0;
    let mut health = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), sub.recv_async()).await else {
            assert!(d.running(), "daemon exited:\n{}", dump(&log));
            continue;
        };
        let key = s.key_expr().as_str().to_string();
        let body = s.payload().to_bytes().to_vec();
        if key == "sensebind/itest/embedding/fused" {
            // The fused stream: every stream's window in one (tests/fusion_search.rs).
            let f = sensebind::bus::FusedMsg::from_cbor(&body).expect("CBOR fused embedding");
            assert_eq!((f.modality.as_str(), f.robot.as_str()), ("fused", "itest"));
        } else if let Some(rest) = key.strip_prefix("sensebind/itest/embedding/") {
            assert_eq!(s.encoding().to_string(), "application/cbor");
            let msg = EmbeddingMsg::from_cbor(&body).expect("CBOR embedding");
            let m = msg.modality.as_str();
            assert_eq!(rest, format!("{m}/{}", source_of(m)), "key names modality and source");
            assert_eq!(msg.source, source_of(m));
            assert_eq!(msg.robot, "itest");
            let spec = manifest.spec(msg.modality).unwrap();
            assert_eq!(msg.dim as usize, spec.dim);
            let v = msg.vector();
            assert_eq!(v.len(), spec.dim);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{m} norm {norm}");
            assert_eq!(msg.t_end_ns - msg.t_start_ns, 2_000_000_000);
            assert!((msg.scale - spec.logit_scale).abs() < 1e-6);
            seqs.entry(m.to_string()).or_default().push(msg.seq);
        } else if key.starts_with("sensebind/itest/labels/") {
            let Ok(Message::Labels(j)) = Message::decode(&key, &body) else {
                panic!("{key}: not a labels message")
            };
            if j.modality == Target::Fused {
                assert_eq!(
                    (key.as_str(), j.source.as_str()),
                    ("sensebind/itest/labels/fused", "fused")
                );
            } else {
                let m = j.modality.to_string();
                assert_eq!(key, format!("sensebind/itest/labels/{m}/{}", source_of(&m)));
                assert_eq!(j.source, source_of(&m));
            }
            assert!(!j.top.is_empty());
            let probs: Vec<f32> = j.top.iter().map(|t| t.prob).collect();
            assert!(probs.windows(2).all(|w| w[0] >= w[1]), "top is sorted: {probs:?}");
            assert!(probs.iter().sum::<f32>() <= 1.0 + 1e-5 && probs[0] > 0.0);
            labels += 1;
        } else if key.starts_with("sensebind/itest/events/") {
            let Ok(Message::Event(j)) = Message::decode(&key, &body) else {
                panic!("{key}: not an event")
            };
            if j.modality == Target::Fused {
                assert_eq!(key, "sensebind/itest/events/fused");
            } else {
                let m = j.modality.to_string();
                assert_eq!(key, format!("sensebind/itest/events/{m}/{}", source_of(&m)));
            }
            assert!(j.prob >= 0.33 || j.state == EventState::End, "{j:?}");
            events += 1;
        } else if key == "sensebind/itest/health" {
            health = Some(HealthMsg::from_json(&body).expect("health"));
        }
        let done = MODALITIES.iter().all(|m| seqs.get(*m).is_some_and(|v| v.len() >= 2))
            && labels > 0
            && events > 0
            && health.is_some();
        if done {
            break;
        }
    }
    for m in MODALITIES {
        let v = seqs
            .get(m)
            .unwrap_or_else(|| panic!("no {m} embedding; daemon log:\n{}", dump(&log)));
        assert!(v.len() >= 2, "{m}: {v:?}");
        assert!(v.windows(2).all(|w| w[1] > w[0]), "{m} seq must increase: {v:?}");
    }
    assert!(labels > 0, "no labels");
    assert!(events > 0, "no events on events/<modality>/<source>");
    let h = health.expect("no health");
    assert_eq!(h.robot, "itest");
    for m in MODALITIES {
        let src = &h.sources[source_of(m)];
        let st = &src.streams[m];
        assert!(st.windows_in >= st.windows_out, "{h:?}");
        assert_eq!(src.clock.as_deref(), Some("realtime"));
    }

    // 2. Queries registered over the bus: q1 always matches (threshold -1, no
    // cooldown), q4 has a 4 s cooldown, q5 can never match (threshold 1).
    z.put(
        "sensebind/itest/queries/q1",
        r#"{"text":"a dog barking","threshold":-1.0,"modalities":["audio"],"sources":["microphone"],"cooldown_s":0}"#,
    )
    .await
    .unwrap();
    z.put(
        "sensebind/itest/queries/q4",
        r#"{"text":"a dog barking","threshold":-1.0,"modalities":["audio"],"cooldown_s":4}"#,
    )
    .await
    .unwrap();
    z.put(
        "sensebind/itest/queries/q5",
        r#"{"text":"a dog barking","threshold":1.0,"modalities":["audio"]}"#,
    )
    .await
    .unwrap();
    z.put(
        "sensebind/itest/queries/q6",
        r#"{"text":"a dog barking","threshold":-1.0,"sources":["nowhere"]}"#,
    )
    .await
    .unwrap();
    // A put on a key that is not a valid id gets an error reply too.
    z.put("sensebind/itest/queries/a/b", r#"{"text":"x"}"#).await.unwrap();
    // 3. A malformed query gets an error reply, and the daemon keeps running.
    z.put("sensebind/itest/queries/bad", "{not json").await.unwrap();
    let text = text_embedding("a dog barking");
    let mut audio_vec: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
    let mut alerts: BTreeMap<String, Vec<AlertMsg>> = BTreeMap::new();
    let mut error = None;
    let mut bad_key = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline
        && (alerts.get("q1").map_or(0, |v| v.len()) < 8 || error.is_none() || bad_key.is_none())
    {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), sub.recv_async()).await else {
            continue;
        };
        let key = s.key_expr().as_str().to_string();
        let bytes = s.payload().to_bytes().to_vec();
        if key == "sensebind/itest/embedding/audio/microphone" {
            let msg = EmbeddingMsg::from_cbor(&bytes).unwrap();
            audio_vec.insert(msg.seq, msg.vector());
            continue;
        }
        if let Some(id) = key.strip_prefix("sensebind/itest/alerts/") {
            let a = AlertMsg::from_json(&bytes).expect("alert");
            alerts.entry(id.to_string()).or_default().push(a);
        } else if key == "sensebind/itest/errors/queries/bad" {
            error = Some(QueryErrorMsg::from_json(&bytes).expect("query error"));
        } else if key == "sensebind/itest/errors/queries/a/b" {
            bad_key = Some(QueryErrorMsg::from_json(&bytes).expect("query error"));
        }
    }
    let q1 = alerts
        .get("q1")
        .unwrap_or_else(|| panic!("no alert; log:\n{}", dump(&log)));
    assert!(q1.len() >= 8, "q1 alerts: {}", q1.len());
    let mut checked = 0;
    for alert in q1 {
        assert_eq!(alert.query_id, "q1");
        assert_eq!(alert.modality.to_string(), "audio");
        assert_eq!(alert.source, "microphone");
        assert_eq!(alert.text, "a dog barking");
        assert_eq!(alert.t_end_ns - alert.t_start_ns, 2_000_000_000);
        // The score is the cosine of this window's embedding and the text's.
        if let Some(v) = audio_vec.get(&alert.seq) {
            let cos: f32 = v.iter().zip(&text).map(|(a, b)| a * b).sum();
            let score = alert.score;
            assert!((score - cos).abs() < 1e-4, "alert score {score} vs cosine {cos}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "alert scores checked against embeddings: {checked}");
    // q1 fires on consecutive windows; q4 at most once per 4 s of sensor time.
    let q4 = &alerts["q4"];
    assert!(!q4.is_empty());
    let ends: Vec<i64> = q4.iter().map(|a| a.t_end_ns).collect();
    assert!(
        ends.windows(2).all(|w| w[1] - w[0] >= 4_000_000_000),
        "cooldown violated: {ends:?}"
    );
    assert!(q1.len() >= 2 * q4.len(), "q1 {} vs q4 {}", q1.len(), q4.len());
    assert!(!alerts.contains_key("q5"), "a threshold of 1 never matches");
    assert!(!alerts.contains_key("q6"), "a query for another source never matches");
    let error = error.expect("no error reply for a malformed query");
    assert_eq!((error.query_id.as_str(), error.code.as_str()), ("bad", "invalid"));
    assert!(error.error.contains("expected JSON"), "{error:?}");
    let bad_key = bad_key.expect("no error reply for queries/a/b");
    assert!(bad_key.error.contains("bad query id"), "{bad_key:?}");
    assert!(d.running(), "daemon died after a bad query");

    // `get queries/**` lists the registered queries.
    z.delete("sensebind/itest/queries/q4").await.unwrap();
    z.delete("sensebind/itest/queries/q5").await.unwrap();
    z.delete("sensebind/itest/queries/q6").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = list(&z).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, "q1");

    // Counters add up: after SIGTERM the final health has, for every stream,
    // windows_in = windows_out + every drop.
    let health_sub = z.declare_subscriber("sensebind/itest/health").await.unwrap();
    while health_sub.try_recv().ok().flatten().is_some() {}

    // 4. After a restart the query is still registered.
    let t0 = Instant::now();
    d.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let mut last = None;
    while let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(500), health_sub.recv_async()).await {
        last = Some(HealthMsg::from_json(&s.payload().to_bytes()).unwrap());
    }
    let last = last.expect("a final health at shutdown");
    for (id, m, st) in streams(&last) {
        assert!(st.windows_in > 0, "{id}/{m}: {st:?}");
        assert_eq!(
            st.windows_in,
            st.windows_out + st.windows_dropped.total(),
            "{id}/{m}: {st:?}"
        );
    }
    let log_text = dump(&log);
    assert!(!log_text.contains("panicked"), "{log_text}");
    let log2 = dir.path().join("daemon2.log");
    let _d2 = Daemon::start(&cfg, &log2);
    let mut again = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        again = list(&z).await;
        if !again.is_empty() {
            break;
        }
    }
    assert_eq!(again.len(), 1, "query lost across restart; log:\n{}", dump(&log2));
    assert_eq!(again[0].text, "a dog barking");
    assert_eq!(again[0].threshold, -1.0);

    // 5. The `sensebind query` tool manages queries over the same bus.
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .args(["query"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = tool(&[
        "add",
        "q2",
        "--text",
        "a red car",
        "--threshold",
        "0.3",
        "--modalities",
        "vision,thermal",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = tool(&["list"]);
    assert!(ok && text.contains("\"q1\"") && text.contains("a red car"), "{text}");
    let (ok, text) = tool(&["add", "q3", "--text", "x", "--threshold", "9"]);
    assert!(!ok && text.contains("threshold"), "{text}");
    let (ok, text) = tool(&["remove", "q2"]);
    assert!(ok, "{text}");
    assert_eq!(list(&z).await.len(), 1);
    // Failures are reported as failures.
    let (ok, text) = tool(&["remove", "nope"]);
    assert!(!ok && text.contains("not registered"), "{text}");
    let (ok, text) = tool(&["add", "q1", "--text", "y", "--modalities", "vision", "--threshold", "2"]);
    assert!(
        !ok && text.contains("threshold"),
        "replacing with a bad query must fail: {text}"
    );
    assert_eq!(list(&z).await[0].text, "a dog barking", "the old q1 is kept");
}

/// What the daemon lists, through the library's client.
async fn list(z: &zenoh::Session) -> Vec<QuerySpec> {
    sensebind::client::Client::new(z.clone(), "sensebind")
        .list("itest", None)
        .await
        .unwrap()
}

/// A 16 kHz mono WAV of `secs` seconds, each second different (a tone a step higher
/// each second over noise of varying level, from a fixed seed), so that its windows
/// score apart.
fn varied_wav(path: &std::path::Path, secs: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut x: u32 = 12_345;
    for k in 0..secs {
        let f = 200.0 * 1.3f64.powi((k % 9) as i32);
        let noise = ((k * 7) % 5) as f64 / 5.0;
        for i in 0..16_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let n = (x >> 8) as f64 / (1u32 << 24) as f64 * 2.0 - 1.0;
            let t = i as f64 / 16_000.0;
            let s = 0.5 * (2.0 * std::f64::consts::PI * f * t).sin() + 0.4 * noise * n;
            w.write_sample((s * 20_000.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// One replay of `wav` (unpaced, sensor time from 0, so every run cuts the same
/// windows) by a daemon that exits when its source ends, with the preset `every`
/// (threshold -1: fires on every window, with its cosine) and, when given, `median`
/// at `threshold`; both "a dog barking" on audio, no cooldown. Every alert it
/// published: query id → seq → alert.
async fn replay_alerts(
    dir: &std::path::Path,
    run: &str,
    wav: &std::path::Path,
    threshold: Option<f32>,
) -> BTreeMap<String, BTreeMap<i64, AlertMsg>> {
    let port = free_port();
    // The f32 threshold written as the f64 of the same value: read back exactly.
    let median = threshold.map_or(String::new(), |t| {
        format!(
            "[queries.presets.median]\ntext = \"a dog barking\"\nmodalities = [\"audio\"]\nthreshold = {}\ncooldown_s = 0.0\n",
            f64::from(t)
        )
    });
    let cfg = dir.join(format!("{run}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[robot]
id = "thr"
state_dir = "{state}"
[window]
length_s = 2.0
hop_s = 1.0
[bus]
listen = []
connect = ["tcp/127.0.0.1:{port}"]
when_full = "block"
[daemon]
exit_when_sources_end = true
[engine]
when_full = "block"
max_batch = 1
[queries.presets.every]
text = "a dog barking"
modalities = ["audio"]
threshold = -1.0
cooldown_s = 0.0
{median}
[sources.mic]
type = "file"
sensor = "microphone"
path = "{wav}"
pace = "fast"
start_ns = 0
"#,
            state = dir.join(format!("state-{run}")).display(),
            wav = wav.display(),
        ),
    )
    .unwrap();
    // The test listens and the daemon connects to it: no alert is missed.
    let z = listener(port).await;
    let sub = z.declare_subscriber("sensebind/thr/alerts/**").await.unwrap();
    let log = dir.join(format!("{run}.log"));
    let mut d = Daemon::start(&cfg, &log);
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut alerts: BTreeMap<String, BTreeMap<i64, AlertMsg>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut exited = None;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), sub.recv_async()).await {
            Ok(Ok(s)) => {
                let a = AlertMsg::from_json(&s.payload().to_bytes()).unwrap();
                let (id, seq) = (a.query_id.clone(), a.seq);
                let again = alerts.entry(id).or_default().insert(seq, a);
                assert!(again.is_none(), "{run}: two alerts for one window: {again:?}");
            }
            // Once it has exited, what it published is in: a quiet spell ends the run.
            _ if exited.is_some() => break,
            _ => {}
        }
        if exited.is_none() {
            exited = d.child.try_wait().unwrap();
        }
        assert!(Instant::now() < deadline, "{run}: the replay did not end:\n{}", dump());
    }
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{run}:\n{}", dump());
    let _ = z.close().await;
    alerts
}

/// Query thresholds end to end: a query fires on exactly the windows whose cosine
/// with it is ≥ its threshold, the window whose cosine equals it included. A first
/// replay gives every window's cosine (a query with threshold -1); the threshold is
/// set at the median observed cosine, so one window sits exactly on it; a second
/// replay of the same recording must alert on {seq : cosine ≥ median}, no more, no
/// less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_fires_on_exactly_the_windows_at_or_above_its_threshold() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("varied.wav");
    varied_wav(&wav, 16);
    let t0 = Instant::now();
    let scores = |a: &BTreeMap<i64, AlertMsg>| -> BTreeMap<i64, f32> { a.iter().map(|(s, a)| (*s, a.score)).collect() };
    let bits = |s: &BTreeMap<i64, f32>| -> Vec<(i64, u32)> { s.iter().map(|(q, x)| (*q, x.to_bits())).collect() };

    let run1 = replay_alerts(dir.path(), "run1", &wav, None).await;
    let every1 = scores(&run1["every"]);
    assert!(every1.len() >= 11, "windows of a 16 s recording: {every1:?}");
    let mut sorted: Vec<f32> = every1.values().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "run 1 ({:.1} s): {} windows, cosines {sorted:?}; median {median} (threshold written {})",
        t0.elapsed().as_secs_f64(),
        sorted.len(),
        f64::from(median)
    );

    let run2 = replay_alerts(dir.path(), "run2", &wav, Some(median)).await;
    let every2 = scores(&run2["every"]);
    // The same recording gives the same windows and the same cosines, to the bit:
    // otherwise the equality case below would not be the one tested.
    assert_eq!(bits(&every2), bits(&every1), "the replay is not deterministic");
    let fired = run2.get("median").cloned().unwrap_or_default();
    let want: Vec<i64> = every2.iter().filter(|(_, s)| **s >= median).map(|(q, _)| *q).collect();
    let at: Vec<i64> = every2.iter().filter(|(_, s)| **s == median).map(|(q, _)| *q).collect();
    let got: Vec<i64> = fired.keys().copied().collect();
    eprintln!(
        "run 2 ({:.1} s in all): threshold {median}: alerts at {got:?}, cosine ≥ threshold at {want:?}, equal at {at:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(!at.is_empty(), "no window's cosine equals the median {median}");
    assert!(
        want.len() < every2.len() && !want.is_empty(),
        "the threshold splits nothing"
    );
    assert_eq!(got, want, "alerts vs {{seq : cosine ≥ {median}}}");
    for (seq, a) in &fired {
        assert_eq!(
            (a.threshold.to_bits(), a.score.to_bits()),
            (median.to_bits(), every2[seq].to_bits()),
            "{a:?}"
        );
    }
}
