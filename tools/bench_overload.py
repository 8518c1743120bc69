#!/usr/bin/env python3
"""Drive the daemon above capacity and show what it drops, how late it publishes and
how much memory it holds, with and without the overload settings, in the same run.

The daemon runs the five synthetic streams at robot rates (640x480 camera at 30 Hz,
848x480 depth at 30 Hz, 160x120 thermal at 9 Hz, 48 kHz microphone, 200 Hz IMU; the
camera is not 1080p here because drawing 1080p frames at 30 Hz takes a whole core of a
2-core machine, which would measure the synthetic source, not the encoders) on a pack
whose encoders cannot keep up: 2 s windows every ``--hop`` seconds (0.25 by default:
four windows per stream per second). First ``sensebind bench``
measures each encoder's cost on the same pack and threads, which gives the offered
load as a multiple of what the machine can embed. Then the same streams run under two
configurations, one after the other:

baseline    ``engine.concurrency = 0`` (every modality's encoder runs whenever it has
            work, all at once), no priorities, no budgets, ``max_wait_s = 0``: only
            the queues' ``drop_oldest`` sheds load (how the daemon behaved before).
overload    ``engine.concurrency = 1``, ``max_wait_s = --max-wait``, and what a robot
            that must always hear and feel, see twice a second, and glance at depth
            and thermal once a second would set: priorities IMU and audio 3, vision
            2, depth and thermal 1; frame-rate budgets vision 0.5, depth and thermal
            1 window/s.

For each: per modality, windows closed and published per second, drops by reason
(from Prometheus, counted after the warm-up), window end -> embedding on the bus
latency p50/p99/max (``sensebind listen --embeddings --json``), and the daemon's
resident memory (max, and its growth from the first to the last third of the run).

    .venv/bin/python tools/bench_overload.py                  # mid pack, 2 threads
    .venv/bin/python tools/bench_overload.py --seconds 120 --json

Needs only the Python standard library, a built sensebind and the mid pack
(``tools/make_bench_pack.sh mid``; ``--pack DIR`` for another).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from bench_vs_official import embedding_latencies, five_streams, log, resolve_pack  # noqa: E402 (stdlib-only at import)

MODALITIES = ["vision", "audio", "depth", "thermal", "imu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def encoder_cost(args, pack: str) -> dict[str, float]:
    """Seconds of machine per window and modality, batch 1, from `sensebind bench`."""
    cli = [args.bin, "bench", "--json", "--seconds", str(args.bench_seconds), "--threads", str(args.threads),
           "--modalities", ",".join(MODALITIES)]
    if pack:
        cli += ["--pack", pack]
    r = subprocess.run(cli, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(cli)} failed:\n{r.stderr[-2000:]}")
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            out[row["modality"]] = 1.0 / row["windows_per_s"]
    return out


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(metric{labels} without source, modality/reason) -> value, summed over sources."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("sensebind_stream_windows_") or "{" not in line:
            continue
        head, value = line.rsplit(" ", 1)
        name, labels = head.split("{", 1)
        lab = dict(kv.split("=", 1) for kv in labels.rstrip("}").split(","))
        lab = {k: v.strip('"') for k, v in lab.items()}
        key = (name + (f":{lab['reason']}" if "reason" in lab else ""), lab.get("modality", "?"))
        out[key] = out.get(key, 0.0) + float(value)
    return out


def wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Until the daemon serves /metrics (its encoders are loaded and warmed up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"error: the daemon exited with status {proc.returncode} before it was ready")
        try:
            scrape(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: the daemon did not serve /metrics within {timeout_s:.0f} s")
            time.sleep(0.5)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_config(args, pack: str, name: str, engine: str) -> dict:
    bus, prom = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pack_line = f'[pack]\npath = "{pack}"\n' if pack else ""
        daemon = tmp / "daemon.toml"
        daemon.write_text(f"""{pack_line}
