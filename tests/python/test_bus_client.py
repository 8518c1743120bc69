"""A real Python eclipse-zenoh client against a running sensebind daemon.

Run by `make test` (tools/dev.sh test) with SENSEBIND_BIN pointing at the release
binary and ORT_DYLIB_PATH at libonnxruntime.so.
"""
import json
import os
import queue
import socket
import subprocess
import sys
import time
from pathlib import Path

import cbor2
import numpy as np
import pytest
import zenoh

BIN = os.environ.get("SENSEBIND_BIN", str(Path(__file__).resolve().parents[2] / "target/release/sensebind"))
MODALITIES = {"vision", "audio", "depth", "thermal", "imu"}
# The built-in demo's sources, as a user file must list them: id → sensor.
DEMO = {"camera": "camera", "depth": "depth", "thermal": "thermal", "microphone": "microphone", "imu": "imu"}
SOURCE_OF = {"vision": "camera", "audio": "microphone", "depth": "depth", "thermal": "thermal", "imu": "imu"}


def sources_toml(sources):
    return "".join(f'[sources.{i}]\ntype = "synthetic"\nsensor = "{s}"\n' for i, s in sources.items())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path, port, extra=""):
    """A daemon config in `tmp_path` (robot `pytest`, hop 1 s, bus on `port`) plus `extra`."""
    cfg = tmp_path / "sensebind.toml"
    cfg.write_text(
        f"""
[robot]
id = "pytest"
state_dir = "{tmp_path / 'state'}"
[window]
hop_s = 1.0
[bus]
listen = ["tcp/127.0.0.1:{port}"]
[health]
interval_s = 1.0
"""
        + extra
    )
    return cfg


def start_daemon(tmp_path, sources):
    assert os.environ.get("ORT_DYLIB_PATH"), "run through `make test`"
    port = free_port()
    cfg = write_config(tmp_path, port, sources_toml(sources))
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
    return proc, port, tmp_path / "daemon.log"


def stop_daemon(proc):
    proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the daemon did not stop within 10 s of SIGTERM")


@pytest.fixture()
def daemon(tmp_path):
    proc, port, log = start_daemon(tmp_path, DEMO)
    yield proc, port, log
    assert stop_daemon(proc) == 0, log.read_text()


def wait_until_publishing(port, proc, log, timeout=60):
    """Block until health shows every stream has published a window (no cold-start race)."""
    got = queue.Queue()
    with open_session(port) as s:
        s.declare_subscriber("sensebind/pytest/health", lambda x: got.put(json.loads(x.payload.to_bytes())))
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                h = got.get(timeout=1)
            except queue.Empty:
                continue
            streams = [st for src in h["sources"].values() for st in src["streams"].values()]
            if streams and all(st["windows_out"] > 0 for st in streams):
                return h
    raise AssertionError("the daemon published no window on every stream within the timeout:\n" + log.read_text())


def embed_text(text):
    """`text`'s embedding from `sensebind embed` (the offline path, its own process):
    the vector a text query or search must use, computed apart from the daemon."""
    assert os.environ.get("ORT_DYLIB_PATH"), "run through `make test`"
    out = subprocess.run([BIN, "embed", "--text", text], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0]["input"] == text, out.stdout[:300]
    v = np.array(lines[0]["embedding"], dtype=np.float64)
    assert abs(np.linalg.norm(v) - 1.0) < 1e-4
    return v


def search(s, params):
    """One `search` over the bus: the single reply's JSON (ok or error) and whether it is ok."""
    replies = list(s.get(f"sensebind/pytest/search?{params}"))
    assert len(replies) == 1, f"{params}: {len(replies)} replies"
    r = replies[0]
    return (json.loads(r.ok.payload.to_bytes()), True) if r.ok else (json.loads(r.err.payload.to_bytes()), False)


