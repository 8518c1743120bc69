"""Recordings and the live view, checked with independent implementations:
PyPI `mcap` (reader and writer), `mcap-protobuf-support` (protobuf decoding),
`foxglove-sdk` (Foxglove's own schema encoders) and a raw Foxglove WebSocket client.

Run by `make test` with SENSEBIND_BIN and ORT_DYLIB_PATH set.
"""
import asyncio
import json
import math
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import websockets
from mcap.decoder import DecoderFactory as BaseDecoderFactory
from mcap.exceptions import EndOfFile
from mcap.reader import make_reader
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader
from mcap.writer import Writer
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory

from test_bus_client import BIN, free_port, sources_toml
from test_bus_client import write_config as bus_config

DEMO = {"camera": "camera", "depth": "depth", "thermal": "thermal", "microphone": "microphone", "imu": "imu"}


class JsonDecoderFactory(BaseDecoderFactory):
    """The generic decoder for `json` channels with a `jsonschema` schema."""

    def decoder_for(self, message_encoding, schema):
        if message_encoding == "json" and schema is not None and schema.encoding == "jsonschema":
            return lambda data: json.loads(data)
        return None


def write_config(tmp_path, extra=""):
    return bus_config(tmp_path, free_port(), '[engine]\nproviders = ["cpu"]\n' + extra)


def run(args, timeout=120):
    assert os.environ.get("ORT_DYLIB_PATH"), "run through `make test`"
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stderr[-3000:]}"
    return p


def decoded(path):
    """Every message of a file, decoded by generic decoders: {topic: [decoded...]}."""
    out = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[ProtobufDecoderFactory(), JsonDecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((schema.name, message.log_time, msg))
    return out


def embeddings(path):
    return {
        (topic, m["seq"]): np.array(m["embedding"], dtype=np.float64)
        for topic, msgs in decoded(path).items()
        if topic.startswith("embedding/")
        for _, _, m in msgs
    }


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    cfg = write_config(tmp, sources_toml(DEMO))
    out = tmp / "run.mcap"
    p = run(["record", "--config", str(cfg), "--out", str(out), "--seconds", "5", "--embeddings"])
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0, summary
    return tmp, cfg, out


def test_every_channel_decodes_with_a_generic_reader(recording):
    _, _, out = recording
    got = decoded(out)
    for m, src in [("vision", "camera"), ("depth", "depth"), ("thermal", "thermal"), ("audio", "microphone"), ("imu", "imu")]:
        assert got.get(f"frames/{m}/{src}"), f"no frames/{m}/{src} in {sorted(got)}"
        assert got.get(f"embedding/{m}/{src}"), f"no embedding/{m}/{src}"
        assert got.get(f"labels/{m}/{src}"), f"no labels/{m}/{src}"
    schema, t, img = got["frames/vision/camera"][0]
    assert (schema, img.encoding, img.step) == ("foxglove.RawImage", "rgb8", img.width * 3)
    assert len(img.data) == img.width * img.height * 3
    assert img.timestamp.seconds * 10**9 + img.timestamp.nanos == t
    assert got["frames/depth/depth"][0][2].encoding == "16UC1"
    assert got["frames/thermal/thermal"][0][2].encoding == "mono16"
    schema, _, audio = got["frames/audio/microphone"][0]
    assert (schema, audio.format, audio.number_of_channels) == ("foxglove.RawAudio", "pcm-s16", 1)
    schema, _, imu = got["frames/imu/imu"][0]
    assert schema == "sensebind.Imu" and len(imu["accel"]) == 3 and len(imu["gyro"]) == 3
    schema, t, e = got["embedding/audio/microphone"][0]
    assert schema == "sensebind.Embedding" and e["dim"] == len(e["embedding"]) and t == e["t_end_ns"]
    assert abs(math.fsum(x * x for x in e["embedding"]) - 1.0) < 1e-4


def test_replay_gives_the_live_embeddings(recording):
    tmp, cfg, out = recording
    again = tmp / "replayed.mcap"
    run(["replay", str(out), "--pace", "fast", "--out", str(again), "--config", str(cfg)])
    live, replayed = embeddings(out), embeddings(again)
    assert len(live) >= 10 and live.keys() == replayed.keys(), (sorted(live), sorted(replayed))
    for k, v in live.items():
        w = replayed[k]
        cos = float(v @ w / (np.linalg.norm(v) * np.linalg.norm(w)))
        assert cos >= 0.9999, f"{k}: cosine {cos}"


def test_a_recording_cut_short_stays_readable(recording):
    tmp, cfg, out = recording
    data = out.read_bytes()
    cut = tmp / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    # An independent streaming reader gets the messages before the cut.
    n = 0
    with open(cut, "rb") as f:
        try:
            for record in StreamReader(f).records:
                n += isinstance(record, McapMessage)
        except EndOfFile:
            pass
    assert n > 100, n
    # And it replays up to its last complete chunk.
    again = tmp / "cut-replayed.mcap"
    run(["replay", str(cut), "--pace", "fast", "--out", str(again), "--config", str(cfg)])
    frames = sum(len(v) for k, v in decoded(again).items() if k.startswith("frames/"))
    assert frames > 50, frames


def test_a_file_written_by_python_replays(tmp_path):
    """A recording written with PyPI `mcap` and foxglove-sdk's schema encoders."""
    from foxglove.messages import RawAudio, RawImage, Timestamp

    path = tmp_path / "py.mcap"
    t0 = 1_700_000_000 * 10**9
    with open(path, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="pytest")
        img_schema = w.register_schema(
            name="foxglove.RawImage", encoding="protobuf", data=RawImage.get_schema().data
        )
        aud_schema = w.register_schema(
            name="foxglove.RawAudio", encoding="protobuf", data=RawAudio.get_schema().data
        )
        cam = w.register_channel(topic="frames/vision/pycam", message_encoding="protobuf", schema_id=img_schema)
        mic = w.register_channel(topic="frames/audio/pymic", message_encoding="protobuf", schema_id=aud_schema)
        rng = np.random.default_rng(0)
        for i in range(5 * 10):  # 5 s of 10 Hz 64×48 frames
            t = t0 + i * 100_000_000
            px = rng.integers(0, 255, size=64 * 48 * 3, dtype=np.uint8).tobytes()
            msg = RawImage(
                timestamp=Timestamp(sec=t // 10**9, nsec=t % 10**9),
                frame_id="pycam", width=64, height=48, encoding="rgb8", step=64 * 3, data=px,
            )
            w.add_message(channel_id=cam, log_time=t, publish_time=t, data=msg.encode())
        for i in range(5 * 50):  # 5 s of 20 ms 16 kHz chunks
            t = t0 + i * 20_000_000
            tone = (np.sin(np.arange(320) * 0.1 + i) * 8000).astype("<i2").tobytes()
            msg = RawAudio(
                timestamp=Timestamp(sec=t // 10**9, nsec=t % 10**9),
                data=tone, format="pcm-s16", sample_rate=16000, number_of_channels=1,
            )
            w.add_message(channel_id=mic, log_time=t, publish_time=t, data=msg.encode())
        w.finish()
    cfg = write_config(tmp_path)
    out = tmp_path / "computed.mcap"
    run(["replay", str(path), "--pace", "fast", "--out", str(out), "--config", str(cfg)])
    got = embeddings(out)
    assert any(k[0] == "embedding/vision/pycam" for k in got), sorted(got)
    assert any(k[0] == "embedding/audio/pymic" for k in got), sorted(got)


async def foxglove_client(port, want, seconds=60):
    """Subscribe to every advertised channel; return {topic: first decoded payload} once
    every topic prefix in `want` has sent a message."""
    seen = {}
    async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"]) as ws:
        channels, subscribed = {}, {}
        deadline = asyncio.get_event_loop().time() + seconds
        while asyncio.get_event_loop().time() < deadline:
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=5)
            except asyncio.TimeoutError:
                continue
            if isinstance(msg, str):
                m = json.loads(msg)
                if m["op"] == "advertise":
                    subs = []
                    for c in m["channels"]:
                        channels[c["id"]] = c
                        sid = len(subscribed) + 1
                        subscribed[sid] = c
                        subs.append({"id": sid, "channelId": c["id"]})
                    await ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))
            else:
                op, sid, _ts = struct.unpack_from("<BIQ", msg)
                if op == 1 and sid in subscribed:
                    c = subscribed[sid]
                    seen.setdefault(c["topic"], (c["schemaName"], msg[13:]))
            if all(any(t.startswith(w) for t in seen) for w in want):
                return seen
    raise AssertionError(f"live view: saw {sorted(seen)}, wanted {want}")