[robot]
id = "bench"
state_dir = "{tmp / 'state'}"
[window]
length_s = 2.0
hop_s = {args.hop}
[engine]
intra_threads = {args.threads}
{engine}
[bus]
listen = ["tcp/127.0.0.1:{bus}"]
[prometheus]
listen = "127.0.0.1:{prom}"
{five_streams(640, 480)}""")
        client = tmp / "client.toml"
        client.write_text(f'[bus]\nlisten = []\nconnect = ["tcp/127.0.0.1:{bus}"]\n')
        log(f"[{name}] {args.warmup:.0f} s warm-up + {args.seconds:.0f} s")
        d = subprocess.Popen([args.bin, "run", "-c", str(daemon)], stderr=subprocess.DEVNULL)
        rss: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                v = rss_mb(d.pid)
                if v is not None:
                    rss.append((time.monotonic(), v))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            wait_ready(prom, d)
            lp = subprocess.Popen([args.bin, "listen", "-c", str(client), "--robot", "bench", "--embeddings",
                                   "--json", "--seconds", str(args.warmup + args.seconds)],
                                  stdout=subprocess.PIPE, text=True)
            time.sleep(args.warmup)
            steady_from = time.time_ns()
            t0 = time.monotonic()
            before = scrape(prom)
            lat: dict[str, list[float]] = {m: [] for m in MODALITIES}
            embedding_latencies(lp.stdout, steady_from, lat)
            lp.wait()
            after = scrape(prom)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            d.terminate()
            try:
                d.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.kill()
    steady = [v for t, v in rss if t >= t0]
    third = max(1, len(steady) // 3)
    rows = {}
    for m in MODALITIES:
        def delta(metric):
            return after.get((metric, m), 0.0) - before.get((metric, m), 0.0)
        v = sorted(lat.get(m, []))
        pct = (lambda q: v[min(len(v) - 1, int(q * len(v)))]) if v else (lambda q: float("nan"))
        rows[m] = {
            "closed_per_s": delta("sensebind_stream_windows_total") / elapsed,
            "published_per_s": len(v) / elapsed,
            "dropped": {r: delta(f"sensebind_stream_windows_dropped_total:{r}")
                        for r in ("backpressure", "budget", "stale", "coverage", "error")},
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": v[-1] if v else float("nan")},
        }
    return {
        "config": name,
        "seconds": elapsed,
        "rss_mb": {
            "max": max((v for _, v in rss), default=float("nan")),
            "first_third": sum(steady[:third]) / third if steady else float("nan"),
            "last_third": sum(steady[-third:]) / third if steady else float("nan"),
        },
        "modalities": rows,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "sensebind"))
    p.add_argument("--pack", default="mid", help="huge, mid, builtin or a pack directory (default mid)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--hop", type=float, default=0.25, help="window.hop_s: 2 s windows every HOP s (default 0.25)")
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per configuration")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds ignored at each start")
    p.add_argument("--bench-seconds", type=float, default=4.0, help="sensebind bench seconds per modality")
    p.add_argument("--max-wait", type=float, default=4.0, help="engine.max_wait_s of the overload run")
    p.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    args = p.parse_args(argv)
    pack = resolve_pack(args.pack)

    cost = encoder_cost(args, pack)
    per_stream = 1.0 / args.hop
    offered = sum(cost[m] * per_stream for m in MODALITIES)
    log(f"encoder cost per window (s): " + ", ".join(f"{m} {cost[m]:.3f}" for m in MODALITIES))
    log(f"offered load: {offered:.2f} s of encoding per second = {offered:.2f}x capacity")

    baseline = 'concurrency = 0\nmax_wait_s = 0.0\n'
    overload = (f'concurrency = 1\nmax_wait_s = {args.max_wait}\n'
                '[engine.modalities.imu]\npriority = 3\n[engine.modalities.audio]\npriority = 3\n'
                '[engine.modalities.vision]\npriority = 2\nmax_rate_hz = 0.5\n'
                '[engine.modalities.depth]\npriority = 1\nmax_rate_hz = 1.0\n'
                '[engine.modalities.thermal]\npriority = 1\nmax_rate_hz = 1.0\n')
    results = [run_config(args, pack, "baseline", baseline), run_config(args, pack, "overload", overload)]
    for r in results:
        r["offered_load_x_capacity"] = offered
        r["encoder_s_per_window"] = cost
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    print(f"pack {Path(pack).name if pack else 'builtin'}, {args.threads} threads, 2 s windows every {args.hop} s, "
          f"offered load {offered:.2f}x capacity")
    print("| config | modality | closed/s | published/s | dropped: backpressure / budget / stale / coverage "
          "/ error | latency p50 / p99 / max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        for m in MODALITIES:
            x = r["modalities"][m]
            d = x["dropped"]
            lat = x["latency_ms"]
            print(f"| {r['config']} | {m} | {x['closed_per_s']:.2f} | {x['published_per_s']:.2f} | "
                  f"{d['backpressure']:.0f} / {d['budget']:.0f} / {d['stale']:.0f} / {d['coverage']:.0f} "
                  f"/ {d['error']:.0f} | "
                  f"{lat['p50']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f} |")
    for r in results:
        s = r["rss_mb"]
        print(f"{r['config']}: RSS max {s['max']:.0f} MB; mean {s['first_third']:.0f} MB in the first third "
              f"of the measured run, {s['last_third']:.0f} MB in the last")
    b, o = (r["modalities"] for r in results)
    print("p99 latency, overload / baseline: " + ", ".join(
        f"{m} {o[m]['latency_ms']['p99'] / b[m]['latency_ms']['p99']:.2f}"
        for m in MODALITIES if b[m]["latency_ms"]["p99"] > 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
