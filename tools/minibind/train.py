#!/usr/bin/env python3
"""Train MiniBind: the official ImageBind architecture at a small size
(tools/minibind/arch.json) on the digit world (world.py), with ImageBind's recipe.

Stage 1: image + text, contrastively (symmetric InfoNCE, the text encoder's learned
         temperature, as CLIP).
Stage 2: audio, depth, thermal and IMU, each bound to the *frozen* image encoder with
         InfoNCE on (image, modality) pairs only. No (modality, text) pair is ever
         seen: their alignment with text is emergent, as in the seed.

A pair is two views of one scene: an image of a digit and, say, a spoken word of the
same digit. Each InfoNCE group holds ten scenes with ten different digits, so a
group has no false negatives; a batch is several groups.

Deterministic for a given --seed on one machine (data from world.py's keyed
generators, torch seeded, single-process training). Prints its figures and writes a
state dict that tools/export_imagebind.py --checkpoint exports:

    python tools/minibind/train.py --out /tmp/minibind.pth
    python tools/export_imagebind.py --checkpoint /tmp/minibind.pth \
        --arch tools/minibind/arch.json --out packs/minibind --name minibind
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from export_imagebind import ModalityEncoder, build_model, import_imagebind, load_arch  # noqa: E402

import prep  # noqa: E402
import real  # noqa: E402
import world  # noqa: E402

BOUND = ("audio", "depth", "thermal", "imu")
# Stage 2 per modality: samples per digit in the bank, and steps. Depth and thermal
# data and steps are cheap; IMU converges early; audio data is the slowest to make.
PER_DIGIT = {"audio": 400, "depth": 800, "thermal": 800, "imu": 300}
STEPS2 = {"audio": 5000, "depth": 8000, "thermal": 2500, "imu": 800}
WARPED = ("depth", "thermal")  # pictures: trained on random affine views too
PROMPT = "the number {w}"


# ------------------------------------------------------------------ data


def pool(x: np.ndarray) -> np.ndarray:
    """[C, 224, 224] → [C, 224/POOL, 224/POOL], the mean of each POOL×POOL block."""
    c, h, w = x.shape
    return x.astype(np.float32).reshape(c, h // POOL, POOL, w // POOL, POOL).mean((2, 4))


def make_input(modality: str, digit: int, split: str, index: int, seed: int) -> np.ndarray:
    """One sample of the world through the daemon's preprocessing: pictures pooled to
    what the encoders' patch embeddings see in training (see LowResPatches); images
    as 8-bit pixels, the rest float16."""
    rng = world.rng_for("view", modality, digit, split, index, seed)
    if modality in ("image", "realimage"):
        # Camera-like sizes and aspect ratios, and both of the daemon's resize paths.
        h = int(rng.integers(160, 400))
        w = int(h * rng.uniform(1.0, 1.34))
        if rng.random() < 0.3:
            h, w = w, h
        pic = real.real_image(digit, index, seed, h=h, w=w) if modality == "realimage" else \
            world.image(digit, split, index, seed, h=h, w=w)
        return image_input(pic, rng)
    elif modality == "audio":
        x = prep.audio(world.audio(digit, split, index, seed))
    elif modality == "realaudio":
        x = prep.audio(real.real_speech(digit, index, seed))
    elif modality == "depth":
        x = pool(prep.depth(world.depth(digit, split, index, seed)).astype(np.float16))
    elif modality == "thermal":
        x = pool(prep.thermal(world.thermal(digit, split, index, seed)).astype(np.float16))
    elif modality == "imu":
        x = prep.imu(world.imu(digit, split, index, seed))
    else:
        raise ValueError(modality)
    return x.astype(np.float16)


def image_input(pic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB picture through the daemon's preprocessing (either resize path), pooled."""
    x = prep.image(pic, "image" if rng.random() < 0.6 else "video")
    # Both frames are the same: keep one (the patch embedding repeats it), back in
    # 8-bit pixels (the loaders' own resolution); normalised at batch time.
    x = x[:, 0] * prep.STD[:, None, None] + prep.MEAN[:, None, None]
    x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return np.clip(np.rint(pool(x)), 0, 255).astype(np.uint8)


