#!/usr/bin/env python3
"""Write the real-people demo recording, assets/demo-real/demo-real.mcap (issue 23):
a camera and a microphone watching real people show and say the demo's digits, for
machines without a camera or a microphone (`make demo-real`, configs/demo-real.toml).

    python tools/minibind/make_demo_real.py --fsdd /tmp/fsdd/recordings \\
        --bin target/release/sensebind --out assets/demo-real

The sequence is the demo's digit order, 3 7 1 9 4 0 8 2 6 5, each digit for 4 s: two
2 s windows on the daemon's window grid (the recording starts at START_NS, a multiple
of 2 s), 40 s in all. In every window:

- the microphone hears one real person say the digit: a Free Spoken Digit Dataset
  utterance (8 kHz, CC BY-SA 4.0), repetition 45-49 (FSDD's training split; the
  committed test set, tests/fixtures/real-heldout, uses repetitions 0-2), speakers
  taking turns so that the two windows of a digit have different speakers; the rest
  of the window is a quiet microphone noise floor (about -60 dBFS);
- the camera (640×480, 2 fps, JPEG) sees a handwritten card of the digit: a row of
  scikit-learn's `load_digits` counted from the END of the set (the committed test
  set uses the first 20 of each digit), photographed on paper by
  `real.photo` (perspective, lighting, blur, noise, JPEG...; without its
  very-low-resolution-sensor step, see `cards`), the same photo for the window's four
  frames.

None of it is MiniBind training data (FSDD and load_digits are evaluation only).

How: the script writes the frames (JPEG files) and the sound (a WAV), records them
with the daemon itself (`sensebind record`, `file` sources at a fixed `start_ns`, in
real time: 40 s; played fast, the recorder's tap falls behind and loses frames), then
writes the final file with every channel, metadata and time of that recording, except
that the camera's messages (`foxglove.RawImage` rgb8, as the `file` source decodes
JPEG) become the JPEG files they were decoded from (`foxglove.CompressedImage`, as
`sensebind record` writes a UVC camera's MJPEG), in zstd chunks: under 1 MB instead of
about 25 MB. It checks the message counts and that each JPEG decodes to the recorded
pixels, writes assets/demo-real/README.md with the per-window table, and prints the
sizes.

Needs numpy, Pillow, scikit-learn, mcap and foxglove-sdk in the running Python, and a
built sensebind (`--bin`, with ORT_DYLIB_PATH set as for `tools/dev.sh`).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import real  # noqa: E402  (real.photo: a handwritten digit as a camera photo of paper)

SEQ = (3, 7, 1, 9, 4, 0, 8, 2, 6, 5)  # the demo's order (configs/demo.toml)
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WINDOWS_PER_DIGIT = 2
WINDOW_S = 2
N_WINDOWS = len(SEQ) * WINDOWS_PER_DIGIT
SPEAKERS = ("jackson", "theo", "nicolas", "yweweler", "lucas", "george")
REPS = (45, 46, 47, 48, 49)
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
# 2026-01-01T00:00:00Z: on the 2 s window grid (window_origin 0).
START_NS = 1_767_225_600_000_000_000
FPS = 2
WIDTH, HEIGHT = 640, 480
JPEG_QUALITY = 85
RATE = 8000
CHUNK_MS = 20
NOISE_DBFS = -60.0
SEED = 23
CAMERA, MICROPHONE = "camera", "microphone"


def plan(digit_rows: dict[int, list[int]]) -> list[dict]:
    """What each 2 s window holds: digit, FSDD file, load_digits row, offset of speech."""
    out = []
    for w in range(N_WINDOWS):
        d = SEQ[w // WINDOWS_PER_DIGIT]
        rng = np.random.default_rng([SEED, w])
        speaker = SPEAKERS[w % len(SPEAKERS)]
        rep = REPS[int(rng.integers(len(REPS)))]
        # Counted from the end: the last card of digit d, then the one before it.
        row = digit_rows[d][-1 - (w % WINDOWS_PER_DIGIT)]
        out.append({"window": w, "digit": d, "speaker": speaker, "rep": rep,
                    "fsdd": f"{d}_{speaker}_{rep}.wav", "row": row,
                    "speech_at": float(rng.uniform(0.2, 0.6))})
    return out


def read_wav8k(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (RATE, 2, 1), path
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def sound(windows: list[dict], fsdd: Path) -> np.ndarray:
    """40 s at 8 kHz: a quiet, slightly coloured noise floor and one utterance a window."""
    rng = np.random.default_rng([SEED, 1000])
    n = N_WINDOWS * WINDOW_S * RATE
    noise = rng.normal(0, 1, n).astype(np.float32)
    noise = np.convolve(noise, np.ones(4, np.float32) / 4, mode="same")  # a little low-pass
    noise *= 10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(noise ** 2))
    x = noise
    for win in windows:
        u = read_wav8k(fsdd / win["fsdd"])
        fade = min(len(u) // 4, RATE // 100)  # 10 ms in and out: no clicks at the edges
        ramp = np.linspace(0, 1, fade, dtype=np.float32)
        u = u.copy()
        u[:fade] *= ramp
        u[-fade:] *= ramp[::-1]
        start = win["window"] * WINDOW_S * RATE + int(win["speech_at"] * RATE)
        assert start + len(u) <= (win["window"] + 1) * WINDOW_S * RATE, win  # inside its window
        x[start:start + len(u)] += u
    return np.clip(x, -1, 32767 / 32768)


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.round(x * 32768).astype("<i2").tobytes())


def cards(windows: list[dict], images: np.ndarray) -> list[bytes]:
    """One JPEG photo per window of its handwritten card (load_digits, value × 16 as
    8-bit white ink on black, photographed on paper by real.photo).

    real.photo's very-low-resolution-sensor step (`lowres=False`) is left out: a
    load_digits card is already 8×8 counts, and the demo's camera is a 640×480 webcam.
    Everything else of real.photo stays."""
    out = []
    for win in windows:
        ink = np.clip(images[win["row"]] * 16, 0, 255).astype(np.uint8)
        rgb = real.photo(ink, np.random.default_rng([SEED, 2000, win["window"]]), HEIGHT, WIDTH, lowres=False)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=JPEG_QUALITY)
        out.append(buf.getvalue())
    return out


RECORD_TOML = """\
# Written by tools/minibind/make_demo_real.py: the real-people demo's frames and sound,
# played once in real time (as fast as possible, the recorder's tap falls behind and
# loses frames) and recorded by `sensebind record`.
[robot]
id = "demo-real"
state_dir = "{state}"
[bus]
listen = []
[daemon]
exit_when_sources_end = true
[history]
enabled = false

