//! Bus security with the shipped zenoh configs (configs/zenoh/): TLS, mutual TLS and
//! access control. Certificates are made here with openssl, as docs/security.md
//! tells an operator to. An authorised operator (client certificate CN=operator) is
//! served; a peer with a valid certificate but another name is refused (it receives
//! nothing and cannot register queries); peers without a certificate from the robot's
//! CA, or without TLS, cannot connect at all.

use crate::common;
use sensebind::bus::msg::{JsonMsg, SearchReply};

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates for `names` signed by it, in `dir` (`<name>.pem/.key`).
fn make_pki(dir: &Path, ca: &str, names: &[&str]) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN={ca}"));
    args.extend(["-keyout", &key, "-out", &pem, "-days", "30", "-subj", &subj]);
    openssl(dir, &args);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    for n in names {
        let (k, csr, crt, subj) = (
            format!("{n}.key"),
            format!("{n}.csr"),
            format!("{n}.pem"),
            format!("/CN={n}"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &k, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &pem,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "30",
                "-extfile",
                "san.ext",
            ],
        );
    }
}

/// A zenoh client of the daemon at `endpoint`, with TLS settings `tls` (JSON5).
async fn tls_client(endpoint: &str, tls: &str) -> zenoh::Result<zenoh::Session> {
    let mut c = zenoh::Config::default();
    c.insert_json5("mode", "\"client\"").unwrap();
    c.insert_json5("connect/endpoints", &format!("[\"{endpoint}\"]"))
        .unwrap();
    c.insert_json5("scouting/multicast/enabled", "false").unwrap();
    c.insert_json5("scouting/gossip/enabled", "false").unwrap();
    if !tls.is_empty() {
        c.insert_json5("transport/link/tls", tls).unwrap();
    }
    zenoh::open(c).await
}

fn client_tls(pki: &Path, ca: &str, name: &str) -> String {
    format!(
        r#"{{ root_ca_certificate: "{d}/{ca}.pem", connect_certificate: "{d}/{name}.pem", connect_private_key: "{d}/{name}.key", enable_mtls: true, verify_name_on_connect: true }}"#,
        d = pki.display()
    )
}

/// Labels received within `within` by `z`.
async fn labels_seen(z: &zenoh::Session, within: Duration) -> usize {
    let sub = z.declare_subscriber("sensebind/secure/labels/**").await.unwrap();
    let deadline = tokio::time::Instant::now() + within;
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, sub.recv_async()).await {
        n += 1;
    }
    n
}

/// The replies (JSON) to one history search from `z`, waiting up to 5 s.
async fn search_replies(z: &zenoh::Session) -> Vec<SearchReply> {
    let mut out = Vec::new();
    let replies = z
        .get("sensebind/secure/search?text=the%20number%20seven;k=3")
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    while let Ok(r) = replies.recv_async().await {
        if let Ok(s) = r.result() {
            out.push(SearchReply::from_json(&s.payload().to_bytes()).unwrap());
        }
    }
    out
}

