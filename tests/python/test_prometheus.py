"""`[prometheus] listen`: the /metrics text read by the official Prometheus Python
client's parser (an independent reader of the exposition format). Every metric is
named sensebind_<noun>_<unit>[_total], per-stream series carry source and modality
labels, and once the sources have ended and the daemon is at rest every series
equals the health JSON's figure for it, and both equal what a client counted.
"""
import json
import os
import queue
import re
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from test_bus_client import BIN, DEMO, free_port, open_session, search, stop_daemon, write_config

NAME = re.compile(r"^sensebind_[a-z]+(_[a-z]+)*$")
# Seconds of sensor time each synthetic source plays before it ends.
DURATION_S = 8.0
LATENCY = "sensebind_stream_latency_seconds"


def scrape(mport):
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def parse(text):
    """{family: type} and {(sample name, sorted labels): value}, by the official parser."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    series = {}
    for f in families.values():
        for s in f.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in series, f"{key} twice"
            series[key] = s.value
    return families, series


def expected_from_health(h):
    """Every series /metrics must hold, as the health JSON `h` gives it (latency
    histograms and uptime apart)."""
    exp = {}

    def put(name, value, **labels):
        exp[(name, tuple(sorted(labels.items())))] = float(value)

    for sid, src in h["sources"].items():
        l = {"source": sid, "type": src["type"]}
        put("sensebind_source_up", src["state"] == "running", **l)
        for key in ("frames", "frames_dropped", "errors", "reconnects", "panics"):
            put(f"sensebind_source_{key}_total", src[key], **l)
        for m, st in src["streams"].items():
            l = {"source": sid, "modality": m}
            for key in ("frames_rejected", "late_frames", "time_jumps"):
                put(f"sensebind_stream_{key}_total", st[key], **l)
            put("sensebind_stream_windows_total", st["windows_in"], **l)
            put("sensebind_stream_windows_published_total", st["windows_out"], **l)
            for reason, n in st["windows_dropped"].items():
                put("sensebind_stream_windows_dropped_total", n, reason=reason, **l)
            put("sensebind_stream_windows_pending", st["windows_in"] - st["windows_out"] - sum(st["windows_dropped"].values()), **l)
            put("sensebind_stream_wedged", st["wedged"], **l)
    put("sensebind_queries_registered", h["queries"])
    for code, n in h["queries_refused"].items():
        put("sensebind_query_refusals_total", n, reason=code)
    put("sensebind_query_store_ok", h["query_store"]["ok"])
    put("sensebind_alerts_total", h["alerts"])
    put("sensebind_fused_windows_total", h["fused"]["windows"] - h["fused"]["incomplete"], complete="true")
    put("sensebind_fused_windows_total", h["fused"]["incomplete"], complete="false")
    put("sensebind_history_windows", h["history"]["windows"])
    put("sensebind_history_bytes", h["history"]["bytes"])
    for key in ("write_errors", "read_errors", "corrupt", "dropped"):
        put(f"sensebind_history_{key}_total", h["history"][key])
    put("sensebind_searches_total", h["searches"])
    put("sensebind_publish_errors_total", h["bus_errors"])
    put("sensebind_stage_failures_total", len(h["failed_stages"]))
    return exp


def next_message(q, proc, log, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            return q.get(timeout=1)
        except queue.Empty:
            pass
    raise AssertionError(f"nothing within {timeout} s:\n" + log.read_text())


def at_rest_figures(h):
    """`h` less what changes with the clock alone (times, ages)."""
    h = json.loads(json.dumps(h))
    for key in ("t_ns", "uptime_s"):
        del h[key]
    for src in h["sources"].values():
        del src["last_frame_age_s"]
    return h


def streams_of(h):
    return {(sid, m): st for sid, src in h["sources"].items() for m, st in src["streams"].items()}


def test_metrics_endpoint_parses_and_equals_health_at_rest(tmp_path):
    assert os.environ.get("ORT_DYLIB_PATH"), "run through `make test`"
    mport, port = free_port(), free_port()
    sources = "".join(
        f'[sources.{i}]\ntype = "synthetic"\nsensor = "{s}"\nduration_s = {DURATION_S}\n' for i, s in DEMO.items()
    )
    cfg = write_config(tmp_path, port, f'[prometheus]\nlisten = "127.0.0.1:{mport}"\n' + sources)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        health, alerts = queue.Queue(), queue.Queue()
        with open_session(port) as s:
            s.declare_subscriber("sensebind/pytest/health", lambda x: health.put(json.loads(x.payload.to_bytes())))
            s.declare_subscriber("sensebind/pytest/alerts/**", lambda x: alerts.put(json.loads(x.payload.to_bytes())))
            # While the sources run: every source is up.
            h = next_message(health, proc, log, 60)
            while not all(src["state"] == "running" for src in h["sources"].values()):
                assert all(src["state"] in ("starting", "running") for src in h["sources"].values()), h["sources"]
                h = next_message(health, proc, log)
            _, running = parse(scrape(mport))
            up = {dict(k[1])["source"]: v for k, v in running.items() if k[0] == "sensebind_source_up"}
            assert up == {sid: 1.0 for sid in DEMO}, up
            # Other paths and methods are refused.
            for method, path, code in (("GET", "/", 404), ("POST", "/metrics", 405)):
                try:
                    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mport}{path}", method=method), timeout=2)
                    raise AssertionError(f"{method} {path} must be {code}")
                except urllib.error.HTTPError as e:
                    assert e.code == code, (method, path, e.code)
            # A query that fires on every vision and fused window, and one refused.
            s.put("sensebind/pytest/queries/pq", json.dumps({"text": "the number seven", "threshold": -1, "modalities": ["vision", "fused"], "cooldown_s": 0}))
            s.put("sensebind/pytest/queries/bad", json.dumps({"text": "x", "threshold": 7}))
            # At rest: every source ended, every closed window published or dropped, and
            # two health messages in a row alike.
            prev, rest, deadline = None, None, time.time() + 60
            while rest is None and time.time() < deadline:
                h = next_message(health, proc, log)
                quiet = h["queries"] == 1 and all(src["state"] == "ended" for src in h["sources"].values()) and all(
                    st["windows_in"] == st["windows_out"] + sum(st["windows_dropped"].values()) for st in streams_of(h).values()
                )
                if quiet and prev is not None and at_rest_figures(prev) == at_rest_figures(h):
                    rest = h
                prev = h if quiet else None
            assert rest, f"not at rest within 60 s: {h}\n" + log.read_text()
            # Two searches answered, one refused (not counted).
            for params in ("text=the%20number%20seven;k=3", "text=a%20dog;k=1;modalities=fused"):
                body, ok = search(s, params)
                assert ok and body["results"], body
            body, ok = search(s, "text=x;colour=red")
            assert not ok and "unknown parameter" in body["error"], body
            # Scrape, health published after that scrape, scrape again.
            first = scrape(mport)
            t_first = time.time_ns()
            h = next_message(health, proc, log)
            while h["t_ns"] <= t_first:
                h = next_message(health, proc, log)
            second = scrape(mport)
            bus_alerts = []
            while not alerts.empty():
                bus_alerts.append(alerts.get())
    finally:
        assert stop_daemon(proc) == 0, log.read_text()

    families, series = parse(first)
    _, again = parse(second)
    uptime = ("sensebind_uptime_seconds", ())
    assert series[uptime] - 0.05 <= h["uptime_s"] <= again[uptime] + 0.05, (series[uptime], h["uptime_s"], again[uptime])
    del series[uptime], again[uptime]
    assert series == again, {k: (v, again.get(k)) for k, v in series.items() if again.get(k) != v}
    for name, f in families.items():
        assert NAME.match(name), name
        if f.type == "counter":
            assert all(s.name == name + "_total" for s in f.samples), name
    assert families[LATENCY].type == "histogram"

    # Every series but the latency histograms is health's figure, and nothing is missing.
    exp = expected_from_health(h)
    got = {k: v for k, v in series.items() if not k[0].startswith(LATENCY)}
    assert set(got) == set(exp), (sorted(set(got) - set(exp)), sorted(set(exp) - set(got)))
    assert {k: v for k, v in got.items() if exp[k] != v} == {}, {k: (v, exp[k]) for k, v in got.items() if exp[k] != v}

    # The figures are what happened: five streams that published, one query, one
    # refusal, two searches answered, every alert a client received on the bus, and every
    # published embedding (each stream's and the fused ones) in the history.
    streams = streams_of(h)
    assert set(streams) == {("camera", "vision"), ("microphone", "audio"), ("depth", "depth"), ("thermal", "thermal"), ("imu", "imu")}
    assert all(st["windows_out"] >= 4 for st in streams.values()), streams
    assert (h["status"], h["problems"], h["queries"], h["queries_refused"], h["searches"]) == ("ok", [], 1, {"invalid": 1}, 2), h
    assert len(bus_alerts) == h["alerts"] >= 1 and all(a["query_id"] == "pq" for a in bus_alerts), (len(bus_alerts), h["alerts"])
    assert h["history"]["windows"] == sum(st["windows_out"] for st in streams.values()) + h["fused"]["windows"], h["history"]

    # Latency histograms: one observation per embedded window (published, or dropped after
    # embedding), and health's largest latency lies in the bucket where the count is reached.
    for (sid, m), st in streams.items():
        l = (("modality", m), ("source", sid))
        buckets = sorted(
            (float(dict(k[1])["le"]), v) for k, v in series.items()
            if k[0] == LATENCY + "_bucket" and tuple(x for x in k[1] if x[0] != "le") == l
        )
        count, total = series[(LATENCY + "_count", l)], series[(LATENCY + "_sum", l)]
        assert buckets[-1] == (float("inf"), count) and [c for _, c in buckets] == sorted(c for _, c in buckets), buckets
        drops = st["windows_dropped"]
        assert st["windows_out"] <= count <= st["windows_out"] + drops["backpressure"] + drops["shutdown"], (sid, count, st)
        top = st["latency_ms"]["max"] / 1000
        i = next(i for i, (_, c) in enumerate(buckets) if c == count)
        below = buckets[i - 1][0] if i else 0.0
        assert below - 1e-5 < top <= buckets[i][0] + 1e-5, (sid, top, buckets)
        assert top - 1e-5 <= total <= count * top + 1e-5, (sid, top, total, count)
