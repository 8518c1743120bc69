#!/usr/bin/env python3
"""Write the seed corpus of the cargo-fuzz targets (fuzz/corpus/<target>/).

Run with the dev venv (.venv/bin/python tools/fuzz_corpus.py): it needs numpy, pillow
and foxglove-sdk (tools/dev.sh installs them). The seeds are small valid inputs of
each format, plus a few near-misses; libFuzzer mutates from there.
"""
import io
import json
import pathlib
import struct
import wave

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def wav_bytes(rate, channels, width, frames, float32=False):
    if float32:  # WAVE_FORMAT_IEEE_FLOAT, written by hand (the wave module cannot)
        data = np.linspace(-1, 1, frames * channels, dtype="<f4").tobytes()
        fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
        return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
                + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes((i * 37) % 256 for i in range(frames * channels * width)))
    return buf.getvalue()


def png(mode, size, dtype=np.uint8):
    a = (np.arange(size[0] * size[1] * (3 if mode == "RGB" else 1)) % 251).astype(dtype)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    img = Image.fromarray(a.reshape(shape), mode=mode if mode != "I;16" else None)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg(size):
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def main():
    # Bus requests and the query store.
    for i, body in enumerate([
        {"text": "a dog barking"},
        {"text": "the number seven", "threshold": 0.5, "modalities": ["vision", "imu"], "cooldown_s": 2},
        {"text": "x", "sources": ["camera", "mic"], "threshold": -1},
        {"text": "", "threshold": 7},
    ]):
        put("query_json", f"request{i}.json", json.dumps(body))
    put("query_json", "store.json", json.dumps({"version": 1, "queries": [
        {"id": "q1", "text": "a red car", "threshold": 0.3, "modalities": ["vision"], "sources": [], "cooldown_s": 10.0}]}))
    put("query_json", "truncated.json", '{"version":1,"queries":[{"id":"old","text":"a')
    # Config files.
    put("config_toml", "demo.toml", (ROOT / "configs" / "demo.toml").read_text())
    put("config_toml", "robot.toml", (ROOT / "launch" / "robot.toml").read_text())
    put("config_toml", "small.toml", '[window]\nlength_s = 2.0\nhop_s = 1.0\n[sources.cam]\ntype = "synthetic"\nsensor = "camera"\n[queries.presets.dog]\ntext = "a dog"\n')
    # WAV.
    put("wav", "s16_mono.wav", wav_bytes(16000, 1, 2, 200))
    put("wav", "u8_stereo.wav", wav_bytes(8000, 2, 1, 100))
    put("wav", "s24_mono.wav", wav_bytes(48000, 1, 3, 50))
    put("wav", "f32_stereo.wav", wav_bytes(44100, 2, 4, 64, float32=True))
    # Images.
    put("image", "rgb.png", png("RGB", (7, 5)))
    put("image", "gray.png", png("L", (9, 4)))
    put("image", "gray16.png", png("I;16", (6, 6), np.uint16))
    put("image", "red.jpg", jpeg((16, 8)))
    # IMU CSV.
    put("imu_csv", "imu.csv", "t_s,ax,ay,az,gx,gy,gz\n0.000,0.1,0.0,9.81,0.01,0.0,0.0\n0.005,0.2,0.0,9.80,0.02,0.0,0.0\n")
    put("imu_csv", "bad.csv", "t_s,ax,ay,az,gx,gy,gz\n0.0,1,2,3\nnan,1,2,3,4,5,6\n")
    # V4L2 buffers: [format selector | 0x80 for thermal, width u16, height u16, pixels].
    hdr = lambda sel, w, h: bytes([sel]) + struct.pack("<HH", w, h)
    put("v4l2_convert", "yuyv_4x2", hdr(1, 4, 2) + bytes(range(16)))
    put("v4l2_convert", "rgb3_2x2", hdr(2, 2, 2) + bytes(range(12)))
    put("v4l2_convert", "grey_3x3", hdr(3, 3, 3) + bytes(range(9)))
    put("v4l2_convert", "y16_thermal_2x2", hdr(0x84, 2, 2) + bytes(range(8)))
    put("v4l2_convert", "mjpeg_16x8", hdr(0, 16, 8) + jpeg((16, 8)))
    # Tokenizer.
    for i, t in enumerate(["a dog barking", "THE NUMBER SEVEN!!", "café — naïve 日本語 😀", "x " * 100]):
        put("tokenizer", f"text{i}.txt", t)
    # Frame messages and an MCAP file, written with the Foxglove SDK's own schemas.
    import foxglove
    from foxglove.messages import CompressedImage, RawAudio, RawImage, Timestamp
    ts = Timestamp(sec=1, nsec=5)
    raw = RawImage(timestamp=ts, frame_id="cam", width=2, height=2, encoding="rgb8", step=6, data=bytes(range(12)))
    depth = RawImage(timestamp=ts, frame_id="d", width=2, height=1, encoding="16UC1", step=4, data=bytes([1, 2, 3, 4]))
    comp = CompressedImage(timestamp=ts, frame_id="cam", data=jpeg((8, 8)), format="jpeg")
    audio = RawAudio(timestamp=ts, data=bytes(range(64)), format="pcm-s16", sample_rate=16000, number_of_channels=1)
    imu = json.dumps({"t_ns": 1000, "accel": [0.0, 0.0, 9.81], "gyro": [0.1, 0.0, 0.0]}).encode()
    # mcap_frame: [selector (modality = sel % 5 in vision, audio, depth, thermal, imu order
    # of Modality::SENSED; schema = sel / 5 % 4: RawImage, CompressedImage, RawAudio, Imu) | body].
    put("mcap_frame", "raw_rgb", bytes([0]) + raw.encode())
    put("mcap_frame", "raw_depth16", bytes([2]) + depth.encode())
    put("mcap_frame", "jpeg", bytes([5]) + comp.encode())
    put("mcap_frame", "audio", bytes([11]) + audio.encode())
    put("mcap_frame", "imu", bytes([19]) + imu)
    out = CORPUS / "mcap"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "frames.mcap"
    if path.exists():
        path.unlink()
    with foxglove.open_mcap(str(path)):
        foxglove.log("frames/vision/cam", raw, log_time=1_000_000_000)
        foxglove.log("frames/vision/cam2", comp, log_time=1_100_000_000)
        foxglove.log("frames/audio/mic", audio, log_time=1_000_000_000)
        foxglove.log("frames/depth/d", depth, log_time=1_000_000_000)

    # ros2_cdr: [selector = type index (Image, CompressedImage, Imu, AudioData,
    # AudioDataStamped) + 5 × sensor index (camera, depth, thermal, microphone, imu)]
    # then one message as rosbags serialized it (tests/fixtures/ros2, tools/ros2_fixtures.py).
    fx = ROOT / "tests" / "fixtures" / "ros2"
    for name, t, s in [("image_rgb8_padded", 0, 0), ("image_16uc1_be", 0, 1), ("compressed_jpeg", 1, 0),
                       ("imu", 2, 4), ("audio_data", 3, 3), ("audio_data_stamped", 4, 3)]:
        put("ros2_cdr", name, bytes([t + 5 * s]) + (fx / f"{name}.cdr").read_bytes())


if __name__ == "__main__":
    main()