[sources.{camera}]
type = "file"
sensor = "camera"
path = "{frames}"
fps = {fps}.0
pace = "realtime"
start_ns = {start}

[sources.{microphone}]
type = "file"
sensor = "microphone"
path = "{wav}"
chunk_ms = {chunk_ms}
pace = "realtime"
start_ns = {start}
"""


def record(binary: str, work: Path, jpegs: list[bytes], x: np.ndarray) -> Path:
    frames = work / "frames"
    frames.mkdir()
    for w, jpeg in enumerate(jpegs):
        for f in range(WINDOW_S * FPS):
            (frames / f"{w * WINDOW_S * FPS + f:04}.jpg").write_bytes(jpeg)
    write_wav(work / "microphone.wav", x)
    cfg = work / "record.toml"
    cfg.write_text(RECORD_TOML.format(state=work / "state", camera=CAMERA, microphone=MICROPHONE,
                                      frames=frames, fps=FPS, start=START_NS, wav=work / "microphone.wav",
                                      chunk_ms=CHUNK_MS))
    raw = work / "raw.mcap"
    subprocess.run([binary, "record", "--config", str(cfg), "--out", str(raw)], check=True, cwd=ROOT)
    return raw


def compact(raw: Path, out: Path, jpegs: list[bytes]) -> dict:
    """`raw` with the camera's RawImage messages replaced by their JPEG files."""
    import foxglove.messages as fm
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    vision = f"frames/vision/{CAMERA}"
    frame_ns = 1_000_000_000 // FPS
    counts: dict[str, int] = {}
    with open(raw, "rb") as f_in, open(out, "wb") as f_out:
        reader = make_reader(f_in)
        header = reader.get_header()
        summary = reader.get_summary()
        writer = Writer(f_out, chunk_size=4 << 20, compression=CompressionType.ZSTD)
        # The library says who wrote the bytes: the recorder, then this script.
        writer.start(profile=header.profile,
                     library=f"{header.library}; camera as JPEG by tools/minibind/make_demo_real.py (python mcap)")
        ci = fm.CompressedImage.get_schema()
        schema_ids, channel_ids = {}, {}
        for cid, ch in sorted(summary.channels.items()):
            sc = summary.schemas[ch.schema_id]
            name, enc, data = (ci.name, ci.encoding, ci.data) if ch.topic == vision else (sc.name, sc.encoding, sc.data)
            if name not in schema_ids:
                schema_ids[name] = writer.register_schema(name=name, encoding=enc, data=data)
            channel_ids[cid] = writer.register_channel(topic=ch.topic, message_encoding=ch.message_encoding,
                                                       schema_id=schema_ids[name], metadata=dict(ch.metadata))
        assert vision in {c.topic for c in summary.channels.values()}, "no camera channel in the recording"
        # In time order, ties (a camera frame and an audio chunk at the same time) by
        # topic: the recorder's order of ties depends on thread timing, this file's not.
        ordered = sorted(reader.iter_messages(log_time_order=False), key=lambda e: (e[2].log_time, e[1].topic))
        for _schema, ch, msg in ordered:
            data = msg.data
            if ch.topic == vision:
                i, rest = divmod(msg.log_time - START_NS, frame_ns)
                assert rest == 0 and 0 <= i < N_WINDOWS * WINDOW_S * FPS, f"camera frame at {msg.log_time}"
                jpeg = jpegs[i // (WINDOW_S * FPS)]
                check_pixels(msg.data, jpeg, i)
                data = fm.CompressedImage(timestamp=fm.Timestamp(sec=msg.log_time // 1_000_000_000,
                                                                 nsec=msg.log_time % 1_000_000_000),
                                          frame_id=CAMERA, data=jpeg, format="jpeg").encode()
            writer.add_message(channel_id=channel_ids[msg.channel_id], log_time=msg.log_time, data=data,
                               publish_time=msg.publish_time, sequence=msg.sequence)
            counts[ch.topic] = counts.get(ch.topic, 0) + 1
        for m in reader.iter_metadata():
            writer.add_metadata(m.name, dict(m.metadata))
        for a in reader.iter_attachments():
            writer.add_attachment(a.create_time, a.log_time, a.name, a.media_type, a.data)
        writer.finish()
    return counts


def check_pixels(raw_image: bytes, jpeg: bytes, i: int) -> None:
    """The recorded rgb8 frame is the JPEG, decoded (decoders differ by a level or so)."""
    fields = _protobuf_fields(raw_image)
    w, h, data = fields[2], fields[3], fields[6]
    assert (w, h, fields[4]) == (WIDTH, HEIGHT, b"rgb8"), f"frame {i}: {w}×{h} {fields[4]!r}"
    got = np.frombuffer(data, np.uint8).reshape(h, w, 3).astype(np.int16)
    want = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.int16)
    diff = np.abs(got - want).mean()
    assert diff < 2.0, f"frame {i}: the recorded pixels differ from the JPEG by {diff:.2f} levels"


