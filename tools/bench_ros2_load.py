#!/usr/bin/env python3
"""Load check for issue 22, deliverable 6: a 30 Hz 1080p camera, 16 kHz audio and a
200 Hz IMU over ROS 2 (rmw_zenoh) keep up on this machine's cores with the built-in
pack, no window dropped.

What it does, in one process:

1. starts a zenoh router (eclipse-zenoh, mode router, a free loopback port): the
   robot's ``rmw_zenohd``;
2. writes a daemon config with three ``type = "ros2"`` sources (``/camera/image_raw``
   camera 30 Hz, ``/audio`` microphone 16 kHz mono, ``/imu/data`` IMU 200 Hz; the
   built-in pack, 2 s windows) and starts ``target/release/sensebind run`` on it,
   waiting for three ``source_started`` log lines;
3. publishes, paced in real time by one scheduler loop (``time.monotonic``), from a
   stand-in rmw_zenoh node (tests/python/ros2_node.py): ``sensor_msgs/msg/Image``
   1920x1080 rgb8 (step = 3·width, as a camera driver sends it; 8 distinct frames) at
   30 Hz, ``audio_common_msgs/msg/AudioDataStamped`` 20 ms chunks of S16LE (50 msg/s),
   ``sensor_msgs/msg/Imu`` at 200 Hz; every header.stamp is ``time.time_ns()`` at send.
   Publishing starts on a 2 s grid point, so every window is a full one.
   Camera payloads: ``--payload patch`` (default) serializes each distinct frame once
   with rosbags and patches the 8 stamp bytes (sec i32 LE at offset 4, nanosec u32 LE
   at offset 8, after the 4-byte CDR encapsulation header) before each put;
   ``--payload serialize`` runs rosbags on every message (6 MB each);
4. keeps every ``sensebind/<robot>/health`` JSON (client session), waits ``--settle``
   s after publishing (the last windows close and are embedded), then SIGTERMs the
   daemon and waits for it to exit;
5. prints per source frames, errors, driver.received / driver.dropped (and what the
   publisher sent), per stream windows_in / windows_out / windows_dropped (every
   reason) / latency_ms p50 and p95, the daemon's peak RSS (VmHWM, sampled every
   second) and average CPU% (utime + stime from /proc/<pid>/stat over the publishing
   wall time), the publisher's own CPU% and achieved message rates, and the log's
   window_dropped / source_bad_data / encoder_behind lines.

Window counts come from the last health stamped before the end of publishing + 2.6 s:
it holds every window of the load (the last closes at end + window.idle_flush_s) and
none after it. Once the publisher stops, the daemon closes each quiet stream's empty
windows on the stream's clock and counts them as `coverage` drops (a silent sensor is
reported by design); the health at shutdown shows these in the `after` column, and
they do not fail the check; any other drop after the load does.

Exit 0 only if no stream dropped a window during the load, each published
windows_out >= seconds/2 - 2, and the publisher achieved >= 95 % of each target rate;
else 1, with the reasons.

Run (release binary already built; ONNX Runtime from the venv):

    export ORT_DYLIB_PATH=$(tools/dev.sh ort-path)
    .venv/bin/python tools/bench_ros2_load.py --seconds 30
    .venv/bin/python tools/bench_ros2_load.py --seconds 30 --payload serialize --keep

Zenoh congestion control is Drop (what rmw_zenoh uses for a KEEP_LAST publisher), so
a sample zenoh itself drops shows as driver.received < sent; ``--block`` uses Block.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
import ros2_node as rn  # noqa: E402

ROBOT = "loadbench"
WINDOW_S = 2.0
W, H = 1920, 1080
CAM_HZ, IMU_HZ, AUDIO_RATE, AUDIO_CHUNK_S = 30.0, 200.0, 16000, 0.020
AUDIO_HZ = 1.0 / AUDIO_CHUNK_S
DISTINCT_FRAMES = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")

# source id -> (topic, ROS type, target messages/s, modality the stream is named by)
SOURCES = {
    "cam": ("/camera/image_raw", "sensor_msgs/msg/Image", CAM_HZ, "vision"),
    "mic": ("/audio", "audio_common_msgs/msg/AudioDataStamped", AUDIO_HZ, "audio"),
    "imu": ("/imu/data", "sensor_msgs/msg/Imu", IMU_HZ, "imu"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[bench_ros2_load] {msg}", file=sys.stderr, flush=True)


def daemon_config(tmp: Path, router_port: int) -> Path:
    cfg = tmp / "sensebind.toml"
    cfg.write_text(
        f"""[robot]