def assert_true_top(found, query, windows, k):
    """`found` (a search's results) is exactly the top `k` of `windows` ({(modality,
    source, seq): (vector, t_start_ns, t_end_ns)}) by cosine with `query`, computed
    here by brute force; each score is that cosine to 1e-5 (ties at the cut either way)."""
    brute = {key: float(np.dot(query, v)) for key, (v, _, _) in windows.items()}
    assert len(windows) > k, f"only {len(windows)} windows: a top {k} would prove nothing"
    assert len(found) == k, found
    keys = [(h["modality"], h["source"], h["seq"]) for h in found]
    assert len(set(keys)) == k, keys
    for h, key in zip(found, keys):
        assert key in windows, f"{key} is not a window the test received in the searched span"
        assert abs(h["score"] - brute[key]) <= 1e-5, (key, h["score"], brute[key])
        assert (h["t_start_ns"], h["t_end_ns"]) == windows[key][1:], (key, h)
    assert [h["score"] for h in found] == sorted((h["score"] for h in found), reverse=True), found
    cut = min(brute[key] for key in keys)
    missed = {key: sc for key, sc in brute.items() if key not in keys and sc > cut + 1e-5}
    assert not missed, f"better windows left out: {missed}; brute force top: {sorted(brute.items(), key=lambda x: -x[1])[:k + 2]}"


def open_session(port):
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("connect/endpoints", json.dumps([f"tcp/127.0.0.1:{port}"]))
    conf.insert_json5("scouting/multicast/enabled", "false")
    conf.insert_json5("scouting/gossip/enabled", "false")
    return zenoh.open(conf)


