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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def daemon(tmp_path):
    assert os.environ.get("ORT_DYLIB_PATH"), "run through `make test`"
    port = free_port()
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
"""
    )
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
    yield proc, port, tmp_path / "daemon.log"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


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
        seqs, labels, alert, error = {}, 0, None, None
        deadline = time.time() + 60
        sent = False
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                key, body, enc = got.get(timeout=1)
            except queue.Empty:
                continue
            if "/embedding/" in key:
                assert enc == "application/cbor"
                m = cbor2.loads(body)
                v = np.frombuffer(m["embedding"], dtype="<f4")
                assert v.shape == (m["dim"],)
                assert abs(np.linalg.norm(v) - 1.0) < 1e-4
                assert m["t_end_ns"] - m["t_start_ns"] == 2_000_000_000
                assert key.endswith("/" + m["modality"])
                seqs.setdefault(m["modality"], []).append(m["seq"])
            elif "/labels/" in key:
                j = json.loads(body)
                assert {"label", "score", "prob"} <= set(j["top"][0])
                labels += 1
            elif key == "sensebind/pytest/alerts/py1":
                alert = json.loads(body)
            elif key == "sensebind/pytest/errors/queries/oops":
                error = json.loads(body)
            if not sent and labels:
                s.put("sensebind/pytest/queries/py1", json.dumps({"text": "a siren", "threshold": -1, "modalities": ["vision"], "cooldown_s": 0}))
                s.put("sensebind/pytest/queries/oops", json.dumps({"text": "x", "threshold": 7}))
                sent = True
            if MODALITIES <= {k for k, v in seqs.items() if len(v) >= 2} and alert and error:
                break
        assert MODALITIES <= set(seqs), f"got {sorted(seqs)}"
        for m, v in seqs.items():
            assert v == sorted(v) and len(set(v)) == len(v), (m, v)
        assert alert and alert["query_id"] == "py1" and alert["modality"] == "vision"
        assert error and "threshold" in error["error"]
        listed = [json.loads(r.ok.payload.to_bytes()) for r in s.get("sensebind/pytest/queries/**") if r.ok]
        assert [q["id"] for q in listed] == ["py1"]
        assert proc.poll() is None


def test_readme_python_client_works(daemon):
    """The subscriber printed in README.md runs as written (robot, port and duration
    substituted) and sees every modality's unit-norm embeddings."""
    proc, port, log = daemon
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([l for l in code.splitlines() if l.strip()]) <= 15, "README client must stay short"
    code = (
        code.replace("socket.gethostname()", '"pytest"')
        .replace("tcp/127.0.0.1:7447", f"tcp/127.0.0.1:{port}")
        .replace("time.sleep(30)", "time.sleep(8)")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [l.split() for l in out.stdout.splitlines() if l and not l.startswith("ALERT")]
    seen = {l[0] for l in lines}
    assert MODALITIES <= seen, out.stdout
    assert all(l[-1] == "1.0" for l in lines), out.stdout
    assert proc.poll() is None, log.read_text()
