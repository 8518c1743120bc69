#!/usr/bin/env python3
"""Make the parity fixtures: media plus what OFFICIAL ImageBind computes from them.

Tool time only (CI never runs this; it reads the committed output).  Writes
tests/fixtures/parity/ from scratch:

    audio/*.wav            16-bit PCM: speech (espeak-ng) and non-speech (numpy),
                           16 / 44.1 / 48 kHz, mono and stereo, short / 2 s / long
    audio/*.w<k>.f32       the official normalised fbank of window k: raw little-endian
                           float32, 128*204 values in row-major [1,128,204] order
    images/*.png|*.jpg     generated photos (odd sizes, RGB / L / RGBA, PNG and JPEG)
    images/*.crop.png      the official uint8 224x224 RGB image right after CenterCrop
                           (the official tensor is exactly Normalize(crop / 255))
    video/frames/f*.png    a 2-s camera clip (12 frames 320x240 at 6 fps)
    video/center.f16       the official centre-crop clip tensor [3,2,224,224], raw
                           little-endian float16
    manifest.json          everything else: window times, embeddings, token ids, ...

Every embedding is the official PyTorch forward (``ImageBindModel.forward``) of the
tiny random-init model that packs/tiny-random was exported from, L2-normalised to unit
norm (so the modality's logit scale is divided out).  Step 1 proves that: it builds
the model (seed 0, tools/arch/tiny.json, exactly like the committed pack), saves it as
a checkpoint, re-exports it with ``tools/export_imagebind.py --checkpoint`` and checks
that the re-exported graphs give the committed graphs' outputs (max |d| <= 1e-6).

The official preprocessing is imported from the installed ``imagebind/data.py``
(``imagebind-unofficial==0.1.1``, byte-identical to upstream); see
docs/parity-fixtures.md for which function each fixture uses.

Needs tools/requirements-export.txt + tools/requirements-parity.txt: pytorchvideo==0.1.5
(official video transforms; data.py imports it), torchcodec 0.11 + FFmpeg shared libs
(``torchaudio.load`` decodes through TorchCodec since torchaudio 2.9), setuptools<81
(data.py imports pkg_resources), Pillow, and the ``espeak-ng`` and ``sox`` programs.

    python tools/make_parity_fixtures.py            # writes tests/fixtures/parity/
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch
import torchvision

# pytorchvideo 0.1.5 imports a module torchvision renamed in 0.17; alias it first.
sys.modules.setdefault(
    "torchvision.transforms.functional_tensor", torchvision.transforms._functional_tensor
)

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
PACK = ROOT / "packs" / "tiny-random"
ARCH = TOOLS / "arch" / "tiny.json"
OUT = ROOT / "tests" / "fixtures" / "parity"
SEED = 0
EXPORT_MATCH_TOL = 1e-6  # re-exported checkpoint vs committed pack
ONNX_VS_TORCH_TOL = 1e-4  # committed pack on the fixture inputs vs the PyTorch forward

sys.path.insert(0, str(TOOLS))
import export_imagebind as ex  # noqa: E402  (the pack's own builder and exporter)

ex.import_imagebind()  # registers the bare 'imagebind' package (see that module)
import imagebind.data as ibdata  # noqa: E402  (official preprocessing: data.py)
import onnxruntime as ort  # noqa: E402
import torchaudio  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402

# waveform2melspec logs a warning for every clip shorter than 1.6 s; that is expected.
logging.getLogger().setLevel(logging.ERROR)

# Official constants (imagebind/data.py defaults).
SR = 16000
MEL_BINS = 128
TARGET_LEN = 204
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
CLIP_S = 2  # seconds per window / clip
MIN_COVERAGE = 0.5  # the daemon's window acceptance rule
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# ----------------------------------------------------------------------------- media

# (name, kind, sample rate, channels, duration s, what)
AUDIO = [
    ("speech_16k_mono_2s", "speech", 16000, 1, 2.0,
     "Move the red cup to the left of the table."),
    ("speech_44k1_stereo_1p3s", "speech", 44100, 2, 1.3, "Stop the robot now."),
    ("speech_48k_mono_4p6s", "speech", 48000, 1, 4.6,
     "The gripper is open. Camera two sees a person walking past the door."),
    ("speech_44k1_mono_5p3s", "speech", 44100, 1, 5.3,
     "Battery at forty percent. Returning to the charging dock in the hallway, "
     "please keep the corridor clear."),
    ("chirp_48k_stereo_2s", "nonspeech", 48000, 2, 2.0, "chirp"),
    ("tones_16k_mono_5p3s", "nonspeech", 16000, 1, 5.3, "tones"),
    ("noise_44k1_mono_1s", "nonspeech", 44100, 1, 1.0, "noise"),
    ("blip_16k_mono_0p8s", "nonspeech", 16000, 1, 0.8, "blips"),
]

# (name, format, mode, width, height)
IMAGES = [
    ("portrait_301x517", "png", "RGB", 301, 517),
    ("landscape_640x361", "jpeg", "RGB", 640, 361),
    ("tiny_37x23", "png", "RGB", 37, 23),
    ("large_1600x1067", "jpeg", "RGB", 1600, 1067),
    ("wide_1000x200", "png", "RGB", 1000, 200),
    ("grey_500x500", "png", "L", 500, 500),
    ("grey_224x300", "jpeg", "L", 224, 300),
    ("rgba_333x250", "png", "RGBA", 333, 250),
]

VIDEO_FRAMES, VIDEO_FPS, VIDEO_W, VIDEO_H = 12, 6.0, 320, 240

LONG_TEXT = (
    "A mobile robot with a six axis arm drives slowly along the warehouse aisle, "
    "scanning shelves of cardboard boxes, plastic crates and metal parts; it stops "
    "whenever a person walks into view, waits politely, says excuse me, then carries "
    "on towards the loading dock where a forklift is lifting pallets of bottled water "
    "while an alarm beeps twice in the distance and the lights flicker overhead."
)
TEXTS = [
    "a photo of a dog",
    "Hello, world! How's it going? (fine; thanks...) -- we'll see: 3.5 m/s, 100%.",
    "THE ROBOT ARM IS MOVING FAST",
    "salt &amp; pepper, &quot;quoted&quot;, &lt;b&gt;bold&lt;/b&gt; and &amp;amp; twice",
    "café crème, Straße, 中文字符, Ελληνικά",
    "robot 🤖 waves 👋🏽 at the dog 🐕‍🦺",
    "“curly double” and ‘curly single’ quotes",
    "the ﬁnal ﬂight of the ﬁsh",
    "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３",
    "  multiple   spaces\n\nnew\u00a0lines\tand\t\ttabs  ",
    "The Mona Lisa doesnâ€™t have eyebrows.",
    "",
    LONG_TEXT,
]


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    """x: float [channels, n] in [-1, 1] -> canonical 16-bit PCM WAV (44-byte header)."""
    pcm = to_int16(x).T.copy()  # interleave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.astype("<i2").tobytes())


def speech(text: str, sr: int, n: int, tmp: Path, rng) -> np.ndarray:
    """espeak-ng (22.05 kHz) -> sox to sr as float -> exactly n samples + room noise."""
    raw, conv = tmp / "espeak.wav", tmp / "espeak_sr.wav"
    run(["espeak-ng", "-v", "en-us", "-s", "165", "-a", "160", "-w", str(raw), text])
    run(["sox", str(raw), "-e", "floating-point", "-b", "32", "-r", str(sr), str(conv)])
    y = read_float_wav(conv)
    y = 0.9 * y / max(1e-9, float(np.abs(y).max()))
    lead = int(0.05 * sr)  # a little pre-roll, like a real recording
    out = np.zeros(n, dtype=np.float64)
    seg = y[: max(0, n - lead)]
    out[lead: lead + len(seg)] = seg
    out += rng.normal(0.0, 10 ** (-50 / 20), n)  # -50 dBFS room noise, never silent
    return out


def read_float_wav(path: Path) -> np.ndarray:
    """Mono float WAV written by sox (WAVE_FORMAT_IEEE_FLOAT / EXTENSIBLE)."""
    import soundfile as sf

    y, _ = sf.read(str(path), dtype="float64", always_2d=True)
    return y[:, 0]


def nonspeech(what: str, sr: int, n: int, rng) -> np.ndarray:
    t = np.arange(n) / sr
    if what == "chirp":  # logarithmic chirp 100 Hz -> 7 kHz
        f0, f1, T = 100.0, 7000.0, n / sr
        k = math.log(f1 / f0) / T
        return 0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    if what == "tones":  # a C-major arpeggio of 0.25 s notes with harmonics
        out = np.zeros(n)
        freqs = [261.63, 329.63, 392.0, 523.25, 659.25, 783.99]
        note = int(0.25 * sr)
        for i in range(0, n, note):
            f = freqs[(i // note) % len(freqs)]
            m = min(note, n - i)
            tt = np.arange(m) / sr
            env = np.minimum(1.0, tt / 0.01) * np.exp(-tt * 6.0)
            out[i: i + m] = env * (0.45 * np.sin(2 * np.pi * f * tt)
                                   + 0.15 * np.sin(2 * np.pi * 2 * f * tt)
                                   + 0.05 * np.sin(2 * np.pi * 3 * f * tt))
        return out
    if what == "noise":  # pink-ish noise with two louder bursts
        white = rng.normal(0.0, 1.0, n)
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / sr)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0
        pink = np.fft.irfft(spec, n)
        pink /= np.abs(pink).max()
        gate = 0.25 + 0.5 * ((t % 0.4) < 0.12)
        return 0.6 * pink * gate
    if what == "blips":  # 1 kHz / 2 kHz blips
        out = np.zeros(n)
        for i, start in enumerate(np.arange(0.05, n / sr - 0.1, 0.15)):
            a, b = int(start * sr), int((start + 0.06) * sr)
            tt = np.arange(b - a) / sr
            out[a:b] = 0.5 * np.sin(2 * np.pi * (1000 if i % 2 == 0 else 2000) * tt) \
                * np.hanning(b - a)
        return out + rng.normal(0.0, 1e-3, n)
    raise ValueError(what)


def make_audio(path: Path, kind: str, sr: int, ch: int, dur: float, what: str,
               tmp: Path, rng) -> None:
    n = round(dur * sr)
    if kind == "speech":
        left = speech(what, sr, n, tmp, rng)
    else:
        left = nonspeech(what, sr, n, rng)
    if ch == 1:
        x = left[None]
    else:
        # Right channel differs: delayed, quieter and with a hum and a DC offset (the
        # official code subtracts the mean over ALL channels, then uses channel 0).
        t = np.arange(n) / sr
        d = int(0.007 * sr)
        right = 0.6 * np.concatenate([np.zeros(d), left[: n - d]])
        if kind == "speech":
            right += 0.05 * np.sin(2 * np.pi * 120.0 * t) + 0.02
        else:
            right = 0.3 * np.sin(2 * np.pi * 440.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            right += 0.1 * np.sin(2 * np.pi * 660.0 * t) + 0.03
        x = np.stack([left, right])
    write_wav(path, np.clip(x, -1.0, 1.0), sr)


def font(size: int):
    # Pillow's bundled font: the same glyphs on any machine (no system fonts needed).
    return ImageFont.load_default(size=size)


def make_photo(w: int, h: int, seed: int, grain: float = 2.0) -> Image.Image:
    """A natural-ish RGB picture: sky/ground gradients, blobs, shapes, text, grain."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    horizon = 0.55 + 0.08 * np.sin(2 * np.pi * (u * 1.3 + rng.rand()))
    sky = np.stack([90 + 80 * v, 140 + 60 * v, 230 - 40 * v], -1)
    ground = np.stack([70 + 60 * u, 110 + 40 * (1 - v), 50 + 30 * u], -1)
    img = np.where((v < horizon)[..., None], sky, ground)
    # Soft texture: a few random low-frequency waves (grass / clouds).
    for _ in range(6):
        fx, fy, ph = rng.uniform(1, 12), rng.uniform(1, 12), rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(4, 14)
        img += amp * np.sin(2 * np.pi * (fx * u + fy * v) + ph)[..., None] \
            * rng.uniform(0.5, 1.0, 3)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    s = min(w, h)
    for _ in range(7):
        cx, cy = rng.randint(0, w), rng.randint(0, h)
        r = max(2, int(s * rng.uniform(0.05, 0.22)))
        col = tuple(int(c) for c in rng.randint(0, 256, 3))
        if rng.rand() < 0.5:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col,
                      outline=(20, 20, 20), width=max(1, s // 120))
        else:
            d.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=col)
    d.line([(0, int(h * 0.8)), (w, int(h * 0.7))], fill=(240, 240, 230), width=max(1, s // 60))
    if s >= 60:
        d.text((s // 20, s // 20), "sensebind", fill=(255, 255, 255), font=font(max(8, s // 9)))
        d.text((w // 2, int(h * 0.62)), "ROBOT 42", fill=(10, 10, 40), font=font(max(8, s // 14)))
    im = im.filter(ImageFilter.GaussianBlur(radius=0.6))
    a = np.asarray(im).astype(np.float64)
    a += rng.normal(0.0, grain, a.shape)  # sensor grain
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "RGB")


def make_image(path: Path, fmt: str, mode: str, w: int, h: int, seed: int) -> None:
    # A little less grain in PNGs keeps the lossless files small.
    im = make_photo(w, h, seed, grain=1.2 if fmt == "png" else 3.0)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        # Varying alpha over non-trivial colour: convert("RGB") must DROP alpha (not
        # composite it over white/black), so the hidden colours matter.
        yy, xx = np.mgrid[0:h, 0:w]
        alpha = (255 * (0.15 + 0.85 * (xx / (w - 1)) * (0.5 + 0.5 * np.cos(yy / 17.0))))
        alpha[: h // 5, : w // 4] = 0  # a fully transparent corner
        im = im.copy()
        im.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    assert im.mode == mode
    if fmt == "png":
        im.save(path, format="PNG", optimize=True)
    else:
        im.save(path, format="JPEG", quality=88, subsampling=2 if mode == "RGB" else 0)


def make_video_frames(frames_dir: Path) -> list[Path]:
    """12 frames of a ball and a box crossing a textured room, a slowly panning light."""
    pan = 3  # pixels per frame
    bg = np.asarray(make_photo(VIDEO_W + pan * VIDEO_FRAMES, VIDEO_H, 1234, grain=0.0))
    bg = bg.astype(np.float64)
    paths = []
    for i in range(VIDEO_FRAMES):
        frame = bg[:, pan * i: pan * i + VIDEO_W]  # slow pan
        yy, xx = np.mgrid[0:VIDEO_H, 0:VIDEO_W]
        light = 1.0 + 0.25 * np.exp(-(((xx - 20 * i) / 90.0) ** 2 + ((yy - 60) / 80.0) ** 2))
        frame = frame * light[..., None]
        im = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8), "RGB")
        d = ImageDraw.Draw(im)
        bx, by = 30 + 22 * i, 150 - int(60 * math.sin(math.pi * i / (VIDEO_FRAMES - 1)))
        d.ellipse([bx - 18, by - 18, bx + 18, by + 18], fill=(220, 40, 30), outline=(60, 0, 0), width=2)
        rx = 270 - 15 * i
        d.rectangle([rx - 25, 40, rx + 25, 90], fill=(30, 90, 200), outline=(250, 250, 250), width=2)
        d.text((8, 214), f"cam0 t={i / VIDEO_FPS:.2f}s", fill=(255, 255, 0), font=font(16))
        p = frames_dir / f"f{i:02d}.png"
        im.save(p, format="PNG", optimize=True)
        paths.append(p)
    return paths


# ------------------------------------------------------------------ model and export


def build_tiny_model():
    """The tiny official model exactly as export_imagebind.py --random --seed 0 builds it."""
    imagebind_model, _ = ex.import_imagebind()
    arch = ex.load_arch(ARCH)
    torch.manual_seed(SEED)
    model = ex.build_model(imagebind_model, arch)
    model.eval()
    return model


def check_export_matches_committed(model, tmp: Path) -> float:
    """Save model as a checkpoint, export it with --checkpoint, compare with the pack."""
    ckpt = tmp / "tiny-random.pth"
    torch.save(model.state_dict(), ckpt)
    pack = tmp / "pack"
    print(f"[export] {ckpt.name} -> temporary pack (tools/export_imagebind.py --checkpoint)",
          flush=True)
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "export_imagebind.py"), "--checkpoint", str(ckpt),
         "--arch", str(ARCH), "--out", str(pack), "--name", "tiny-random",
         "--seed", str(SEED)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("error: exporting the checkpoint failed")

    gen = torch.Generator().manual_seed(12345)
    worst = 0.0
    for m in ex.MODALITIES:
        x = ex.random_input(m, 2, gen).numpy()
        outs = []
        for d in (PACK, pack):
            s = ort.InferenceSession(str(d / f"{m}.onnx"), providers=["CPUExecutionProvider"])
            outs.append(s.run(["emb"], {m: x})[0].astype(np.float64))
        delta = float(np.max(np.abs(outs[0] - outs[1])))
        print(f"[export] {m:8s} committed vs re-exported checkpoint: max |d| = {delta:.3e}")
        if not delta <= EXPORT_MATCH_TOL:
            raise SystemExit(
                f"error: packs/tiny-random/{m}.onnx is NOT the seed-{SEED} tiny checkpoint "
                f"(max |d| {delta:.3e} > {EXPORT_MATCH_TOL:g}); re-export the pack or fix "
                "the builder before making fixtures")
        worst = max(worst, delta)
    return worst


class Embedder:
    """Official ImageBindModel.forward, then unit L2 norm; also checks the ONNX pack."""

    def __init__(self, model):
        self.model = model
        self.sessions = {}
        self.onnx_delta = {}

    def __call__(self, modality: str, x: torch.Tensor) -> list[float]:
        with torch.no_grad():
            y = self.model({modality: x})[modality]
        assert y.shape == (1, 32), y.shape
        # The committed ONNX graph on the same official input (a per-item graph, so
        # multi-view inputs go through it view by view and are averaged like forward()).
        if modality not in self.sessions:
            self.sessions[modality] = ort.InferenceSession(
                str(PACK / f"{modality}.onnx"), providers=["CPUExecutionProvider"])
        xn = x.numpy()
        if xn.ndim == 6:  # [1, S, 3, 2, 224, 224]: S views
            got = self.sessions[modality].run(["emb"], {modality: xn[0]})[0].mean(0, keepdims=True)
        elif modality == "vision" and xn.ndim == 4:  # an image: PadIm2Video repeats it
            got = self.sessions[modality].run(
                ["emb"], {modality: np.repeat(xn[:, :, None], 2, axis=2)})[0]
        else:
            got = self.sessions[modality].run(["emb"], {modality: xn})[0]
        d = float(np.max(np.abs(got.astype(np.float64) - y.numpy())))
        self.onnx_delta[modality] = max(self.onnx_delta.get(modality, 0.0), d)
        v = y[0].double()
        v = v / v.norm()
        return [f32(a) for a in v.tolist()]


def f32(v) -> float:
    """Shortest decimal that round-trips to the same float32."""
    return float(str(np.float32(v)))


# ------------------------------------------------------------------ official numbers


def audio_windows(n: int, sr: int) -> list[int]:
    """Window indices the daemon keeps: [2k, 2k+2) s with coverage >= 0.5 (exact)."""
    ks, k = [], 0
    while True:
        covered = min(n, CLIP_S * (k + 1) * sr) - CLIP_S * k * sr  # samples
        if covered <= 0 or covered * 1.0 / (CLIP_S * sr) < MIN_COVERAGE:
            return ks
        ks.append(k)
        k += 1


def official_audio(path: Path, embed: Embedder) -> dict:
    import soundfile as sf

    waveform, sr = torchaudio.load(str(path))  # float32 [channels, n]
    # torchaudio.load (TorchCodec / FFmpeg) returns int16 / 32768; check it.
    pcm, sr2 = sf.read(str(path), dtype="int16", always_2d=True)
    assert sr == sr2 and torch.equal(
        waveform, torch.from_numpy(pcm.T.astype(np.float32) / 32768.0)), path
    n = waveform.shape[1]
    if sr != SR:  # the WHOLE file, as load_and_transform_audio_data does
        waveform = torchaudio.functional.resample(waveform, orig_freq=sr, new_freq=SR)
    normalize = ibdata.transforms.Normalize(mean=AUDIO_MEAN, std=AUDIO_STD)
    windows = []
    for k in audio_windows(n, sr):
        t0, t1 = float(CLIP_S * k), float(CLIP_S * (k + 1))
        clip = waveform[:, int(t0 * SR): int(t1 * SR)]  # last one may be shorter
        mel = ibdata.waveform2melspec(clip, SR, MEL_BINS, TARGET_LEN)  # [1,128,204]
        x = normalize(mel)
        assert x.shape == (1, MEL_BINS, TARGET_LEN) and x.dtype == torch.float32
        fb = path.with_name(f"{path.stem}.w{k}.f32")
        x.numpy().astype("<f4").tofile(fb)
        windows.append({
            "k": k, "t_start": t0, "t_end": t1,
            "samples_16k": int(clip.shape[1]),
            "fbank": rel(fb),
            "embedding": embed("audio", x[None]),  # [1,1,128,204]
        })
    return {"sample_rate": sr, "channels": int(waveform.shape[0]), "n_samples": n,
            "duration_s": n / sr, "resampled_len": int(waveform.shape[1]),
            "windows": windows}


def official_image(path: Path, embed: Embedder) -> dict:
    official = ibdata.load_and_transform_vision_data([str(path)], "cpu")  # [1,3,224,224]
    T = ibdata.transforms
    resize = T.Resize(224, interpolation=T.InterpolationMode.BICUBIC)
    with open(path, "rb") as fopen:
        image = Image.open(fopen).convert("RGB")
    resized = resize(image)
    crop = T.CenterCrop(224)(resized)
    # CenterCrop's offsets: int(round((size - 224) / 2)) -- Python's round, half to even.
    left = int(round((resized.width - 224) / 2.0))
    top = int(round((resized.height - 224) / 2.0))
    assert np.array_equal(np.asarray(crop), np.asarray(resized.crop((left, top, left + 224, top + 224))))
    again = T.Normalize(mean=CLIP_MEAN, std=CLIP_STD)(T.ToTensor()(crop))
    assert torch.equal(again, official[0]), f"{path}: crop does not reproduce the tensor"
    crop_path = path.with_name(f"{path.stem}.crop.png")
    crop.save(crop_path, format="PNG", optimize=True)
    return {"resized": [resized.width, resized.height], "crop_offset": [left, top],
            "crop": rel(crop_path), "embedding": embed("vision", official)}


def official_video(frame_paths: list[Path], embed: Embedder) -> dict:
    pv = ibdata.pv_transforms
    # What decord hands over for the clip [0, 2) s: frames ceil(fps*0) .. ceil(fps*2)-1,
    # float32 [T,H,W,C] -> thwc_to_cthw -> [C,T,H,W], values 0..255.
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in frame_paths])
    video = torch.from_numpy(frames).to(torch.float32).permute(3, 0, 1, 2)
    t = video.shape[1]
    indices = torch.clamp(torch.linspace(0, t - 1, CLIP_S), 0, t - 1).long().tolist()
    clip = pv.UniformTemporalSubsample(num_samples=CLIP_S)(video)  # as data.py
    assert torch.equal(clip, video[:, indices])
    clip = clip / 255.0
    video_transform = ibdata.transforms.Compose([
        pv.ShortSideScale(224),
        ibdata.NormalizeVideo(mean=CLIP_MEAN, std=CLIP_STD),
    ])
    clip = video_transform(clip)  # [3,2,224,298]
    scaled = [int(clip.shape[3]), int(clip.shape[2])]
    views = ibdata.SpatialCrop(224, num_crops=3)([clip])  # left, centre, right
    center = views[1]
    assert torch.equal(center, ibdata.transforms.CenterCrop(224)(clip))
    center_path = OUT / "video" / "center.f16"
    center.numpy().astype("<f2").tofile(center_path)
    offsets = []
    for v in views:  # find each view's x offset (uniform_crop: 0, ceil((W-224)/2), W-224)
        offsets.append(next(o for o in range(scaled[0] - 223)
                            if torch.equal(v, clip[..., o: o + 224])))
    return {
        "indices": indices, "scaled_size": scaled, "three_crop_x_offsets": offsets,
        "center_tensor_f16": rel(center_path),
        # Official forward on a [B=1, S, 3, 2, 224, 224] stack: each view is encoded and
        # post-processed (unit norm; vision has no logit scale), then averaged.
        "embedding_center": embed("vision", center[None, None]),
        "embedding_three_crop": embed("vision", torch.stack(views)[None]),
    }


def rel(p: Path) -> str:
    return p.relative_to(OUT).as_posix()


def versions() -> dict:
    out = {}
    for pkg in ("torch", "torchaudio", "torchvision", "imagebind-unofficial", "pillow",
                "pytorchvideo", "torchcodec", "ftfy", "regex", "numpy", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    for prog, args in (("espeak-ng", ["--version"]), ("sox", ["--version"])):
        try:
            s = subprocess.run([prog, *args], capture_output=True, text=True).stdout
            out[prog] = re.search(r"\d+\.\d+(\.\d+)?", s).group(0)
        except Exception:  # noqa: BLE001
            out[prog] = None
    return out


def dump(obj) -> str:
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    # Number lists on one line each.
    return re.sub(r"\[\s*([-+0-9.eE,\s]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


# ---------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    torch.set_num_threads(2)
    for prog in ("espeak-ng", "sox"):
        if shutil.which(prog) is None:
            raise SystemExit(f"error: {prog} not found (apt-get install -y espeak-ng sox)")

    model = build_tiny_model()
    with tempfile.TemporaryDirectory(prefix="parity-") as td:
        tmp = Path(td)
        export_delta = check_export_matches_committed(model, tmp)

        if OUT.exists():
            shutil.rmtree(OUT)
        for sub in ("audio", "images", "video/frames"):
            (OUT / sub).mkdir(parents=True)
        embed = Embedder(model)
        rng = np.random.RandomState(SEED)

        audio = []
        for name, kind, sr, ch, dur, what in AUDIO:
            p = OUT / "audio" / f"{name}.wav"
            make_audio(p, kind, sr, ch, dur, what, tmp, rng)
            rec = official_audio(p, embed)
            assert rec["sample_rate"] == sr and rec["channels"] == ch
            audio.append({"name": name, "file": rel(p), "kind": kind, **rec})

    images = []
    for i, (name, fmt, mode, w, h) in enumerate(IMAGES):
        p = OUT / "images" / f"{name}.{'png' if fmt == 'png' else 'jpg'}"
        make_image(p, fmt, mode, w, h, seed=100 + i)
        with Image.open(p) as im:
            assert (im.format.lower(), im.mode, im.size) == (fmt, mode, (w, h)), p
        images.append({"name": name, "file": rel(p), "format": fmt, "mode": mode,
                       "width": w, "height": h, **official_image(p, embed)})

    frame_paths = make_video_frames(OUT / "video" / "frames")
    video = {"frames_dir": "video/frames", "frame_files": [rel(p) for p in frame_paths],
             "fps": VIDEO_FPS, "clip": [0.0, float(CLIP_S)],
             **official_video(frame_paths, embed)}

    texts = []
    for t in TEXTS:
        ids = ibdata.load_and_transform_text([t], "cpu")  # official SimpleTokenizer
        assert ids.shape == (1, 77)
        texts.append({"text": t, "ids": ids[0].tolist(), "embedding": embed("text", ids)})

    manifest = {
        "generator": "tools/make_parity_fixtures.py",
        "pack": "tiny-random",
        "model": f"official ImageBindModel, tools/arch/tiny.json, random init seed {SEED}; "
                 "embeddings = ImageBindModel.forward output / its L2 norm",
        "versions": versions(),
        "audio_window_rule": "windows k=0,1,... cover [2k, 2k+2) s; kept while "
                             "(min(duration, 2k+2) - 2k) / 2 >= 0.5",
        "audio": audio, "images": images, "video": video, "texts": texts,
    }
    mpath = OUT / "manifest.json"
    mpath.write_text(dump(manifest) + "\n", encoding="utf-8")

    # ---- summary
    def size(glob):
        return sum(f.stat().st_size for f in OUT.glob(glob) if f.is_file())

    print()
    print(f"export check: committed packs/tiny-random == re-exported seed-{SEED} checkpoint, "
          f"max |d| = {export_delta:.3e} (limit {EXPORT_MATCH_TOL:g})")
    worst = max(embed.onnx_delta.values())
    print("committed ONNX vs PyTorch forward on the fixture inputs: " + ", ".join(
        f"{m} {d:.2e}" for m, d in embed.onnx_delta.items()))
    if not worst <= ONNX_VS_TORCH_TOL:
        raise SystemExit(f"error: ONNX vs PyTorch {worst:.3e} > {ONNX_VS_TORCH_TOL:g}")
    nwin = sum(len(a["windows"]) for a in audio)
    print(f"audio : {len(audio)} wav ({size('audio/*.wav') / 1e6:.2f} MB), {nwin} windows "
          f"({size('audio/*.f32') / 1e6:.2f} MB fbank)")
    for a in audio:
        print(f"        {a['name']:26s} {a['sample_rate']:5d} Hz x{a['channels']} "
              f"{a['duration_s']:.2f} s -> windows {[w['k'] for w in a['windows']]}")
    print(f"images: {len(images)} ({size('images/*') / 1e6:.2f} MB incl. crops)")
    print(f"video : {len(frame_paths)} frames ({size('video/frames/*') / 1e6:.2f} MB), "
          f"indices {video['indices']}, scaled {video['scaled_size']}, "
          f"center.f16 {size('video/center.f16') / 1e6:.2f} MB")
    print(f"texts : {len(texts)}")

    # How far apart different items' embeddings are (tiny random model: not very far),
    # so tests can pick a tolerance well below it.
    def nearest(vs):
        v = np.array(vs)
        return min(float(np.abs(v[i] - v[j]).max())
                   for i in range(len(v)) for j in range(i + 1, len(v)))

    print("nearest two different items, max |d| per component: "
          f"audio windows {nearest([w['embedding'] for a in audio for w in a['windows']]):.4f}, "
          f"images {nearest([i['embedding'] for i in images]):.4f}, "
          f"texts {nearest([t['embedding'] for t in texts]):.4f}, video centre vs 3-crop "
          f"{nearest([video['embedding_center'], video['embedding_three_crop']]):.4f}")
    print(f"total : {size('**/*') / 1e6:.2f} MB in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