def test_python_client_reads_every_topic(daemon):
    proc, port, log = daemon
    got = queue.Queue()
    with open_session(port) as s:
        s.declare_subscriber("sensebind/pytest/**", lambda sample: got.put((str(sample.key_expr), sample.payload.to_bytes(), str(sample.encoding))))
        seqs, labels, alert, error, fused = {}, 0, None, None, []
        # Every vision and fused window received: (modality, source, seq) → (vector,
        # t_start_ns, t_end_ns); and every alert of py1.
        windows, alerts = {}, []
        deadline = time.time() + 60
        sent = False
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                key, body, enc = got.get(timeout=1)
            except queue.Empty:
                continue
            if key == "sensebind/pytest/embedding/fused":
                m = cbor2.loads(body)
                v = np.frombuffer(m["embedding"], dtype="<f4")
                assert (m["modality"], m["source"], v.shape) == ("fused", "fused", (m["dim"],))
                assert abs(np.linalg.norm(v) - 1.0) < 1e-4
                assert {x["modality"] for x in m["members"]} <= MODALITIES and isinstance(m["complete"], bool)
                fused.append(m)
                windows[("fused", "fused", m["seq"])] = (v.astype(np.float64), m["t_start_ns"], m["t_end_ns"])
            elif key == "sensebind/pytest/labels/fused":
                assert json.loads(body)["modality"] == "fused"
            elif "/embedding/" in key:
                assert enc == "application/cbor"
                m = cbor2.loads(body)
                v = np.frombuffer(m["embedding"], dtype="<f4")
                assert v.shape == (m["dim"],)
                assert abs(np.linalg.norm(v) - 1.0) < 1e-4
                assert m["t_end_ns"] - m["t_start_ns"] == 2_000_000_000
                assert key == f"sensebind/pytest/embedding/{m['modality']}/{m['source']}"
                assert m["source"] == SOURCE_OF[m["modality"]], m["source"]
                seqs.setdefault(m["modality"], []).append(m["seq"])
                if m["modality"] == "vision":
                    windows[("vision", "camera", m["seq"])] = (v.astype(np.float64), m["t_start_ns"], m["t_end_ns"])
            elif "/labels/" in key:
                j = json.loads(body)
                assert key == f"sensebind/pytest/labels/{j['modality']}/{j['source']}"
                assert {"label", "score", "prob"} <= set(j["top"][0])
                labels += 1
            elif key == "sensebind/pytest/alerts/py1":
                alert = json.loads(body)
                alerts.append(alert)
            elif key == "sensebind/pytest/errors/queries/oops":
                error = json.loads(body)
            if not sent and labels:
                s.put("sensebind/pytest/queries/py1", json.dumps({"text": "a siren", "threshold": -1, "modalities": ["vision"], "cooldown_s": 0}))
                s.put("sensebind/pytest/queries/oops", json.dumps({"text": "x", "threshold": 7}))
                sent = True
            # Six fused windows: the search below ranks at least eight windows for a top 3.
            if MODALITIES <= {k for k, v in seqs.items() if len(v) >= 2} and alert and error and len(fused) >= 6:
                break
        assert any(len(m["members"]) == len(MODALITIES) for m in fused), [m["members"] for m in fused]
        assert MODALITIES <= set(seqs), f"got {sorted(seqs)}"
        for m, v in seqs.items():
            assert v == sorted(v) and len(set(v)) == len(v), (m, v)
        assert alert and alert["query_id"] == "py1" and alert["modality"] == "vision" and alert["source"] == "camera"
        assert error and "threshold" in error["error"]
        listed = [json.loads(r.ok.payload.to_bytes()) for r in s.get("sensebind/pytest/queries/**") if r.ok]
        assert [q["id"] for q in listed] == ["py1"]
        # The query's vector, embedded here apart from the daemon: every alert's score is
        # its cosine with the alerted window.
        siren = embed_text("a siren")
        checked = [a for a in alerts if ("vision", "camera", a["seq"]) in windows]
        assert checked, (alerts, sorted(windows))
        for a in checked:
            v, t0, t1 = windows[("vision", "camera", a["seq"])]
            assert abs(a["score"] - float(np.dot(siren, v))) <= 1e-5, (a, float(np.dot(siren, v)))
            assert (a["t_start_ns"], a["t_end_ns"]) == (t0, t1), a
        # Search the history from Python, over the span whose every vision and fused
        # window this client received: windows lo..hi (`since` = the end of lo, `until`
        # just after the start of hi). The newest fused window found in the history
        # means every window published before it has been written there.
        vis = sorted(q for m, _, q in windows if m == "vision")
        fus = sorted(q for m, _, q in windows if m == "fused")
        newest = fus[-1]
        lo, hi = max(vis[0], fus[0]), newest - 1
        deadline = time.time() + 20
        while True:
            body, ok = search(s, f"example=fused/{newest};k=1")
            if ok:
                break
            assert "no such window" in body["error"] and time.time() < deadline, body
            time.sleep(0.2)
        span = {key: w for key, w in windows.items() if lo <= key[2] <= hi}
        since = next(w[2] for key, w in span.items() if key[2] == lo)
        until = next(w[1] for key, w in span.items() if key[2] == hi) + 1
        limits = f"modalities=vision,fused;since={since};until={until}"
        body, ok = search(s, f"text=a%20siren;k=3;{limits}")
        assert ok, body
        assert body["robot"] == "pytest" and all(h["robot"] == "pytest" for h in body["results"]), body
        assert body["scanned"] == len(span), (body["scanned"], sorted(span))
        assert_true_top(body["results"], siren, span, 3)
        # By example: a window the client received is the query, and is found (cosine 1).
        example = ("vision", "camera", (lo + hi) // 2)
        body, ok = search(s, f"example=vision/camera/{example[2]};k=3;{limits}")
        assert ok, body
        assert_true_top(body["results"], span[example][0], span, 3)
        scores = {(h["modality"], h["source"], h["seq"]): h["score"] for h in body["results"]}
        assert abs(scores.get(example, 0.0) - 1.0) <= 1e-5, (example, body["results"])
        # Nothing in the span reached the bus after the searches (the snapshot was whole).
        time.sleep(0.3)
        while not got.empty():
            key, body, _ = got.get()
            if key in ("sensebind/pytest/embedding/vision/camera", "sensebind/pytest/embedding/fused"):
                assert not lo <= cbor2.loads(body)["seq"] <= hi, f"{key} seq {cbor2.loads(body)['seq']} came after the search"
        assert proc.poll() is None


def test_three_named_sources_share_one_time_grid(tmp_path):
    """The issue's example: two cameras and a microphone, each named by the user."""
    proc, port, log = start_daemon(tmp_path, {"front": "camera", "back": "camera", "mic": "microphone"})
    try:
        got = queue.Queue()
        with open_session(port) as s:
            s.declare_subscriber("sensebind/pytest/embedding/**", lambda x: got.put((str(x.key_expr), x.payload.to_bytes())))
            s.declare_subscriber("sensebind/pytest/health", lambda x: got.put((str(x.key_expr), x.payload.to_bytes())))
            spans, health = {}, None
            wanted = {"sensebind/pytest/embedding/vision/front", "sensebind/pytest/embedding/vision/back", "sensebind/pytest/embedding/audio/mic"}
            fused = set()
            deadline = time.time() + 60
            while time.time() < deadline:
                assert proc.poll() is None, log.read_text()
                try:
                    key, body = got.get(timeout=1)
                except queue.Empty:
                    continue
                if key.endswith("/health"):
                    health = json.loads(body)
                    continue
                if key == "sensebind/pytest/embedding/fused":
                    # One fused window per seq, on the same grid.
                    m = cbor2.loads(body)
                    assert m["seq"] not in fused, m["seq"]
                    fused.add(m["seq"])
                    continue
                assert key in wanted, key
                m = cbor2.loads(body)
                v = np.frombuffer(m["embedding"], dtype="<f4")
                assert abs(np.linalg.norm(v) - 1.0) < 1e-4
                assert key.endswith(f"/{m['modality']}/{m['source']}")
                spans.setdefault(m["seq"], {})[key] = (m["t_start_ns"], m["t_end_ns"])
                common = [k for k, d in spans.items() if set(d) == wanted]
                if len(common) >= 2 and health:
                    break
            common = [k for k, d in spans.items() if set(d) == wanted]
            assert len(common) >= 2, spans
            for k in common:
                assert len(set(spans[k].values())) == 1, f"seq {k} covers different spans: {spans[k]}"
            assert set(health["sources"]) == {"front", "back", "mic"}, health
            assert set(health["sources"]["front"]["streams"]) == {"vision"}
            assert set(health["sources"]["mic"]["streams"]) == {"audio"}
            assert health["sources"]["mic"]["clock"] == "realtime"
            assert health["sources"]["mic"]["streams"]["audio"]["clock"] == "realtime"
    finally:
        assert stop_daemon(proc) == 0, log.read_text()


def test_readme_python_client_works(daemon):
    """The subscriber printed in README.md runs as written (robot, port and duration
    substituted) and sees every modality's unit-norm embeddings."""
    proc, port, log = daemon
    wait_until_publishing(port, proc, log)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([l for l in code.splitlines() if l.strip()]) <= 15, "README client must stay short"
    code = (
        code.replace("socket.gethostname()", '"pytest"')
        .replace("tcp/127.0.0.1:7447", f"tcp/127.0.0.1:{port}")
        .replace("time.sleep(30)", "time.sleep(5)")
    )
    # Its two callbacks print from zenoh's threads at once, and print() writes its pieces
    # one by one, so two lines can interleave ("imuALERT  imu…"): print is serialised
    # (the client's own code runs as written).
    code = "import threading as _t\n_lock, _print = _t.Lock(), print\n\n\ndef print(*a, **k):\n    with _lock:\n        _print(*a, **k)\n\n\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [l.split() for l in out.stdout.splitlines() if l and not l.startswith("ALERT")]
    seen = {l[0] for l in lines}
    assert MODALITIES <= seen, out.stdout
    assert {l[1] for l in lines} == set(DEMO) | {"fused"}, out.stdout
    assert all(l[-1] == "1.0" for l in lines), out.stdout
    assert proc.poll() is None, log.read_text()
