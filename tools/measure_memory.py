#!/usr/bin/env python3
"""Measure the daemon's memory per pack and modality set, next to `sensebind check`'s
estimate: the figures of docs/jetson.md's memory table.

For each set, `sensebind run` is started on synthetic sensors of those kinds with the
pack given and the CPU provider, and left running until every stream has published
`--windows` windows (read from its Prometheus `/metrics`,
`sensebind_stream_windows_published_total`), so every encoder has run at least that
many times; then its peak resident memory (VmHWM of /proc/<pid>/status) is read and
the daemon stopped. `sensebind check --json` on the same configuration gives the
weights and the estimate. Standard library only:

    tools/measure_memory.py --bin target/release/sensebind --pack builtin:minibind \\
        --sets camera+mic,camera+depth+mic+imu,all

Prints one Markdown table row per set, and with --json a JSON line per set.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SENSORS = {"camera": "camera", "mic": "microphone", "depth": "depth", "thermal": "thermal", "imu": "imu"}
ALL = ["camera", "mic", "depth", "thermal", "imu"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp: Path, pack: str, sensors, threads: int) -> Path:
    mport, bport = free_port(), free_port()
    text = f"""
[robot]
id = "memory"
state_dir = "{tmp / 'state'}"
[pack]
path = "{pack}"
[engine]
providers = ["cpu"]
intra_threads = {threads}
[bus]
listen = ["tcp/127.0.0.1:{bport}"]
[prometheus]
listen = "127.0.0.1:{mport}"
"""
    for s in sensors:
        text += f'[sources.{s}]\ntype = "synthetic"\nsensor = "{SENSORS[s]}"\n'
    cfg = tmp / "memory.toml"
    cfg.write_text(text)
    return cfg, mport


def published(mport):
    """windows published per (source, modality), from /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("sensebind_stream_windows_published_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            out[(labels.get("source"), labels.get("modality"))] = float(line.rsplit(" ", 1)[1])
    return out


def status_kib(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def measure(bin_, pack, sensors, windows, timeout, threads):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg, mport = config(tmp, pack, sensors, threads)
        chk = subprocess.run([bin_, "check", "--json", "--config", str(cfg)], capture_output=True, text=True)
        report = json.loads(chk.stdout) if chk.stdout.strip() else {}
        if chk.returncode != 0:
            raise SystemExit(f"sensebind check failed for {sensors}: {chk.stderr.strip()}")
        log = open(tmp / "daemon.log", "w")
        t0 = time.monotonic()
        proc = subprocess.Popen([bin_, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = t0 + timeout
            counts = {}
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited ({proc.returncode}): {(tmp / 'daemon.log').read_text()[-2000:]}")
                try:
                    counts = published(mport)
                except OSError:
                    counts = {}
                if len(counts) >= len(sensors) and min(counts.values()) >= windows:
                    break
                time.sleep(1)
            else:
                raise SystemExit(f"{sensors}: not {windows} windows per stream in {timeout} s: {counts}")
            hwm, rss = status_kib(proc.pid, "VmHWM"), status_kib(proc.pid, "VmRSS")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return {
            "pack": report.get("pack", {}).get("name"),
            "sensors": sensors,
            "modalities": report["memory"]["modalities"],
            "weights_bytes": report["memory"]["estimate"]["weights_bytes"],
            "estimate_cpu_fp32_rss_bytes": report["memory"]["estimate"]["cpu_fp32_rss_bytes"],
            "estimate_gpu_fp16_bytes": report["memory"]["estimate"]["gpu_fp16_bytes"],
            "peak_rss_bytes": hwm * 1024,
            "rss_bytes": rss * 1024,
            "windows_per_stream": min(counts.values()),
            "seconds": round(time.monotonic() - t0, 1),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/sensebind")
    ap.add_argument("--pack", default="builtin:minibind", help="pack directory, or builtin:minibind")
    ap.add_argument("--sets", default="camera+mic,camera+depth+mic+imu,all",
                    help="comma-separated sets of camera, mic, depth, thermal, imu (`all`: the five)")
    ap.add_argument("--windows", type=int, default=3, help="windows each stream publishes before reading (3)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per set (900)")
    ap.add_argument("--threads", type=int, default=0, help="engine.intra_threads (0: ONNX Runtime's default)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per set")
    a = ap.parse_args()
    if not os.environ.get("ORT_DYLIB_PATH"):
        raise SystemExit("set ORT_DYLIB_PATH (tools/dev.sh ort-path)")
    mib = lambda b: b / 2**20
    print("| pack | sensors | encoders | weights MiB | estimate CPU fp32 MiB | peak RSS MiB | estimate / measured |")
    print("|---|---|---|---:|---:|---:|---:|")
    for s in a.sets.split(","):
        sensors = ALL if s == "all" else s.split("+")
        unknown = [x for x in sensors if x not in SENSORS]
        if unknown:
            raise SystemExit(f"--sets: unknown sensor(s) {unknown}; expected {sorted(SENSORS)} or all")
        r = measure(a.bin, a.pack, sensors, a.windows, a.timeout, a.threads)
        print(f"| {r['pack']} | {'+'.join(sensors)} | {'+'.join(r['modalities'])} | {mib(r['weights_bytes']):.1f} | "
              f"{mib(r['estimate_cpu_fp32_rss_bytes']):.0f} | {mib(r['peak_rss_bytes']):.0f} | "
              f"{r['estimate_cpu_fp32_rss_bytes'] / r['peak_rss_bytes']:.2f} |", flush=True)
        if a.json:
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    sys.exit(main())
