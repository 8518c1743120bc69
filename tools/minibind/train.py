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
import world  # noqa: E402

BOUND = ("audio", "depth", "thermal", "imu")
PROMPT = "the number {w}"


# ------------------------------------------------------------------ data


def make_input(modality: str, digit: int, split: str, index: int, seed: int) -> np.ndarray:
    """One sample of the world through the daemon's preprocessing, as float16."""
    rng = world.rng_for("view", modality, digit, split, index, seed)
    if modality == "image":
        # Camera-like sizes and aspect ratios, and both of the daemon's resize paths.
        h = int(rng.integers(160, 400))
        w = int(h * rng.uniform(1.0, 1.34))
        if rng.random() < 0.3:
            h, w = w, h
        x = prep.image(world.image(digit, split, index, seed, h=h, w=w), "image" if rng.random() < 0.6 else "video")
        x = x[:, :1]  # both frames are the same: keep one, repeat at batch time
    elif modality == "audio":
        x = prep.audio(world.audio(digit, split, index, seed))
    elif modality == "depth":
        x = prep.depth(world.depth(digit, split, index, seed))
    elif modality == "thermal":
        x = prep.thermal(world.thermal(digit, split, index, seed))
    elif modality == "imu":
        x = prep.imu(world.imu(digit, split, index, seed))
    else:
        raise ValueError(modality)
    return x.astype(np.float16)


def _job(args):
    return make_input(*args)


CACHE: Path | None = None


def bank(modality: str, per_digit: int, split: str, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """per_digit samples of every digit → (inputs [N, ...] float16, digits [N]);
    kept in --cache (keyed by the generator's source) when given."""
    jobs = [(modality, d, split, i, seed) for i in range(per_digit) for d in world.DIGITS]
    cached = None
    if CACHE is not None:
        import hashlib

        src = (HERE / "world.py").read_bytes() + (HERE / "prep.py").read_bytes() + repr(jobs[:1] + [len(jobs)]).encode()
        cached = CACHE / f"{modality}-{split}-{per_digit}-{seed}-{hashlib.sha256(src).hexdigest()[:12]}.npz"
        if cached.exists():
            z = np.load(cached)
            print(f"  {modality:8s} {split:8s} {len(z['x']):5d} samples from {cached}", flush=True)
            return z["x"], z["d"]
    t0 = time.time()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            xs = pool.map(_job, jobs, chunksize=16)
    else:
        xs = [_job(j) for j in jobs]
    digits = np.array([j[1] for j in jobs])
    print(f"  {modality:8s} {split:8s} {len(xs):5d} samples in {time.time() - t0:5.1f} s", flush=True)
    x = np.stack(xs)
    if cached is not None:
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cached, x=x, d=digits)
    return x, digits


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