def _protobuf_fields(buf: bytes) -> dict[int, object]:
    """Top-level fields of a protobuf message: varints and fixed32 as int,
    length-delimited as bytes."""
    out: dict[int, object] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        v = s = 0
        while True:
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << s
            s += 7
            if b < 0x80:
                return v

    while i < len(buf):
        key = varint()
        field, kind = key >> 3, key & 7
        if kind == 0:
            out[field] = varint()
        elif kind == 2:
            n = varint()
            out[field] = bytes(buf[i:i + n])
            i += n
        elif kind == 5:  # fixed32 (RawImage's width, height, step)
            out[field] = int.from_bytes(buf[i:i + 4], "little")
            i += 4
        elif kind == 1:
            i += 8
        else:
            raise ValueError(f"protobuf wire type {kind}")
    return out


README = """\
# The real-people demo recording

`demo-real.mcap` ({size_kb} KB, {seconds} s): a camera and a microphone watching real
people show and say the demo's digits, 3 7 1 9 4 0 8 2 6 5, each digit for 4 s (two
2 s windows). It is what `make demo-real` plays (configs/demo-real.toml: `mcap`
sources, looped, in real time, on the built-in MiniBind pack), for machines without a
camera or a microphone; tests/demo_real.rs plays it through the daemon and checks the
labels.

| topic | what |
|---|---|
| `frames/vision/camera` | `foxglove.CompressedImage` JPEG, 640×480, {fps} fps: a photo of a handwritten card |
| `frames/audio/microphone` | `foxglove.RawAudio` pcm-s16, 8 kHz mono, {chunk_ms} ms chunks: the spoken digit |

Times start at {start} ns (2026-01-01T00:00:00Z, on the 2 s window
grid): window k (k = 0…{last}) starts 2k s later and holds the digit
`[3, 7, 1, 9, 4, 0, 8, 2, 6, 5][k // 2]`. To look at it, open the file in Foxglove
(an Image panel on `frames/vision/camera`).

## What each window holds

| window | digit | speech (FSDD file, starts at) | card (`load_digits` row) |
|---|---|---|---|
{table}

**None of it is MiniBind training data**: FSDD and `load_digits` are evaluation only
(issue 23). The speech is FSDD's repetitions 45-49 and the cards are rows counted from
the end of `load_digits`, so nothing here repeats the committed test set
(tests/fixtures/real-heldout: repetitions 0-2 and the first 20 cards of each digit).

## Sources and licences

This file contains FSDD audio, so **the recording is licensed CC BY-SA 4.0**
(https://creativecommons.org/licenses/by-sa/4.0/); the code that made it is the
project's.

- Speech: Free Spoken Digit Dataset (FSDD) by Zohar Jackson (Jakobovski) and
  contributors, https://github.com/Jakobovski/free-spoken-digit-dataset, folder
  `recordings/` at commit `{commit}`; CC BY-SA 4.0.
  Speakers jackson, theo, nicolas, yweweler, lucas and george. Changes: each
  utterance faded in and out over 10 ms and placed inside its window over a
  synthetic noise floor of about {noise:.0f} dBFS; 8 kHz 16-bit as recorded.
- Handwriting: scikit-learn's `load_digits` (scikit-learn, BSD-3-Clause), a copy of
  the test set of the UCI "Optical Recognition of Handwritten Digits" data set by
  E. Alpaydin and C. Kaynak (https://doi.org/10.24432/C50P49, CC BY 4.0). Changes:
  the 8×8 counts scaled to 8-bit ink and rendered as a photo of the card on paper
  (`real.photo` in tools/minibind/real.py, seed {seed}, without its
  very-low-resolution-sensor step: the cards are 8×8 already), JPEG quality {quality}.

## How it was made

    git clone https://github.com/Jakobovski/free-spoken-digit-dataset /tmp/fsdd-repo
    mkdir -p /tmp/fsdd && git -C /tmp/fsdd-repo archive {commit} recordings | tar -x -C /tmp/fsdd
    export ORT_DYLIB_PATH=$(tools/dev.sh ort-path)
    cargo build --release --features robot
    python tools/minibind/make_demo_real.py --fsdd /tmp/fsdd/recordings \\
        --bin target/release/sensebind --out assets/demo-real

(a Python with numpy, Pillow, scikit-learn, mcap and foxglove-sdk; the same FSDD
commit, tools/minibind/real.py, scikit-learn and Pillow give the same bytes). The script writes
the frames and the WAV, records them with `sensebind record` (`file` sources at a
fixed `start_ns`), then keeps that recording's channels, metadata and times but stores
the camera's frames as the JPEG files they were decoded from (as `sensebind record`
stores a UVC camera's MJPEG), in zstd chunks; it checks that every JPEG decodes to the
recorded pixels. See the script's docstring.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsdd", required=True, type=Path, help="FSDD recordings/ folder")
    ap.add_argument("--bin", default=str(ROOT / "target/release/sensebind"))
    ap.add_argument("--out", default=ROOT / "assets/demo-real", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the work files (frames, WAV, raw recording) here")
    a = ap.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = {d: [int(i) for i in np.flatnonzero(digits.target == d)] for d in range(10)}
    windows = plan(rows)
    x = sound(windows, a.fsdd)
    jpegs = cards(windows, digits.images)
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="demo-real-"))
    try:
        raw = record(a.bin, work, jpegs, x)
        mcap = a.out / "demo-real.mcap"
        tmp = mcap.with_suffix(".mcap.tmp")
        counts = compact(raw, tmp, jpegs)
        want = {f"frames/vision/{CAMERA}": N_WINDOWS * WINDOW_S * FPS,
                f"frames/audio/{MICROPHONE}": N_WINDOWS * WINDOW_S * 1000 // CHUNK_MS}
        assert counts == want, f"recorded {counts}, expected {want}"
        os.replace(tmp, mcap)
        print(f"{raw.stat().st_size} B recorded → {mcap}: {mcap.stat().st_size} B, {counts}")
    finally:
        if a.keep:
            shutil.rmtree(a.keep, ignore_errors=True)
            shutil.copytree(work, a.keep)
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(
        f"| {w['window']} | {w['digit']} {WORDS[w['digit']]} | `{w['fsdd']}`, {w['speech_at']:.2f} s | {w['row']} |"
        for w in windows)
    (a.out / "README.md").write_text(README.format(
        size_kb=round(mcap.stat().st_size / 1000), seconds=N_WINDOWS * WINDOW_S, fps=FPS, chunk_ms=CHUNK_MS,
        start=START_NS, last=N_WINDOWS - 1, table=table, commit=FSDD_COMMIT, noise=NOISE_DBFS, seed=SEED,
        quality=JPEG_QUALITY))
    return 0


if __name__ == "__main__":
    sys.exit(main())
