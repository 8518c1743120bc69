"""The digit world of MiniBind (issue 8): the digits 0-9 rendered in every modality
sensebind reads, in the sensors' own formats, so training data, evaluation data and
the demo's synthetic sources come from one generator.

Every sample is a pure function of (modality, digit, split, index, seed): the same
arguments give the same bytes. `split` is "train" or "heldout"; held-out samples use
fonts, voices, writers (stroke styles) and noise kinds that training never sees.

Formats (what the daemon's drivers deliver):
- image:   RGB uint8, H×W×3
- text:    str
- audio:   float32 mono in [-1, 1], 16 kHz, 2 s
- depth:   uint16 millimetres, H×W (0 = invalid)
- thermal: uint16 raw Y16 counts (TLinear-like: centikelvin), H×W
- imu:     float32 400×6 (accel xyz m/s², gyro xyz rad/s) at 200 Hz

Needs numpy and Pillow; audio needs espeak-ng (Debian package) on PATH.
"""
from __future__ import annotations

import glob
import hashlib
import io
import os
import subprocess
import wave
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DIGITS = list(range(10))
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
AUDIO_RATE = 16_000
AUDIO_SECONDS = 2.0
IMU_RATE = 200
IMU_SAMPLES = 400
SPLITS = ("train", "heldout")

# ---------------------------------------------------------------- randomness


def rng_for(*key) -> np.random.Generator:
    """A generator seeded from the key (stable across runs, machines and processes)."""
    h = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def held_out(name: str, fraction: float = 0.25) -> bool:
    """Whether a named style (font file, voice, writer) belongs to the held-out split."""
    return (zlib.crc32(name.encode()) % 1000) < fraction * 1000


def pick_style(names: list[str], split: str, rng: np.random.Generator) -> str:
    pool = [n for n in names if held_out(n) == (split == "heldout")] or names
    return pool[int(rng.integers(len(pool)))]


# ---------------------------------------------------------------- text

TEMPLATES = [
    "{w}", "{d}", "the number {w}", "the number {d}", "a picture of a {d}", "a photo of the digit {w}",
    "the digit {d}", "number {w}", "a {w}", "someone says {w}", "the sound of the word {w}",
    "a drawing of a {w}", "a warm {w}", "a {d} written in the air", "it is {w}", "{w}!",
    "the numeral {d}", "a sign showing {d}", "digit {w}", "the word {w}",
]
HELDOUT_TEMPLATES = ["this is the number {w}", "a {w} on a card", "I see a {d}", "the figure {d}"]


def text(digit: int, split: str, index: int, seed: int = 0) -> str:
    rng = rng_for("text", digit, split, index, seed)
    pool = HELDOUT_TEMPLATES if split == "heldout" else TEMPLATES
    t = pool[int(rng.integers(len(pool)))]
    return t.format(w=WORDS[digit], d=digit)


# ---------------------------------------------------------------- strokes
# Each digit as polylines in a unit box (x right, y down), the way a person writes it.
# They drive handwriting-like images, the air-written IMU trajectories, and reliefs.


def _arc(cx, cy, rx, ry, a0, a1, n=16):
    t = np.linspace(np.radians(a0), np.radians(a1), n)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.3, 0.42, -90, 270, 32)],
    1: [[(0.35, 0.25), (0.55, 0.08), (0.55, 0.92)], [(0.35, 0.92), (0.75, 0.92)]],
    2: [_arc(0.5, 0.32, 0.28, 0.24, 200, 380, 16) + [(0.22, 0.92), (0.8, 0.92)]],
    3: [_arc(0.48, 0.3, 0.26, 0.22, 210, 450, 16) + _arc(0.48, 0.7, 0.3, 0.22, 270, 510, 16)],
    4: [[(0.65, 0.92), (0.65, 0.08), (0.18, 0.65), (0.85, 0.65)]],
    5: [[(0.78, 0.08), (0.3, 0.08), (0.26, 0.45)] + _arc(0.5, 0.66, 0.3, 0.26, 230, 500, 18)],
    6: [_arc(0.5, 0.5, 0.32, 0.42, 300, 180, 12) + _arc(0.5, 0.68, 0.28, 0.24, 180, 540, 20)],
    7: [[(0.2, 0.08), (0.8, 0.08), (0.42, 0.92)]],
    8: [_arc(0.5, 0.28, 0.22, 0.2, 90, 450, 20) + _arc(0.5, 0.7, 0.28, 0.22, -90, 270, 20)],
    9: [_arc(0.5, 0.32, 0.28, 0.24, 0, 360, 20) + [(0.78, 0.32), (0.72, 0.92)]],
}