def t10k_photos(directory: Path, n: int, seed: int, lowres: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n MNIST test digits (writers disjoint from training's) as photos:
    the real held-out writers' check (validation only; nothing else is tuned on).
    `lowres=True`: every one seen through the 8×8 sensor path (real.photo)."""
    xs = real.read_idx(directory / "t10k-images-idx3-ubyte.gz")[:n]
    ds = real.read_idx(directory / "t10k-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    out = []
    for i, a in enumerate(xs):
        rng = world.rng_for("t10k", i, seed)
        h = int(rng.integers(160, 400))
        out.append(image_input(real.photo(a, rng, h, int(h * rng.uniform(1.0, 1.34)), lowres=lowres), rng))
    return np.stack(out), ds


def _job(args):
    return make_input(*args)


def read_optdigits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """UCI optdigits' training file (`optdigits.tra`: 3 823 scans of 30 writers, none of
    them among the 13 writers of its test file, which is scikit-learn's `load_digits`,
    the evaluation set): rows of 64 block counts (0..16, row-major 8×8) and the class,
    comma-separated, a header line allowed → (uint8 [N, 8, 8] ink on black, counts × 16
    clipped to 255; digits [N])."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        f = [v.strip() for v in line.split(",")]
        if not line.strip() or (n == 1 and not f[0].isdigit()):
            continue  # blank, or the header line some copies add
        if len(f) != 65 or not all(v.isdigit() for v in f):
            raise SystemExit(f"{path}:{n}: expected 65 comma-separated integers (64 block counts, then the class)")
        rows.append([int(v) for v in f])
    a = np.array(rows, np.int64).reshape(-1, 65)
    if len(a) == 0 or (a[:, :64] > 16).any() or (a[:, 64] > 9).any():
        raise SystemExit(f"{path}: expected rows of block counts 0..16 and a class 0..9")
    return np.clip(a[:, :64] * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8), a[:, 64]


def _scan_job(args):
    """One view of an 8×8 scan as a camera photo of it on paper (real.photo, the
    camera sizes of make_input), through the daemon's preprocessing."""
    ink, digit, index, view, seed = args
    rng = world.rng_for("scan", digit, index, view, seed)
    h = int(rng.integers(160, 400))
    w = int(h * rng.uniform(1.0, 1.34))
    if rng.random() < 0.3:
        h, w = w, h
    return image_input(real.photo(ink, rng, h, w, lowres=False), rng)


def scan_bank(path: Path, views: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """`views` photos of every scan of `path` (read_optdigits) → (inputs, digits), kept in
    --cache keyed by the file and the code that makes them."""
    import hashlib
    import inspect

    ink, digits = read_optdigits(path)
    jobs = [(ink[i], int(digits[i]), i, v, seed) for v in range(views) for i in range(len(ink))]
    cached = None
    if CACHE is not None:
        src = (path.read_bytes() + (HERE / "world.py").read_bytes() + (HERE / "prep.py").read_bytes()
               + (HERE / "real.py").read_bytes() + inspect.getsource(_scan_job).encode()
               + inspect.getsource(image_input).encode() + inspect.getsource(pool).encode()
               + repr((views, seed)).encode())
        cached = CACHE / f"scan-train-{views}-{seed}-{hashlib.sha256(src).hexdigest()[:12]}.npz"
    return made("scans", "train", jobs, _scan_job, workers, cached,
                f" ({len(ink)} scans of {path.name}, {views} photos each)")


def made(label: str, split: str, jobs: list, fn, workers: int, cached: Path | None,
         note: str = "") -> tuple[np.ndarray, np.ndarray]:
    """fn over every job (on `workers` processes) → (inputs [N, ...], digits [N], each
    job's second field), or what `cached` holds; written to `cached` when made."""
    if cached is not None and cached.exists():
        z = np.load(cached)
        print(f"  {label:8s} {split:8s} {len(z['x']):5d} samples from {cached}", flush=True)
        return z["x"], z["d"]
    t0 = time.time()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as p:
            xs = p.map(fn, jobs, chunksize=16)
    else:
        xs = [fn(j) for j in jobs]
    print(f"  {label:8s} {split:8s} {len(xs):5d} samples in {time.time() - t0:5.1f} s{note}", flush=True)
    x, d = np.stack(xs), np.array([j[1] for j in jobs])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, x=x, d=d)
    return x, d


CACHE: Path | None = None


def cache_file(cache: Path, modality: str, per_digit: int, split: str, seed: int) -> Path:
    """Where a bank is kept: keyed by the generator's and preprocessing's source."""
    import hashlib
    import inspect

    jobs = [(modality, d, split, i, seed) for i in range(per_digit) for d in world.DIGITS]
    src = ((HERE / "world.py").read_bytes() + (HERE / "prep.py").read_bytes()
           + ((HERE / "real.py").read_bytes() if modality.startswith("real") else b"")
           + inspect.getsource(make_input).encode() + inspect.getsource(pool).encode()
           + repr(jobs[:1] + [len(jobs)]).encode()
           + (repr(sorted(str(p) for c in real.human_clips()["train"].values() for p in c)).encode()
              if modality == "realaudio" else b""))
    return cache / f"{modality}-{split}-{per_digit}-{seed}-{hashlib.sha256(src).hexdigest()[:12]}.npz"


def bank(modality: str, per_digit: int, split: str, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """per_digit samples of every digit → (inputs [N, ...], digits [N]): images as
    8-bit pixels, the rest float16; kept in --cache (keyed by the generator's and the
    preprocessing's source) when given."""
    jobs = [(modality, d, split, i, seed) for i in range(per_digit) for d in world.DIGITS]
    cached = cache_file(CACHE, modality, per_digit, split, seed) if CACHE is not None else None
    return made(modality, split, jobs, _job, workers, cached)


def train_texts() -> tuple[list[str], np.ndarray]:
    texts, digits = [], []
    for d in world.DIGITS:
        for t in world.TEMPLATES:
            texts.append(t.format(w=world.WORDS[d], d=d))
            digits.append(d)
    return texts, np.array(digits)


def groups(digits: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Indices [n_groups * 10]: each run of ten holds digits 0..9 once, in order."""
    by = [np.flatnonzero(digits == d) for d in world.DIGITS]
    return np.array([by[d][rng.integers(len(by[d]))] for _ in range(n_groups) for d in world.DIGITS])


def info_nce(a: torch.Tensor, b: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Symmetric InfoNCE within each group of ten; a and b already carry the scale
    (the product is the logit matrix, as in official ImageBind)."""
    a = a.view(n_groups, 10, -1)
    b = b.view(n_groups, 10, -1)
    logits = a @ b.transpose(1, 2)
    target = torch.arange(10).repeat(n_groups)
    return 0.5 * (F.cross_entropy(logits.reshape(-1, 10), target)
                  + F.cross_entropy(logits.transpose(1, 2).reshape(-1, 10), target))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


POOL = 4
PICTURES = ("vision", "depth", "thermal")  # encoders trained through LowResPatches


class LowResPatches:
    """Train a picture encoder's patch embedding at 224/POOL resolution, exported
    exactly as the official full-resolution kernel.

    The kernel (k×k, stride k) is held as k/POOL × k/POOL weights, each repeated over
    a POOL×POOL block of pixels and divided by POOL². Applied to a 224 input, that
    kernel gives exactly the small kernel applied to the input averaged over
    POOL×POOL blocks (what the banks hold), at a sixteenth of the weights and of the
    pixels: a small ViT learns digit shapes from a few thousand pictures in minutes
    instead of fitting 2 352 weights per patch to them. `commit` writes the full
    kernel into the official module, so the state dict and the export are the
    official architecture's.

    The vision stem also takes stills as one frame: PadIm2Video would repeat it into
    two identical frames for a Conv3d with a (2, p, p) kernel, which equals one frame
    through the kernel's two time taps summed; both taps get half of it on commit
    (a two-frame video clip then sees the mean of its frames)."""

    def __init__(self, model, modality: str):
        from imagebind.models.multimodal_preprocessors import PadIm2Video

        mods = list(model.modality_preprocessors[modality].modules())
        conv = next(m for m in mods if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
        k = conv.kernel_size[-1]
        assert k % POOL == 0 and conv.stride[-1] == k and conv.kernel_size[-2] == k
        self.conv, self.video = conv, isinstance(conv, torch.nn.Conv3d)
        if self.video:
            assert conv.kernel_size[0] == 2 and conv.stride[0] == 2
            pad = next(m for m in mods if isinstance(m, PadIm2Video))
            pad.forward = lambda x: x.unsqueeze(2) if x.ndim == 4 else x
        self.small = torch.nn.Parameter(self.from_kernel())
        stride = k // POOL
        bias = conv.bias

        def forward(x):
            if x.shape[-1] != 224 // POOL:
                raise ValueError(f"training inputs are pooled to {224 // POOL} px, got {tuple(x.shape)}")
            if self.video:
                return F.conv2d(x[:, :, 0], self.small, bias, stride).unsqueeze(2)
            return F.conv2d(x, self.small, bias, stride)

        conv.forward = forward

    def from_kernel(self) -> torch.Tensor:
        """The small kernel made from the module's full one (time taps summed, then
        the mean of each POOL×POOL block, times POOL²)."""
        w = self.conv.weight.detach()
        if self.video:
            w = w.sum(2)
        return F.avg_pool2d(w, POOL) * POOL * POOL

    def full(self) -> torch.Tensor:
        w = self.small.detach().repeat_interleave(POOL, -1).repeat_interleave(POOL, -2) / (POOL * POOL)
        if self.video:
            t = self.conv.kernel_size[0]
            w = w.unsqueeze(2).expand(-1, -1, t, -1, -1) / t
        return w.contiguous()

    def commit(self) -> None:
        with torch.no_grad():
            self.conv.weight.copy_(self.full())

    def reload(self) -> None:
        """Train on from the committed kernel, as an encoder loaded from a state dict
        does: the small kernel rebuilt from the full one (from_kernel). The round trip
        is not exact in float (the block mean of 16 equal values can round), so this is
        what makes a full run and `--stage2-from` see the same frozen vision kernel,
        bit for bit."""
        with torch.no_grad():
            self.small.copy_(self.from_kernel())


MEAN = torch.from_numpy(prep.MEAN)[None, :, None, None]
STD = torch.from_numpy(prep.STD)[None, :, None, None]


def warp(x: torch.Tensor, g: torch.Generator, rotate: float = 10.0, scale=(0.8, 1.15), shift: float = 0.12) -> torch.Tensor:
    """A random affine view of each image [B, C, H, W] (rotation in degrees, zoom,
    shear, shift as a fraction of the frame), edges extended."""
    b = x.shape[0]
    ang = torch.randn(b, generator=g) * math.radians(rotate)
    s = torch.empty(b).uniform_(*scale, generator=g)
    sh = torch.empty(b).uniform_(-0.15, 0.15, generator=g)
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin + sh, torch.empty(b).uniform_(-shift, shift, generator=g) * 2], 1),
                         torch.stack([sin, cos, torch.empty(b).uniform_(-shift, shift, generator=g) * 2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def spec_views(x: torch.Tensor, g: torch.Generator, fwarp: float = 0.1, twarp: float = 0.1,
               fmask: int = 8, tmask: int = 8, masks: int = 1) -> torch.Tensor:
    """Random views of normalised fbanks [B, 1, mel, frames] for speaker and tempo
    variety the recordings lack: the mel axis scaled about its lowest bin by up to
    ±`fwarp` (a longer or shorter vocal tract moves every formant by one factor), time
    stretched about the start by up to ±`twarp`, then `masks` frequency bands (up to
    `fmask` bins) and time spans (up to `tmask` frames) blanked (SpecAugment)."""
    b, _, nf, nt = x.shape
    fs = torch.empty(b).uniform_(1 - fwarp, 1 + fwarp, generator=g)
    ts = torch.empty(b).uniform_(1 - twarp, 1 + twarp, generator=g)
    zero = torch.zeros(b)
    # affine_grid maps output to input coordinates in [-1, 1]: x is time, y is mel;
    # scale about -1 (the first frame, the lowest bin).
    theta = torch.stack([torch.stack([1 / ts, zero, 1 / ts - 1], 1), torch.stack([zero, 1 / fs, 1 / fs - 1], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    fill = out.mean(dim=(2, 3), keepdim=True)
    bins, frames = torch.arange(nf).view(1, 1, nf, 1), torch.arange(nt).view(1, 1, 1, nt)
    for _ in range(masks):
        for size, width, axis in ((nf, fmask, bins), (nt, tmask, frames)):
            w = torch.randint(0, width + 1, (b, 1, 1, 1), generator=g)
            at = (torch.rand(b, 1, 1, 1, generator=g) * (size - w)).long()
            hit = (axis >= at) & (axis < at + w)
            out = torch.where(hit, fill, out)
    return out


def colour_views(b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, one affine colour map (channel order, inversion, grey, contrast,
    brightness) composed with the encoder's normalisation: pixels p in [0, 1] become
    M @ p + o, the encoder's input."""
    ms, os_ = [], []
    for _ in range(b):
        m = torch.eye(3)[torch.randperm(3, generator=g)]
        o = torch.zeros(3)
        if torch.rand(1, generator=g) < 0.25:  # inverted
            m, o = -m, o + 1
        if torch.rand(1, generator=g) < 0.2:  # grey
            m, o = torch.full((3, 3), 1 / 3) @ m, torch.full((3, 3), 1 / 3) @ o
        c = float(torch.empty(1).uniform_(0.6, 1.3, generator=g))
        off = float(torch.empty(1).uniform_(-0.15, 0.15, generator=g))
        m, o = c * m, c * (o - 0.5) + 0.5 + off
        ms.append(m / STD.view(3, 1))
        os_.append((o - MEAN.view(3)) / STD.view(3))
    return torch.stack(ms), torch.stack(os_)


_NOISE: torch.Tensor | None = None


def vision_batch(x: np.ndarray, g: torch.Generator | None = None) -> torch.Tensor:
    """8-bit pooled pixel images [B, 3, 56, 56] → the encoder's training input
    (normalised; a still: see LowResPatches).

    With a generator, a training view of each: most of them warped (rotation, zoom,
    shear, shift), all recoloured (colour_views) and given sensor noise of a random
    strength, so the encoder learns the digit's shape rather than the bank's pictures.
    (The bank's own renderings already vary blur and noise; these views are cheap.)"""
    global _NOISE
    p = torch.from_numpy(x).float().div_(255.0)
    if g is None:
        return (p - MEAN) / STD
    b = p.shape[0]
    w = torch.flatten(torch.nonzero(torch.rand(b, generator=g) < 0.7))
    if len(w):
        p[w] = warp(p[w], g)
    m, o = colour_views(b, g)
    t = torch.einsum("bij,bjhw->bihw", m, p) + o[:, :, None, None]
    if _NOISE is None:
        _NOISE = torch.randn((16,) + tuple(p.shape[1:]), generator=g)
    k = torch.randint(len(_NOISE), (b,), generator=g)
    sigma = torch.empty(b, 1, 1, 1).uniform_(0, 0.03, generator=g) / STD
    return t.add_(_NOISE[k] * sigma)


def zero_unused_tokens(model) -> int:
    """Zero the rows of the token table that no training text uses. They were never
    trained (random init, meaningless); zeros make an unseen word neutral and keep the
    committed text.onnx compressible (49 408 rows, a few hundred used)."""
    texts, _ = train_texts()
    used = np.unique(prep.tokenize(texts))
    table = model.modality_preprocessors["text"].token_embedding.weight
    keep = torch.zeros(table.shape[0], dtype=torch.bool)
    keep[torch.from_numpy(used)] = True
    with torch.no_grad():
        table[~keep] = 0.0
    return int(keep.sum())


# ------------------------------------------------------------------ evaluation


@torch.no_grad()
def embed(enc: ModalityEncoder, x: np.ndarray, modality: str, batch: int = 64) -> torch.Tensor:
    outs = []
    for i in range(0, len(x), batch):
        xb = x[i: i + batch]
        t = vision_batch(xb) if modality == "vision" else (
            torch.from_numpy(xb) if xb.dtype == np.int64 else torch.from_numpy(xb.astype(np.float32)))
        outs.append(F.normalize(enc(t), dim=-1))
    return torch.cat(outs)


def top1(emb: torch.Tensor, digits: np.ndarray, classes: torch.Tensor) -> float:
    return float(((emb @ classes.T).argmax(1).numpy() == digits).mean())


# ------------------------------------------------------------------ main


def per_modality(v: str) -> dict:
    if v.isdigit():
        return {m: int(v) for m in BOUND}
    out = {}
    for part in v.split(","):
        m, _, n = part.partition("=")
        if m not in BOUND or not n.isdigit():
            raise argparse.ArgumentTypeError(f"expected N or m=N,… with m in {BOUND}, got {part!r}")
        out[m] = int(n)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="state dict to write (.pth)")
    p.add_argument("--arch", type=Path, default=HERE / "arch.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes generating data")
    p.add_argument("--images-per-digit", type=int, default=2000)
    p.add_argument("--per-digit", type=per_modality, default={},
                   help=f"samples per digit of the bound modalities: N for all or m=N,… (default {PER_DIGIT})")
    p.add_argument("--heldout-per-digit", type=int, default=20)
    p.add_argument("--real-images-per-digit", type=int, default=1500,
                   help="photos of real handwriting (MNIST train[:10k], real.py) added to the image bank")
    p.add_argument("--real-audio-per-digit", type=int, default=1000,
                   help="spoken digits of every installed voice through the sensor chain (real.py), added to audio")
    p.add_argument("--real-speech", type=Path, action="append", default=[], metavar="DIR",
                   help="recordings of real people saying digits (Speech Commands or AudioMNIST layout; real.py); "
                        "a quarter of the speakers are held out as a check")
    p.add_argument("--optdigits-train", type=Path, metavar="FILE",
                   help="UCI optdigits.tra: 8×8 scans of 30 writers (none of load_digits' 13), "
                        "added to the real images as photos")
    p.add_argument("--scan-views", type=int, default=3, help="photos of each --optdigits-train scan")
    p.add_argument("--mnist-t10k", type=Path, metavar="DIR",
                   help="a folder with MNIST's t10k-{images-idx3,labels-idx1}-ubyte.gz: held-out writers' check")
    p.add_argument("--audio-views", choices=("none", "spec"), default="spec",
                   help="stage 2 audio: random spec_views of the fbanks (the committed pack), or the fbanks "
                        "as they are (the packs before it)")
    p.add_argument("--groups", type=int, default=8, help="groups of ten per batch")
    p.add_argument("--steps1", type=int, default=10000, help="image+text steps")
    p.add_argument("--steps2", type=per_modality, default={},
                   help=f"steps of the bound modalities: N for all or m=N,… (default {STEPS2})")
    p.add_argument("--eval-every", type=int, default=1000, help="stage 1 steps between held-out checks")
    p.add_argument("--lr", type=float, default=1e-3, help="stage 1 peak learning rate")
    p.add_argument("--lr2", type=float, default=2e-3, help="stage 2 peak learning rate")
    p.add_argument("--report", type=Path, help="write the figures as JSON here")
    p.add_argument("--cache", type=Path, help="keep generated data here between runs")
    p.add_argument("--stage2-from", type=Path, metavar="PTH",
                   help="skip stage 1: take the image and text encoders from this state dict (a previous "
                        "run's --out with the same seed and stage-1 settings) and train stage 2 only; "
                        "stage 2 draws from generators of its own per modality and a full run binds to the "
                        "vision kernel as saved (LowResPatches.reload), so the result is a full run's, bit for bit")
    a = p.parse_args(argv)
    per_digit = {**PER_DIGIT, **a.per_digit}
    steps2 = {**STEPS2, **a.steps2}
    global CACHE
    CACHE = a.cache
    # The data workers (spawned) read the real recordings' folders from the environment.
    os.environ[real.HUMAN_ENV] = os.pathsep.join(str(d.resolve()) for d in a.real_speech)

    t_start = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    aug = torch.Generator().manual_seed(a.seed)
    imagebind_model, _ = import_imagebind()
    arch = load_arch(a.arch)
    model = build_model(imagebind_model, arch)
    if a.stage2_from:
        state = torch.load(a.stage2_from)
        keep = ("modality_preprocessors.vision", "modality_trunks.vision", "modality_heads.vision",
                "modality_postprocessors.vision", "modality_preprocessors.text", "modality_trunks.text",
                "modality_heads.text", "modality_postprocessors.text")
        model.load_state_dict({k: v for k, v in state.items() if k.startswith(keep)}, strict=False)
    encs = {m: ModalityEncoder(model, m) for m in ("vision", "text") + BOUND}
    low = {m: LowResPatches(model, m) for m in PICTURES}
    for m, e in encs.items():
        print(f"{m:8s} {sum(p.numel() for p in e.parameters()) / 1e6:6.2f} M parameters")

    print("data (the daemon's preprocessing, tools/minibind/prep.py):", flush=True)
    img_x, img_d = bank("image", a.images_per_digit, "train", a.seed, a.workers)
    if a.real_images_per_digit:
        rx, rd = bank("realimage", a.real_images_per_digit, "train", a.seed, a.workers)
        img_x, img_d = np.concatenate([img_x, rx]), np.concatenate([img_d, rd])
    if a.optdigits_train:
        sx, sd = scan_bank(a.optdigits_train, a.scan_views, a.seed, a.workers)
        img_x, img_d = np.concatenate([img_x, sx]), np.concatenate([img_d, sd])
    texts, txt_d = train_texts()
    txt_x = prep.tokenize(texts)
    data = {m: bank(m, per_digit[m], "train", a.seed, a.workers) for m in BOUND}
    if a.real_audio_per_digit:
        rx, rd = bank("realaudio", a.real_audio_per_digit, "train", a.seed, a.workers)
        data["audio"] = (np.concatenate([data["audio"][0], rx]), np.concatenate([data["audio"][1], rd]))
    t10k = t10k_photos(a.mnist_t10k, 1000, a.seed) if a.mnist_t10k else None
    t10k_low = t10k_photos(a.mnist_t10k, 1000, a.seed, lowres=True) if a.mnist_t10k else None
    real_held = None
    if real.human_clips()["heldout"]:
        hx, hd = [], []
        for d, clips in sorted(real.human_clips()["heldout"].items()):
            for c in clips:
                x = real._human(c)
                if x is not None:  # as recorded: no augmentation
                    hx.append(prep.audio(x).astype(np.float16))
                    hd.append(d)
        real_held = (np.stack(hx), np.array(hd))
        print(f"  real speech: {real.have()['human']} training recordings of {len(real.human_speakers('train'))} "
              f"speakers; {len(hd)} of {len(real.human_speakers('heldout'))} held-out speakers", flush=True)
    held = {m: bank(m, a.heldout_per_digit, "heldout", a.seed, a.workers) for m in ("image",) + BOUND}
    prompts = prep.tokenize([PROMPT.format(w=w) for w in world.WORDS])
    held_texts = [world.text(d, "heldout", i, a.seed) for i in range(a.heldout_per_digit) for d in world.DIGITS]
    held_txt_d = np.array([d for _ in range(a.heldout_per_digit) for d in world.DIGITS])
    figures: dict = {"seed": a.seed, "arch": str(a.arch.name)}

    # ---- stage 1: image + text
    steps1 = 0 if a.stage2_from else a.steps1
    print(f"stage 1: image + text, {steps1} steps of {a.groups}×10 pairs"
          + (f" (encoders from {a.stage2_from})" if a.stage2_from else ""), flush=True)
    params = list(encs["vision"].parameters()) + list(encs["text"].parameters()) + [low["vision"].small]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.98), weight_decay=0.05)
    t0 = time.time()
    for step in range(steps1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.steps1, a.lr, 100)
        gi = groups(img_d, a.groups, rng)
        gt = groups(txt_d, a.groups, rng)
        v = encs["vision"](vision_batch(img_x[gi], aug))
        t = encs["text"](torch.from_numpy(txt_x[gt]))
        loss = info_nce(v, t, a.groups)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == a.steps1 - 1:
            scale = float(encs["text"].postprocessor[-1].log_logit_scale.detach().exp())
            print(f"  step {step:4d} loss {loss.item():.3f} text scale {scale:5.1f} ({time.time() - t0:5.0f} s)", flush=True)
        if (step + 1) % a.eval_every == 0 and step + 1 < a.steps1:
            for e in (encs["vision"], encs["text"]):
                e.eval()
            cls = embed(encs["text"], prompts, "text")
            acc = top1(embed(encs["vision"], held["image"][0], "vision"), held["image"][1], cls)
            extra = "" if t10k is None else \
                (f", real writers (MNIST t10k photos) {top1(embed(encs['vision'], t10k[0], 'vision'), t10k[1], cls):.3f}"
                 f", as 8×8 scans {top1(embed(encs['vision'], t10k_low[0], 'vision'), t10k_low[1], cls):.3f}")
            print(f"  step {step + 1:4d} held-out image→text top-1 {acc:.3f}{extra}", flush=True)
            for e in (encs["vision"], encs["text"]):
                e.train()
    figures["stage1_s"] = round(time.time() - t0)

    for e in encs.values():
        e.eval()
    classes = embed(encs["text"], prompts, "text")
    acc = top1(embed(encs["vision"], held["image"][0], "vision"), held["image"][1], classes)
    print(f"  held-out image→text top-1 {acc:.3f}", flush=True)
    figures["image_text"] = acc
    if t10k is not None:
        figures["real_t10k_image_text"] = top1(embed(encs["vision"], t10k[0], "vision"), t10k[1], classes)
        figures["real_t10k_lowres_image_text"] = top1(embed(encs["vision"], t10k_low[0], "vision"), t10k_low[1], classes)
        print(f"  real held-out writers (MNIST t10k photos) image→text top-1 {figures['real_t10k_image_text']:.3f}, "
              f"as 8×8 scans {figures['real_t10k_lowres_image_text']:.3f}", flush=True)

    # ---- stage 2: each other modality bound to the frozen image encoder
    # The vision kernel is committed now (the one saved and exported) and stage 2 binds
    # to it as rebuilt from that (LowResPatches.reload), which is what --stage2-from
    # loads: both paths give the same frozen embeddings and so the same stage 2.
    if not a.stage2_from:
        low["vision"].commit()
        low["vision"].reload()
    for prm in list(encs["vision"].parameters()) + [low["vision"].small]:
        prm.requires_grad_(False)
    img_emb = embed(encs["vision"], img_x, "vision")  # frozen: computed once
    for i, m in enumerate(BOUND):
        # Generators of its own per modality: each binding is independent of the others
        # and of how long stage 1 ran (--stage2-from gives a full run's result).
        rng = np.random.default_rng([a.seed, 2, i])
        aug = torch.Generator().manual_seed(a.seed * 1000 + 200 + i)
        x, d = data[m]
        enc = encs[m]
        enc.train()
        params = list(enc.parameters()) + ([low[m].small] if m in low else [])
        opt = torch.optim.AdamW(params, lr=a.lr2, betas=(0.9, 0.98), weight_decay=0.05)
        n = steps2[m]
        print(f"stage 2: {m} ↔ frozen image, {n} steps", flush=True)
        t0 = time.time()
        for step in range(n):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, n, a.lr2, 100)
            gm = groups(d, a.groups, rng)
            gi = groups(img_d, a.groups, rng)
            xm = torch.from_numpy(x[gm].astype(np.float32))
            if m in WARPED:
                xm = warp(xm, aug, rotate=6.0, scale=(0.9, 1.1), shift=0.08)
            elif m == "audio" and a.audio_views == "spec":
                xm = spec_views(xm, aug)
            out = enc(xm)
            loss = info_nce(out, img_emb[gi], a.groups)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 250 == 0 or step == n - 1:
                print(f"  step {step:4d} loss {loss.item():.3f} ({time.time() - t0:5.0f} s)", flush=True)
        enc.eval()
        figures[f"stage2_{m}_s"] = round(time.time() - t0)
        emb = embed(enc, held[m][0], m)
        figures[f"{m}_text"] = top1(emb, held[m][1], classes)
        print(f"  held-out {m}→text top-1 (emergent) {figures[f'{m}_text']:.3f}", flush=True)
        if m == "audio" and real_held is not None:
            figures["real_heldout_speakers_audio_text"] = top1(embed(enc, real_held[0], m), real_held[1], classes)
            print(f"  real held-out speakers ({len(real_held[1])} recordings) audio→text top-1 (emergent) "
                  f"{figures['real_heldout_speakers_audio_text']:.3f}", flush=True)

    print(f"token table: {zero_unused_tokens(model)} rows used in training kept, the rest zeroed", flush=True)
    # Held-out phrasings of the prompts, image→text.
    ht = embed(encs["text"], prep.tokenize(held_texts), "text")
    figures["heldout_text_image"] = top1(ht, held_txt_d, embed(encs["vision"], held["image"][0], "vision").view(
        a.heldout_per_digit, 10, -1).mean(0))
    figures["total_s"] = round(time.time() - t_start)
    print(json.dumps(figures, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    # The vision kernel is saved as it is (committed above, or as loaded); the pictures
    # trained in stage 2 are committed now.
    for m in PICTURES:
        if m in BOUND:
            low[m].commit()
    torch.save(model.state_dict(), a.out)
    if a.report:
        a.report.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