def fast_still_patches(model) -> None:
    """Training speed-up, exact for stills: an image enters the video patch embedding
    as two identical frames, so Conv3d with a (2, p, p) kernel equals a Conv2d of one
    frame with the kernel's two time taps summed. Autograd gives both taps the same
    gradient, as Conv3d would. The module and its weights are unchanged (only this
    process's forward is replaced), so the saved state dict and the export are the
    official architecture's."""
    import types

    conv = next(m for m in model.modality_preprocessors["vision"].modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.kernel_size[0] == 2 and conv.stride[0] == 2 and conv.bias is None

    def forward(self, x):
        if x.shape[2] != 2 or not torch.equal(x[:, :, 0], x[:, :, 1]):
            return torch.nn.functional.conv3d(x, self.weight, None, self.stride, self.padding)
        y = F.conv2d(x[:, :, 0], self.weight.sum(2), None, self.stride[1:], self.padding[1:])
        return y.unsqueeze(2)

    conv.forward = types.MethodType(forward, conv)


def vision_batch(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x.astype(np.float32))
    return t.expand(-1, -1, 2, -1, -1).contiguous()


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="state dict to write (.pth)")
    p.add_argument("--arch", type=Path, default=HERE / "arch.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes generating data")
    p.add_argument("--images-per-digit", type=int, default=1000)
    p.add_argument("--per-digit", type=int, default=300, help="samples per digit of each bound modality")
    p.add_argument("--heldout-per-digit", type=int, default=20)
    p.add_argument("--groups", type=int, default=6, help="groups of ten per batch")
    p.add_argument("--steps1", type=int, default=3500, help="image+text steps")
    p.add_argument("--steps2", type=int, default=1200, help="steps per bound modality")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--report", type=Path, help="write the figures as JSON here")
    p.add_argument("--cache", type=Path, help="keep generated data here between runs")
    a = p.parse_args(argv)
    global CACHE
    CACHE = a.cache

    t_start = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    imagebind_model, _ = import_imagebind()
    arch = load_arch(a.arch)
    model = build_model(imagebind_model, arch)
    encs = {m: ModalityEncoder(model, m) for m in ("vision", "text") + BOUND}
    fast_still_patches(model)
    for m, e in encs.items():
        print(f"{m:8s} {sum(p.numel() for p in e.parameters()) / 1e6:6.2f} M parameters")

    print("data (the daemon's preprocessing, tools/minibind/prep.py):", flush=True)
    img_x, img_d = bank("image", a.images_per_digit, "train", a.seed, a.workers)
    texts, txt_d = train_texts()
    txt_x = prep.tokenize(texts)
    data = {m: bank(m, a.per_digit, "train", a.seed, a.workers) for m in BOUND}
    held = {m: bank(m, a.heldout_per_digit, "heldout", a.seed, a.workers) for m in ("image",) + BOUND}
    prompts = prep.tokenize([PROMPT.format(w=w) for w in world.WORDS])
    held_texts = [world.text(d, "heldout", i, a.seed) for i in range(a.heldout_per_digit) for d in world.DIGITS]
    held_txt_d = np.array([d for _ in range(a.heldout_per_digit) for d in world.DIGITS])
    figures: dict = {"seed": a.seed, "arch": str(a.arch.name)}

    # ---- stage 1: image + text
    print(f"stage 1: image + text, {a.steps1} steps of {a.groups}×10 pairs", flush=True)
    params = list(encs["vision"].parameters()) + list(encs["text"].parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.98), weight_decay=0.05)
    t0 = time.time()
    for step in range(a.steps1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.steps1, a.lr, 100)
        gi = groups(img_d, a.groups, rng)
        gt = groups(txt_d, a.groups, rng)
        v = encs["vision"](vision_batch(img_x[gi]))
        t = encs["text"](torch.from_numpy(txt_x[gt]))
        loss = info_nce(v, t, a.groups)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == a.steps1 - 1:
            scale = float(encs["text"].postprocessor[-1].log_logit_scale.detach().exp())
            print(f"  step {step:4d} loss {loss.item():.3f} text scale {scale:5.1f} ({time.time() - t0:5.0f} s)", flush=True)
    figures["stage1_s"] = round(time.time() - t0)

    for e in encs.values():
        e.eval()
    classes = embed(encs["text"], prompts, "text")
    acc = top1(embed(encs["vision"], held["image"][0], "vision"), held["image"][1], classes)
    print(f"  held-out image→text top-1 {acc:.3f}", flush=True)
    figures["image_text"] = acc

    # ---- stage 2: each other modality bound to the frozen image encoder
    for prm in encs["vision"].parameters():
        prm.requires_grad_(False)
    img_emb = embed(encs["vision"], img_x, "vision")  # frozen: computed once
    for m in BOUND:
        x, d = data[m]
        enc = encs[m]
        enc.train()
        opt = torch.optim.AdamW(enc.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.05)
        print(f"stage 2: {m} ↔ frozen image, {a.steps2} steps", flush=True)
        t0 = time.time()
        for step in range(a.steps2):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, a.steps2, a.lr, 100)
            gm = groups(d, a.groups, rng)
            gi = groups(img_d, a.groups, rng)
            out = enc(torch.from_numpy(x[gm].astype(np.float32)))
            loss = info_nce(out, img_emb[gi], a.groups)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == a.steps2 - 1:
                print(f"  step {step:4d} loss {loss.item():.3f} ({time.time() - t0:5.0f} s)", flush=True)
        enc.eval()
        figures[f"stage2_{m}_s"] = round(time.time() - t0)
        emb = embed(enc, held[m][0], m)
        figures[f"{m}_text"] = top1(emb, held[m][1], classes)
        print(f"  held-out {m}→text top-1 (emergent) {figures[f'{m}_text']:.3f}", flush=True)

    print(f"token table: {zero_unused_tokens(model)} rows used in training kept, the rest zeroed", flush=True)
    # Held-out phrasings of the prompts, image→text.
    ht = embed(encs["text"], prep.tokenize(held_texts), "text")
    figures["heldout_text_image"] = top1(ht, held_txt_d, embed(encs["vision"], held["image"][0], "vision").view(
        a.heldout_per_digit, 10, -1).mean(0))
    figures["total_s"] = round(time.time() - t_start)
    print(json.dumps(figures, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), a.out)
    if a.report:
        a.report.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
