//! End to end: the daemon on its embedded demo config (synthetic sensors, built-in
//! tiny pack) publishes on zenoh and serves queries; seen from a Rust client.

mod common;

use common::*;
use sensebind::bus::EmbeddingMsg;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MODALITIES: [&str; 5] = ["vision", "audio", "depth", "thermal", "imu"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_end_to_end_over_zenoh() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), "itest", port, "");
    let log = dir.path().join("daemon.log");
    let mut d = Daemon::start(&cfg, &log);
    let dump = |log: &std::path::Path| std::fs::read_to_string(log).unwrap_or_default();

    let z = client(port).await;
    let sub = z.declare_subscriber("sensebind/itest/**").await.unwrap();
    let manifest = sensebind::pack::Pack::builtin().unwrap();

    // 1. Embeddings of all five modalities, labels, health.
    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut labels = 0;
    let mut health = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), sub.recv_async()).await else {
            assert!(d.running(), "daemon exited:\n{}", dump(&log));
            continue;
        };
        let key = s.key_expr().as_str().to_string();
        let body = s.payload().to_bytes().to_vec();
        if let Some(m) = key.strip_prefix("sensebind/itest/embedding/") {
            assert_eq!(s.encoding().to_string(), "application/cbor");
            let msg = EmbeddingMsg::from_cbor(&body).expect("CBOR embedding");
            assert_eq!(msg.modality.as_str(), m);
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
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let top = j["top"].as_array().unwrap();
            assert!(!top.is_empty());
            let p = top[0]["prob"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
            labels += 1;
        } else if key == "sensebind/itest/health" {
            health = Some(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
        }
        let done =
            MODALITIES.iter().all(|m| seqs.get(*m).is_some_and(|v| v.len() >= 2)) && labels > 0 && health.is_some();
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
    let h = health.expect("no health");
    assert_eq!(h["robot"], "itest");
    for m in MODALITIES {
        assert!(
            h["modalities"][m]["windows_in"].as_u64().is_some(),
            "health lacks {m}: {h}"
        );
    }

    // 2. A query registered over the bus yields an alert (threshold -1 always matches).
    z.put(
        "sensebind/itest/queries/q1",
        r#"{"text":"a dog barking","threshold":-1.0,"modalities":["audio"],"cooldown_s":0}"#,
    )
    .await
    .unwrap();
    // 3. A malformed query gets an error reply, and the daemon keeps running.
    z.put("sensebind/itest/queries/bad", "{not json").await.unwrap();
    let mut alert = None;
    let mut error = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && (alert.is_none() || error.is_none()) {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), sub.recv_async()).await else {
            continue;
        };
        let key = s.key_expr().as_str().to_string();
        let body: serde_json::Value = match serde_json::from_slice(&s.payload().to_bytes()) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if key == "sensebind/itest/alerts/q1" {
            alert = Some(body);
        } else if key == "sensebind/itest/errors/queries/bad" {
            error = Some(body);
        }
    }
    let alert = alert.unwrap_or_else(|| panic!("no alert; log:\n{}", dump(&log)));
    assert_eq!(alert["query_id"], "q1");
    assert_eq!(alert["modality"], "audio");
    assert_eq!(alert["text"], "a dog barking");
    assert!(alert["score"].as_f64().unwrap() >= -1.0);
    assert_eq!(
        alert["t_end_ns"].as_i64().unwrap() - alert["t_start_ns"].as_i64().unwrap(),
        2_000_000_000
    );
    let error = error.expect("no error reply for a malformed query");
    assert_eq!(error["query_id"], "bad");
    assert!(error["error"].as_str().unwrap().contains("expected JSON"), "{error}");
    assert!(d.running(), "daemon died after a bad query");

    // `get queries/**` lists the registered query.
    let listed = list(&z).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "q1");

    // 4. After a restart the query is still registered.
    d.stop();
    assert!(!d.running());
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
    assert_eq!(again[0]["text"], "a dog barking");
    assert_eq!(again[0]["threshold"], -1.0);

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
        "0.5",
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
}

async fn list(z: &zenoh::Session) -> Vec<serde_json::Value> {
    let replies = z
        .get("sensebind/itest/queries/**")
        .timeout(Duration::from_secs(2))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(r) = replies.recv_async().await {
        if let Ok(s) = r.result() {
            out.push(serde_json::from_slice(&s.payload().to_bytes()).unwrap());
        }
    }
    out
}