/// A daemon on `tls/127.0.0.1:<port>` with the shipped `configs/zenoh/<shipped>`,
/// pointed at a PKI made in `dir/tls`: the robot's CA (`ca`) signing the daemon's
/// certificate and `clients`, and another CA (`other-ca`) signing `outsider`.
fn secure_daemon(
    dir: &Path,
    shipped: &str,
    clients: &[&str],
    outsider: &str,
) -> (std::path::PathBuf, Daemon, std::path::PathBuf, u16) {
    let pki = dir.join("tls");
    std::fs::create_dir_all(&pki).unwrap();
    let mut names = vec!["sensebind"];
    names.extend(clients);
    make_pki(&pki, "ca", &names);
    make_pki(&pki, "other-ca", &[outsider]);
    let text = std::fs::read_to_string(format!("{}/configs/zenoh/{shipped}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let zcfg = dir.join("zenoh.json5");
    std::fs::write(&zcfg, text.replace("/etc/sensebind/tls", &pki.display().to_string())).unwrap();
    let port = free_port();
    let cfg = dir.join("sensebind.toml");
    std::fs::write(
        &cfg,
        format!(
            "[robot]\nid = \"secure\"\nstate_dir = \"{}\"\n[bus]\nlisten = [\"tls/127.0.0.1:{port}\"]\nzenoh_config = \"{}\"\n[health]\ninterval_s = 1.0\n{DEMO_SOURCES}",
            dir.join("state").display(),
            zcfg.display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let daemon = Daemon::start(&cfg, &log);
    (pki, daemon, log, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_access_control_serve_operators_and_refuse_everyone_else() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let (pki, mut daemon, log, port) = secure_daemon(
        dir.path(),
        "mtls-acl.json5",
        &["operator", "viewer", "stranger"],
        "intruder",
    );
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();
    let endpoint = format!("tls/127.0.0.1:{port}");
    // The operator is served: labels, query registration, listing, alerts.
    let mut operator = None;
    for _ in 0..60 {
        if let Ok(z) = tls_client(&endpoint, &client_tls(&pki, "ca", "operator")).await {
            operator = Some(z);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let operator = operator.unwrap_or_else(|| panic!("the operator cannot connect; log:\n{}", dump()));
    assert!(
        labels_seen(&operator, Duration::from_secs(8)).await >= 5,
        "the operator receives labels; log:\n{}",
        dump()
    );
    let fired = a_query_fires(&operator, "secure", "op").await;
    assert!(fired, "the operator's query fires; log:\n{}", dump());
    assert!(query_ids(&operator, "secure").await.contains(&"op".to_string()));

    // A peer with a valid certificate of another name connects, but is refused
    // everything: it receives nothing, and its registration never reaches the daemon.
    let stranger = tls_client(&endpoint, &client_tls(&pki, "ca", "stranger"))
        .await
        .expect("TLS itself lets a CA-signed peer in");
    assert_eq!(
        labels_seen(&stranger, Duration::from_secs(4)).await,
        0,
        "ACL must hide labels"
    );
    stranger
        .put("sensebind/secure/queries/evil", r#"{"text":"x"}"#)
        .await
        .unwrap();
    assert!(
        query_ids(&stranger, "secure").await.is_empty(),
        "ACL must refuse listing"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = query_ids(&operator, "secure").await;
    assert!(
        !ids.contains(&"evil".to_string()),
        "the stranger's query was registered: {ids:?}"
    );

    // Search: the operator and the viewer get the same hits from the history; the
    // stranger gets no answer at all.
    let viewer = tls_client(&endpoint, &client_tls(&pki, "ca", "viewer"))
        .await
        .expect("the viewer connects");
    assert!(
        labels_seen(&viewer, Duration::from_secs(4)).await >= 2,
        "the viewer receives labels"
    );
    let op_hits = search_replies(&operator).await;
    assert_eq!(op_hits.len(), 1, "one reply to the operator's search; log:\n{}", dump());
    assert_eq!(op_hits[0].results.len(), 3, "{:?}", op_hits[0]);
    let view_hits = search_replies(&viewer).await;
    assert_eq!(view_hits.len(), 1, "the viewer may search");
    assert_eq!(view_hits[0].results, op_hits[0].results, "the same history");
    assert!(
        search_replies(&stranger).await.is_empty(),
        "ACL must refuse the stranger's search"
    );
    // Neither the viewer nor the stranger can register or delete queries.
    viewer
        .put("sensebind/secure/queries/peek", r#"{"text":"x"}"#)
        .await
        .unwrap();
    viewer.delete("sensebind/secure/queries/op").await.unwrap();
    stranger.delete("sensebind/secure/queries/op").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = query_ids(&operator, "secure").await;
    assert_eq!(ids, vec!["op".to_string()], "only the operator manages queries");
    assert!(
        query_ids(&viewer, "secure").await.is_empty(),
        "viewers cannot list queries"
    );

    // Without a certificate from the robot's CA, or without TLS: no session at all.
    assert!(
        tls_client(&endpoint, &client_tls(&pki, "other-ca", "intruder"))
            .await
            .is_err(),
        "a certificate from another CA must be refused"
    );
    assert!(
        tls_client(&format!("tcp/127.0.0.1:{port}"), "").await.is_err(),
        "plain TCP must be refused"
    );
    // The operator is still served.
    assert!(labels_seen(&operator, Duration::from_secs(4)).await >= 2);
    assert!(daemon.running());
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_encrypts_the_bus_and_clients_check_the_daemon() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let (pki, mut daemon, log, port) = secure_daemon(dir.path(), "tls.json5", &[], "impostor");
    let endpoint = format!("tls/127.0.0.1:{port}");
    let server_only = |ca: &str| {
        format!(
            r#"{{ root_ca_certificate: "{}/{ca}.pem", verify_name_on_connect: true }}"#,
            pki.display()
        )
    };
    // A client trusting the robot's CA (no client certificate needed) is served.
    let mut z = None;
    for _ in 0..60 {
        if let Ok(s) = tls_client(&endpoint, &server_only("ca")).await {
            z = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let z = z.unwrap_or_else(|| {
        panic!(
            "no TLS session; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(labels_seen(&z, Duration::from_secs(8)).await >= 5);
    // A client that trusts another CA refuses the daemon; plain TCP is refused.
    assert!(tls_client(&endpoint, &server_only("other-ca")).await.is_err());
    assert!(tls_client(&format!("tcp/127.0.0.1:{port}"), "").await.is_err());
    daemon.stop();
}