WRITERS = [f"writer{i:02d}" for i in range(40)]


def writer_strokes(digit: int, writer: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The digit's strokes as one writer draws them: a slant, an aspect and a wobble
    of the writer's own, plus per-sample jitter."""
    w = rng_for("writer", writer)
    slant = w.normal(0, 0.18)
    aspect = w.uniform(0.75, 1.2)
    wobble = w.uniform(0.0, 0.03)
    out = []
    for s in STROKES[digit]:
        p = np.array(s, dtype=np.float64)
        p[:, 0] = 0.5 + (p[:, 0] - 0.5) * aspect + slant * (0.5 - p[:, 1])
        p += rng.normal(0, wobble + 0.008, p.shape)
        out.append(p)
    return out


# ---------------------------------------------------------------- image


# Fonts whose digit code points hold other pictures (dingbats, keyboard keys).
NOT_DIGIT_FONTS = ("math", "symbol", "emoji", "d050000l", "dingbat", "linbiolinum_k")


def _draws_digits(path: str) -> bool:
    """Whether the font draws ten different, non-empty digits (some decorative fonts
    map them to the missing-glyph box)."""
    try:
        font = ImageFont.truetype(path, 48)
    except OSError:
        return False

    def glyph(ch):
        im = Image.new("L", (72, 72))
        ImageDraw.Draw(im).text((36, 36), ch, font=font, fill=255, anchor="mm")
        return (np.asarray(im) > 127).tobytes()

    digits = [glyph(str(i)) for i in DIGITS]
    missing = glyph("\U000F0000")
    return len(set(digits)) == 10 and missing not in digits and all(g.count(1) > 20 for g in digits)


@lru_cache(maxsize=None)
def fonts() -> list[str]:
    """Every installed font that draws the digits (tools/dev.sh installs a few dozen
    Debian font packages: sans, serif, mono, display and handwriting faces)."""
    found = []
    for pat in ("/usr/share/fonts/**/*.ttf", "/usr/share/fonts/**/*.otf"):
        found += glob.glob(pat, recursive=True)
    named = [f for f in found if not any(k in os.path.basename(f).lower() for k in NOT_DIGIT_FONTS)]
    return sorted(f for f in named if _draws_digits(f))


def _background(rng, h, w):
    base = rng.integers(0, 256, 3)
    img = np.ones((h, w, 3), np.float32) * base
    # A gradient and some clutter shapes.
    g = np.linspace(0, 1, w)[None, :, None] * rng.normal(0, 40, 3)
    img = img + g
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(0, 6))):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(5, w // 3), y0 + rng.integers(5, h // 3)
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.rectangle([x0, y0, x1, y1], outline=c, width=int(rng.integers(1, 4)))
        else:
            d.ellipse([x0, y0, x1, y1], outline=c, width=int(rng.integers(1, 4)))
    return pil


def digit_mask(digit: int, split: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float mask in [0, 1] of the digit at a random place, size and angle: from a
    font, or (a third of the time) from a writer's strokes."""
    canvas = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(canvas)
    # Roughly centred, as a sign held up to a sensor is: a small ViT trained for
    # minutes on 2 cores cannot also learn every position of the frame.
    size = int(min(h, w) * rng.uniform(0.5, 0.85))
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    if rng.random() < 1 / 3 or not fonts():
        writer = pick_style(WRITERS, split, rng)
        width = max(2, int(size * rng.uniform(0.05, 0.14)))
        for s in writer_strokes(digit, writer, rng):
            pts = [(cx + (x - 0.5) * size * 0.7, cy + (y - 0.5) * size) for x, y in s]
            d.line(pts, fill=255, width=width, joint="curve")
    else:
        font = ImageFont.truetype(pick_style(fonts(), split, rng), size)
        stroke = int(rng.integers(0, max(1, size // 25)))
        d.text((cx, cy), str(digit), font=font, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(float(rng.normal(0, 12)), resample=Image.BILINEAR, center=(cx, cy))
    return np.asarray(canvas, np.float32) / 255.0


def image(digit: int, split: str, index: int, seed: int = 0, h: int = 224, w: int = 224,
          clean: bool = False) -> np.ndarray:
    """The digit on a cluttered background; `clean` leaves out the sensor noise (the
    demo's synthetic camera adds its own, frame by frame)."""
    rng = rng_for("image", digit, split, index, seed)
    bg = np.asarray(_background(rng, h, w), np.float32)
    m = digit_mask(digit, split, rng, h, w)[..., None]
    # A colour that stands out from the background.
    colour = np.where(bg.mean((0, 1)) > 127, rng.integers(0, 90, 3), rng.integers(165, 256, 3)).astype(np.float32)
    img = bg * (1 - m) + colour * m
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.5))))
    if clean:
        return np.asarray(pil)
    out = np.asarray(pil, np.float32) + rng.normal(0, rng.uniform(0, 12), (h, w, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- depth and thermal


def depth(digit: int, split: str, index: int, seed: int = 0, h: int = 240, w: int = 320,
          clean: bool = False) -> np.ndarray:
    """The digit as a cut-out sign held in front of a background wall, millimetres
    (`clean`: without sensor noise and invalid pixels). Invalid pixels (0) are the
    stereo shadow left of the sign's edges and a sprinkle of dropouts, as real
    depth cameras give."""
    rng = rng_for("depth", digit, split, index, seed)
    wall = rng.uniform(1500, 4500)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    plane = wall + (xx - w / 2) * rng.normal(0, 1.5) + (yy - h / 2) * rng.normal(0, 1.5)
    sign = digit_mask(digit, split, rng, h, w)
    m = np.asarray(Image.fromarray((sign * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)),
                   np.float32) / 255.0
    near = rng.uniform(500, wall - 600)  # the sign's distance
    if clean:
        return np.clip(plane - (plane - near) * m, 1, 65535).astype(np.uint16)
    mm = plane - (plane - near) * m
    mm = mm + rng.normal(0, 1, (h, w)) * rng.uniform(0.001, 0.004) * mm  # noise grows with range
    out = np.clip(mm, 1, 65535).astype(np.uint16)
    fg = sign > 0.5
    k = int(rng.integers(2, 9))
    shadow = np.zeros_like(fg)
    shadow[:, :-k] = fg[:, k:]
    for j in range(1, k):
        shadow[:, :-j] |= fg[:, j:]
    shadow &= ~fg
    out[shadow & (rng.random((h, w)) < rng.uniform(0.3, 0.9))] = 0
    out[rng.random((h, w)) < rng.uniform(0, 0.01)] = 0
    return out


def thermal(digit: int, split: str, index: int, seed: int = 0, h: int = 120, w: int = 160,
            clean: bool = False) -> np.ndarray:
    """The digit as a warm object on a cool scene: Y16 counts in centikelvin
    (`clean`: without sensor noise)."""
    rng = rng_for("thermal", digit, split, index, seed)
    ambient = rng.uniform(285, 300)
    warm = ambient + rng.uniform(8, 25)
    m = digit_mask(digit, split, rng, h, w)
    m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.5))),
                   np.float32) / 255.0
    yy = np.linspace(0, 1, h)[:, None]
    if clean:
        return np.clip((ambient + rng.normal(0, 1.5) * yy + (warm - ambient) * m) * 100, 0, 65535).astype(np.uint16)
    kelvin = ambient + rng.normal(0, 1.5) * yy + (warm - ambient) * m + rng.normal(0, rng.uniform(0.05, 0.3), (h, w))
    return np.clip(kelvin * 100, 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------- IMU


def imu(digit: int, split: str, index: int, seed: int = 0) -> np.ndarray:
    """The digit air-written with a hand-held device over 2 s: acceleration along the
    strokes plus gravity, gyro from the device's rotation, noise and bias."""
    rng = rng_for("imu", digit, split, index, seed)
    writer = pick_style(WRITERS, split, rng)
    pts = np.concatenate(writer_strokes(digit, writer, rng))
    # Arc-length parametrisation, written within [start, end] of the window.
    seg = np.r_[0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
    start, end = rng.uniform(0.0, 0.35), rng.uniform(1.6, 2.0)
    t = np.arange(IMU_SAMPLES) / IMU_RATE
    u = np.clip((t - start) / (end - start), 0, 1)
    u = u * u * (3 - 2 * u)  # smooth start and stop
    s = u * seg[-1]
    scale = rng.uniform(0.25, 0.6)  # metres the hand moves for the digit's height
    x = np.interp(s, seg, pts[:, 0]) * scale
    y = -np.interp(s, seg, pts[:, 1]) * scale  # up is +y in the air
    dt = 1 / IMU_RATE
    ax = np.gradient(np.gradient(x, dt), dt)
    ay = np.gradient(np.gradient(y, dt), dt)
    # The device frame: writing plane x-y, gravity along the device's -y (held upright),
    # tilted a little by the writer's grip.
    tilt = rng.normal(0, 0.15, 3)
    g = np.array([np.sin(tilt[0]) * 9.81, 9.81 * np.cos(tilt[0]), np.sin(tilt[1]) * 9.81])
    accel = np.stack([ax, ay, np.zeros_like(ax)], 1) + g
    # Gyro: the wrist rotates with the stroke direction.
    vx, vy = np.gradient(x, dt), np.gradient(y, dt)
    gyro = np.stack([vy * rng.uniform(0.5, 2), -vx * rng.uniform(0.5, 2), np.gradient(np.arctan2(vy, vx + 1e-6), dt) * 0.02], 1)
    out = np.concatenate([accel, gyro], 1)
    out += rng.normal(0, [0.05] * 3 + [0.01] * 3, out.shape) + rng.normal(0, [0.1] * 3 + [0.02] * 3)
    return out.astype(np.float32)


# ---------------------------------------------------------------- audio

@lru_cache(maxsize=None)
def voices() -> list[str]:
    """espeak-ng English voices and variants, e.g. `en-us+f3`."""
    base = ["en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
    variants = ["", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4", "+klatt", "+croak", "+whisper"]
    return [b + v for b in base for v in variants]


@lru_cache(maxsize=4096)
def _speak(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        check=True, capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, n = w.getframerate(), w.getnframes()
        x = np.frombuffer(w.readframes(n), "<i2").astype(np.float32) / 32768
    # espeak-ng speaks at 22.05 kHz: resample linearly to 16 kHz.
    t = np.arange(int(len(x) * AUDIO_RATE / rate)) * rate / AUDIO_RATE
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def audio(digit: int, split: str, index: int, seed: int = 0) -> np.ndarray:
    rng = rng_for("audio", digit, split, index, seed)
    voice = pick_style(voices(), split, rng)
    speech = _speak(WORDS[digit], voice, int(rng.integers(110, 220)), int(rng.integers(20, 80)))
    n = int(AUDIO_RATE * AUDIO_SECONDS)
    speech = speech[: n - 1]
    out = np.zeros(n, np.float32)
    at = int(rng.integers(0, n - len(speech)))
    out[at: at + len(speech)] = speech
    if rng.random() < 0.6:  # room reverberation: exponentially decaying noise
        rt = rng.uniform(0.05, 0.5)
        ir_t = np.arange(int(AUDIO_RATE * rt)) / AUDIO_RATE
        ir = rng.normal(0, 1, len(ir_t)) * np.exp(-6.9 * ir_t / rt)
        ir[0] = 1.0
        dry_rms = np.sqrt(np.mean(out**2)) + 1e-9
        size = 1 << int(np.ceil(np.log2(n + len(ir))))
        out = np.fft.irfft(np.fft.rfft(out, size) * np.fft.rfft(ir, size), size)[:n].astype(np.float32)
        out *= dry_rms / (np.sqrt(np.mean(out**2)) + 1e-9)
    noise_kind = ("white", "brown", "hum")[int(rng.integers(3))]
    snr_db = rng.uniform(5, 35)
    noise = rng.normal(0, 1, n)
    if noise_kind == "brown":
        noise = np.cumsum(noise)
        noise -= noise.mean()
    elif noise_kind == "hum":
        noise = np.sin(2 * np.pi * rng.choice([50, 60]) * np.arange(n) / AUDIO_RATE) + 0.1 * noise
    p_s = float(np.mean(out**2)) + 1e-9
    noise *= np.sqrt(p_s / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    out = out + noise.astype(np.float32)
    # Loudness: a peak between -20 and -1 dBFS.
    out *= 10 ** (rng.uniform(-20, -1) / 20) / (np.abs(out).max() + 1e-9)
    return out.astype(np.float32)


GENERATORS = {"image": image, "text": text, "audio": audio, "depth": depth, "thermal": thermal, "imu": imu}


def sample(modality: str, digit: int, split: str, index: int, seed: int = 0):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return GENERATORS[modality](digit, split, index, seed)


if __name__ == "__main__":
    # A contact sheet of every modality for a quick look: python tools/minibind/world.py out/
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "minibind-preview"
    os.makedirs(out, exist_ok=True)
    for d in DIGITS:
        Image.fromarray(image(d, "train", 0)).save(f"{out}/image_{d}.png")
        Image.fromarray((depth(d, "train", 0) // 16).astype(np.uint8)).save(f"{out}/depth_{d}.png")
        th = thermal(d, "train", 0).astype(np.float32)
        Image.fromarray(((th - th.min()) / (np.ptp(th) + 1) * 255).astype(np.uint8)).save(f"{out}/thermal_{d}.png")
        print(d, text(d, "train", 0), "|", text(d, "heldout", 0), "| imu", imu(d, "train", 0).shape)
    try:
        a = audio(7, "train", 0)
        print("audio", a.shape, float(np.abs(a).max()))
    except FileNotFoundError:
        print("audio: espeak-ng is not installed (apt install espeak-ng)")