id = "{ROBOT}"
state_dir = "{tmp / 'state'}"

[bus]
connect = ["tcp/127.0.0.1:{router_port}"]

[health]
interval_s = 1.0

[sources.cam]
type = "ros2"
topic = "/camera/image_raw"
sensor = "camera"
rate_hz = 30

[sources.mic]
type = "ros2"
topic = "/audio"
sensor = "microphone"
rate = 16000
channels = 1

[sources.imu]
type = "ros2"
topic = "/imu/data"
sensor = "imu"
rate_hz = 200
"""
    )
    return cfg


# ------------------------------------------------------------------ /proc sampling


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


class Sampler(threading.Thread):
    """Every second: the daemon's VmHWM / VmRSS and CPU time, until it exits."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.hwm_kib = self.rss_max_kib = 0
        self.cpu_s = 0.0

    def sample(self) -> None:
        try:
            m = proc_mem_kib(self.pid)
            self.hwm_kib = max(self.hwm_kib, m.get("VmHWM", 0))
            self.rss_max_kib = max(self.rss_max_kib, m.get("VmRSS", 0))
            self.cpu_s = proc_cpu_s(self.pid)
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            pass

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.sample()


# ------------------------------------------------------------------ messages


def camera_frames(rng) -> list[np.ndarray]:
    """`DISTINCT_FRAMES` 1080p rgb8 frames: a moving gradient plus noise (not all
    alike, so nothing downstream can shortcut them)."""
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for k in range(DISTINCT_FRAMES):
        r = ((xx + 40 * k) % 256).astype(np.uint8)
        g = ((yy + 25 * k) % 256).astype(np.uint8)
        b = ((xx // 8 + yy // 8 + 17 * k) % 256).astype(np.uint8)
        img = np.dstack([r, g, b])
        img ^= rng.integers(0, 16, img.shape, dtype=np.uint8)
        out.append(np.ascontiguousarray(img))
    return out


def image_msg(t_ns: int, rgb: np.ndarray):
    """An unpadded rgb8 Image (step = 3·width), as a camera driver publishes one."""
    h, w, _ = rgb.shape
    return rn.T["sensor_msgs/msg/Image"](
        header=rn.header(t_ns, "camera"), height=h, width=w, encoding="rgb8", is_bigendian=0,
        step=w * 3, data=rgb.reshape(-1),
    )


def patch_stamp(buf: bytearray, t_ns: int) -> None:
    """header.stamp of a serialized message: after the 4-byte encapsulation header,
    sec (int32 LE) then nanosec (uint32 LE)."""
    struct.pack_into("<iI", buf, 4, t_ns // 1_000_000_000, t_ns % 1_000_000_000)


class Stream:
    """One topic's publisher: what to send next and when."""

    def __init__(self, sid, pub, hz, make):
        self.sid, self.pub, self.hz, self.make = sid, pub, hz, make
        self.period = 1.0 / hz
        self.sent = 0
        self.send_s = 0.0  # time spent building + putting
        self.next_due = 0.0


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="publishing time (rounded up to whole windows)")
    ap.add_argument("--payload", choices=["patch", "serialize"], default="patch",
                    help="camera CDR: serialized once per distinct frame and stamp-patched, or by rosbags per message")
    ap.add_argument("--block", action="store_true", help="zenoh congestion control Block instead of Drop")
    ap.add_argument("--settle", type=float, default=6.0, help="seconds to wait after publishing before SIGTERM")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "sensebind"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (config, daemon.log)")
    args = ap.parse_args()

    if not os.environ.get("ORT_DYLIB_PATH"):
        log("warning: ORT_DYLIB_PATH is not set (export ORT_DYLIB_PATH=$(tools/dev.sh ort-path))")
    if not Path(args.bin).exists():
        raise SystemExit(f"error: no {args.bin} (cargo build --release)")
    windows = max(1, math.ceil(args.seconds / WINDOW_S))
    seconds = windows * WINDOW_S

    tmp = Path(tempfile.mkdtemp(prefix="bench_ros2_load."))
    rport = free_port()
    router = rn.router(rport)
    cfg = daemon_config(tmp, rport)
    node_session = rn.rmw_session(rport)
    node = rn.Node(node_session, "load_driver", "/robot")
    pubs = {sid: node.publisher(topic, typ, block=args.block) for sid, (topic, typ, _, _) in SOURCES.items()}

    # Health: every message (the final one, at shutdown, comes after SIGTERM).
    watcher = rn.client_session(rport)
    healths: list[dict] = []

    def on_health(s):
        try:
            healths.append(json.loads(s.payload.to_bytes()))
        except ValueError:
            pass

    hsub = watcher.declare_subscriber(f"sensebind/{ROBOT}/health", on_health)

    # Messages, prepared before the daemon starts.
    rng = np.random.default_rng(22)
    frames = camera_frames(rng)
    cam_payloads = None
    if args.payload == "patch":
        cam_payloads = [bytearray(rn.STORE.serialize_cdr(image_msg(0, f), "sensor_msgs/msg/Image")) for f in frames]
    # Time rosbags serializing a 1080p frame, for the record (warm: median of 5).
    ser = []
    for k in range(6):
        t = time.perf_counter()
        rn.STORE.serialize_cdr(image_msg(time.time_ns(), frames[k % DISTINCT_FRAMES]), "sensor_msgs/msg/Image")
        ser.append((time.perf_counter() - t) * 1e3)
    ser_ms = sorted(ser[1:])[2]
    chunk = int(AUDIO_RATE * AUDIO_CHUNK_S)
    audio_t = 0

    def make_cam(k, t_ns):
        if cam_payloads is not None:
            buf = cam_payloads[k % DISTINCT_FRAMES]
            patch_stamp(buf, t_ns)
            return buf
        return rn.STORE.serialize_cdr(image_msg(t_ns, frames[k % DISTINCT_FRAMES]), "sensor_msgs/msg/Image")

    def make_mic(k, t_ns):
        nonlocal audio_t
        n = np.arange(audio_t, audio_t + chunk)
        audio_t += chunk
        pcm = 6000 * np.sin(2 * np.pi * 440 * n / AUDIO_RATE) + rng.normal(0, 300, chunk)
        return rn.STORE.serialize_cdr(rn.audio_stamped(t_ns, pcm.astype(np.int16)), "audio_common_msgs/msg/AudioDataStamped")

    def make_imu(k, t_ns):
        ph = 2 * np.pi * k / IMU_HZ
        accel = (0.3 * math.sin(ph), 0.2 * math.cos(ph), 9.81 + 0.05 * math.sin(3 * ph))
        gyro = (0.01 * math.cos(ph), 0.02 * math.sin(2 * ph), 0.005)
        return rn.STORE.serialize_cdr(rn.imu(t_ns, accel, gyro), "sensor_msgs/msg/Imu")

    makers = {"cam": make_cam, "mic": make_mic, "imu": make_imu}
    streams = [Stream(sid, pubs[sid], SOURCES[sid][2], makers[sid]) for sid in SOURCES]

    daemon_log = tmp / "daemon.log"
    env = dict(os.environ)
    proc = subprocess.Popen([args.bin, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(daemon_log, "w"), env=env)
    sampler = Sampler(proc.pid)
    sampler.start()
    failures: list[str] = []
    rc = None
    pub_wall = 0.0
    end_ns = 0
    cpu_pub = (0.0, 0.0)
    pub_cpu_s = 0.0
    try:
        deadline = time.monotonic() + 120
        while daemon_log.read_text().count("source_started") < len(SOURCES):
            if proc.poll() is not None:
                raise SystemExit("error: the daemon exited:\n" + daemon_log.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise SystemExit("error: no 3 x source_started in 120 s:\n" + daemon_log.read_text()[-3000:])
            time.sleep(0.2)
        log(f"daemon pid {proc.pid} started its 3 sources; router tcp/127.0.0.1:{rport}; dir {tmp}")
        time.sleep(1.0)  # subscriptions reach the router

        # Start on a 2 s grid point (at least 1 s away), so windows are whole.
        now_ns = time.time_ns()
        grid_ns = (now_ns // 2_000_000_000 + 2) * 2_000_000_000
        time.sleep((grid_ns - time.time_ns()) / 1e9)
        end_ns = grid_ns + int(seconds * 1e9)
        log(f"publishing {seconds:.0f} s: 1920x1080 rgb8 @ {CAM_HZ:.0f} Hz ({args.payload}), "
            f"audio {AUDIO_RATE} Hz in {AUDIO_CHUNK_S * 1e3:.0f} ms chunks, IMU @ {IMU_HZ:.0f} Hz")
        start = time.monotonic()
        end = start + seconds
        for s in streams:
            s.next_due = start
        cpu0 = proc_cpu_s(proc.pid)
        t_cpu0 = os.times()
        max_lag = {s.sid: 0.0 for s in streams}
        while True:
            s = min(streams, key=lambda x: x.next_due)
            if s.next_due >= end:
                break
            delay = s.next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                max_lag[s.sid] = max(max_lag[s.sid], -delay)
            if time.monotonic() >= end:
                break
            t0 = time.perf_counter()
            t_ns = time.time_ns()
            s.pub.put_raw(s.make(s.sent, t_ns), t_ns)
            s.send_s += time.perf_counter() - t0
            s.sent += 1
            s.next_due += s.period
        pub_wall = time.monotonic() - start
        cpu_pub = (cpu0, proc_cpu_s(proc.pid))
        t_cpu1 = os.times()
        pub_cpu_s = (t_cpu1.user + t_cpu1.system) - (t_cpu0.user + t_cpu0.system)
        log(f"published for {pub_wall:.2f} s; settling {args.settle:.0f} s")
        time.sleep(args.settle)
        sampler.sample()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            failures.append("the daemon did not stop within 30 s of SIGTERM")
        time.sleep(0.5)  # the final health, if it comes
    finally:
        sampler.stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hsub.undeclare()
        watcher.close()
        node_session.close()
        router.close()

    text = daemon_log.read_text()
    # Two health snapshots:
    # - `run`: the last one stamped before end + RUN_CUT_S. The last data window
    #   [end-2 s, end) closes when the stream's clock passes end + window.idle_flush_s
    #   (1 s by default); the first window after the data, [end, end+2 s), cannot close
    #   before end + 3 s. So `run` holds every window of the load and none after it.
    # - `final`: the last one received (at shutdown). After the publisher stops, the
    #   daemon closes the quiet streams' empty windows on their clock and reports them
    #   as coverage drops (by design: a silent sensor is reported, never hidden). Those
    #   are not windows of the load; anything else dropped after `run` is a failure
    #   (e.g. `shutdown`: a window still queued at SIGTERM).
    RUN_CUT_S = 2.6
    run_h = [x for x in healths if x.get("t_ns", 0) < end_ns + int(RUN_CUT_S * 1e9)] if pub_wall else []
    h = run_h[-1] if run_h else None
    final = healths[-1] if healths else None
    if h is None:
        failures.append(f"no health message stamped before publishing end + {RUN_CUT_S} s")
        h = final or {"sources": {}}
    if final is None:
        final = h

    # ---------------------------------------------------------------- summary
    expected = int(seconds / WINDOW_S)
    print()
    print(f"== sensebind ROS 2 load: 1080p30 rgb8 camera + 16 kHz audio + 200 Hz IMU, {seconds:.0f} s, "
          f"{os.cpu_count()} CPUs, built-in pack, camera payload '{args.payload}', "
          f"congestion control {'Block' if args.block else 'Drop'} ==")
    print(f"rosbags serialize_cdr of one 1080p Image: {ser_ms:.1f} ms (median of 5, warm)")
    print()
    print("publisher (one Python process):")
    print(f"  {'topic':<20} {'target/s':>9} {'sent':>6} {'achieved/s':>11} {'%':>6} {'ms/msg':>7} {'max lag ms':>10}")
    for s in streams:
        rate = s.sent / seconds
        pct = 100 * rate / s.hz
        print(f"  {SOURCES[s.sid][0]:<20} {s.hz:>9.0f} {s.sent:>6} {rate:>11.2f} {pct:>5.1f}% "
              f"{1e3 * s.send_s / max(s.sent, 1):>7.2f} {1e3 * max_lag[s.sid]:>10.1f}")
        if rate < 0.95 * s.hz:
            failures.append(f"publisher: {SOURCES[s.sid][0]} at {rate:.2f}/s < 95% of {s.hz:.0f}/s")
    print(f"  loop wall {pub_wall:.2f} s, publisher CPU {100 * pub_cpu_s / max(pub_wall, 1e-9):.0f}% of one core")
    print()
    print(f"daemon sources (health at shutdown, status {final.get('status')}):")
    print(f"  {'source':<6} {'state':<9} {'sent':>6} {'received':>9} {'drv.dropped':>11} {'frames':>7} {'errors':>7} "
          f"{'frames_dropped':>14}")
    sent_of = {s.sid: s.sent for s in streams}
    for sid in SOURCES:
        src = final["sources"].get(sid)
        if src is None:
            failures.append(f"source {sid} not in health")
            print(f"  {sid:<6} (missing)")
            continue
        d = src.get("driver", {})
        print(f"  {sid:<6} {src.get('state', '?'):<9} {sent_of[sid]:>6} {d.get('received', '?'):>9} "
              f"{d.get('dropped', '?'):>11} {src.get('frames', '?'):>7} {src.get('errors', '?'):>7} "
              f"{src.get('frames_dropped', '?'):>14}")
    print()
    lag_s = (h.get("t_ns", end_ns) - end_ns) / 1e9
    print(f"daemon streams (health stamped {lag_s:+.2f} s after the last message; 'after' = what the health at "
          "shutdown adds):")
    print(f"  {'stream':<26} {'in':>4} {'out':>4} {'exp':>4} {'dropped':>7}  {'by reason':<22} "
          f"{'lat p50 ms':>10} {'lat p95 ms':>10} {'max ms':>8}  after")
    for sid in SOURCES:
        src = h["sources"].get(sid)
        if src is None:
            continue
        if not src.get("streams"):
            failures.append(f"source {sid} has no streams")
        for mod, st in src.get("streams", {}).items():
            dr = st.get("windows_dropped", {})
            total = sum(dr.values())
            reasons = ",".join(f"{k}={v}" for k, v in dr.items() if v) or "-"
            lat = st.get("latency_ms", {})

            def f(v):
                return "-" if v is None else f"{v:.0f}"

            fst = final["sources"].get(sid, {}).get("streams", {}).get(mod, st)
            fdr = fst.get("windows_dropped", {})
            extra = {k: fdr.get(k, 0) - dr.get(k, 0) for k in fdr if fdr.get(k, 0) != dr.get(k, 0)}
            extra_out = fst["windows_out"] - st["windows_out"]
            after = ", ".join([f"+{v} {k}" for k, v in extra.items()] + ([f"+{extra_out} out"] if extra_out else []))
            if extra.get("coverage"):
                after += " (empty windows of the quiet stream)"
            print(f"  sources.{sid}.streams.{mod:<10} {st['windows_in']:>4} {st['windows_out']:>4} {expected:>4} "
                  f"{total:>7}  {reasons:<22} {f(lat.get('p50')):>10} {f(lat.get('p95')):>10} {f(lat.get('max')):>8}"
                  f"  {after or '-'}")
            if total:
                failures.append(f"{sid}.{mod}: {total} windows dropped during the load ({reasons})")
            if fst["windows_out"] < expected - 2:
                failures.append(f"{sid}.{mod}: windows_out {fst['windows_out']} < expected {expected} - 2")
            if any(k != "coverage" for k in extra):
                failures.append(f"{sid}.{mod}: dropped after the load: {extra}")
    print()
    cpu_s = cpu_pub[1] - cpu_pub[0]
    print(f"daemon: peak RSS (VmHWM) {sampler.hwm_kib / 1024:.0f} MiB, "
          f"CPU {100 * cpu_s / max(pub_wall, 1e-9):.0f}% while publishing ({cpu_s:.1f} s CPU over {pub_wall:.1f} s; "
          f"100% = one core), exit code {rc}")
    counts = {k: text.count(k) for k in ("window_dropped", "source_bad_data", "encoder_behind", "frame_rejected",
                                         "time_jump", "encode_failed", "publish_failed")}
    print("daemon log: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for line in text.splitlines():
        if any(k in line for k in ("window_dropped", "source_bad_data", "encoder_behind")):
            print("  " + line[:300])
    if rc not in (0, None):
        failures.append(f"daemon exit code {rc}")
    print()
    if failures:
        print("FAIL: " + "; ".join(failures))
    else:
        print(f"PASS: every stream published >= {expected - 2} of {expected} windows, none dropped; "
              "the publisher held >= 95% of every rate")
    if args.keep or failures:
        print(f"(config and daemon.log kept in {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
