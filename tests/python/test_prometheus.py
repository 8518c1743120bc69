"""`[prometheus] listen`: the /metrics text read by the official Prometheus Python
client's parser (an independent reader of the exposition format). Every metric is
named sensebind_<noun>_<unit>[_total], per-stream series carry source and modality
labels, and the counters agree with the health JSON's.
"""
import os
import re
import socket
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from test_bus_client import BIN, DEMO, free_port, sources_toml, stop_daemon, write_config

NAME = re.compile(r"^sensebind_[a-z]+(_[a-z]+)*$")


def test_metrics_endpoint_parses_and_adds_up(tmp_path):
    assert os.environ.get("ORT_DYLIB_PATH"), "run through `make test`"
    mport = free_port()
    cfg = write_config(tmp_path, free_port(), f'[prometheus]\nlisten = "127.0.0.1:{mport}"\n' + sources_toml(DEMO))
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        text, deadline = None, time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2) as r:
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = r.read().decode()
                if "sensebind_stream_windows_published_total" in text and ' 0\n' not in [
                    l[l.rfind(" "):] + "\n" for l in text.splitlines() if l.startswith("sensebind_stream_windows_published_total")
                ]:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert text, (tmp_path / "daemon.log").read_text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, f in families.items():
            assert NAME.match(name), name
            if f.type == "counter":
                assert all(s.name == name + "_total" or s.name == name + "_created" for s in f.samples), name
        # Per-stream series for every one of the five streams.
        pub = families["sensebind_stream_windows_published"]
        assert {(s.labels["source"], s.labels["modality"]) for s in pub.samples} == {
            ("camera", "vision"), ("microphone", "audio"), ("depth", "depth"), ("thermal", "thermal"), ("imu", "imu")}
        hist = families["sensebind_stream_latency_seconds"]
        assert hist.type == "histogram"
        counts = {s.labels["source"]: s.value for s in hist.samples if s.name.endswith("_count")}
        published = {s.labels["source"]: s.value for s in pub.samples}
        for src, n in counts.items():
            assert n >= published[src] - 5  # read a moment apart
        assert families["sensebind_source_up"].samples[0].value == 1
        # Other paths and methods are refused.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/", timeout=2)
            raise AssertionError("/ must be 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        assert stop_daemon(proc) == 0, (tmp_path / "daemon.log").read_text()