def test_the_live_view_streams_senses_and_readings(tmp_path):
    port = free_port()
    cfg = write_config(
        tmp_path,
        sources_toml(DEMO) + f"\n[foxglove]\nenabled = true\nport = {port}\nimage_rate_hz = 10.0\n",
    )
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(100):
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                import time

                time.sleep(0.2)
        # A registered query: its similarity with every window is plotted live.
        q = subprocess.run(
            [BIN, "query", "add", "q1", "--text", "a dog barking", "--threshold", "0.99", "--config", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )
        assert q.returncode == 0, q.stderr
        seen = asyncio.run(
            foxglove_client(
                port,
                ["frames/vision/camera", "frames/depth/depth", "frames/thermal/thermal", "audio_level/microphone",
                 "frames/imu/imu", "labels/vision/camera", "labels/audio/microphone", "similarity/q1"],
            )
        )
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    schema, payload = seen["frames/vision/camera"]
    assert schema == "foxglove.RawImage"
    assert len(payload) > 100
    schema, payload = seen["audio_level/microphone"]
    level = json.loads(payload)
    assert schema == "sensebind.AudioLevel" and level["peak_dbfs"] <= 0.0
    schema, payload = seen["labels/vision/camera"]
    assert schema == "sensebind.Labels" and json.loads(payload)["top"]
    schema, payload = seen["similarity/q1"]
    sim = json.loads(payload)
    assert schema == "sensebind.Similarity" and sim["query_id"] == "q1" and -1.0 <= sim["score"] <= 1.0
