#!/usr/bin/env python3
"""MiniBind on real people: emergent zero-shot digit accuracy on real spoken and
handwritten digits, through sensebind itself (`sensebind embed`: the daemon's own
decoding, resampling, preprocessing and ONNX Runtime), with confusion matrices.

    tools/minibind/real_eval.py --fsdd DIR [--reps 0-4] [--digits] [--pack DIR] [--json F]

- `--fsdd DIR`: Free Spoken Digit Dataset recordings (`{digit}_{speaker}_{rep}.wav`,
  8 kHz; CC BY-SA 4.0; github Jakobovski/free-spoken-digit-dataset). `--reps 0-4` is
  FSDD's own test split. EVALUATION ONLY: never train or tune on it (issue 23).
- `--digits`: scikit-learn's bundled `load_digits` (1 797 scanned 8×8 digits, UCI
  optdigits test writers), written as 8×8 grey PNGs (ink dark on white, 16 levels
  spread over 0..255). EVALUATION ONLY. Needs scikit-learn in the running Python.

Labels are the daemon's defaults ("the number <word>", "the digit <d>", prompt
ensembled), as tools/minibind/eval. Figures are per modality and per speaker. See
docs/minibind-real-data.md for the data plan.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import world  # noqa: E402

FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def embed(binary: str, pack: str | None, args: list[str]) -> list[dict]:
    out = []
    # Bounded argument lists (a few hundred inputs a call).
    step = 400
    for i in range(0, len(args), step):
        cmd = [binary, "embed"] + (["--pack", pack] if pack else []) + args[i:i + step]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        out += [json.loads(l) for l in res.stdout.splitlines() if l.strip()]
    return out


def prompts(d: int) -> list[str]:
    """The daemon's default label prompts of digit d (ensembled: their mean)."""
    return [f"the number {world.WORDS[d]}", f"the digit {d}"]


def label_embeddings(binary: str, pack: str | None) -> np.ndarray:
    texts = [t for d in world.DIGITS for t in prompts(d)]
    rows = embed(binary, pack, [a for t in texts for a in ("--text", t)])
    T = unit(np.array([r["embedding"] for r in rows], np.float32))
    return unit(T.reshape(10, 2, -1).mean(1))


def score(binary, pack, flag, items, labels):
    """items: [(path, digit, group)] → accuracy, per group, confusion matrix."""
    rows = embed(binary, pack, [a for p, _, _ in items for a in (flag, str(p))])
    first = {}
    for r in rows:
        first.setdefault(r["input"], r["embedding"])
    E = unit(np.array([first[str(p)] for p, _, _ in items], np.float32))
    pred = (E @ labels.T).argmax(1)
    truth = np.array([d for _, d, _ in items])
    conf = np.zeros((10, 10), int)
    for t, p in zip(truth, pred):
        conf[t, p] += 1
    groups = {}
    for (_, d, g), p in zip(items, pred):
        ok, n = groups.get(g, (0, 0))
        groups[g] = (ok + int(p == d), n + 1)
    return {
        "n": len(items),
        "top1": float((pred == truth).mean()),
        "per_group": {g: ok / n for g, (ok, n) in sorted(groups.items())},
        "confusion": conf.tolist(),
    }


def fsdd_items(fsdd: Path, lo: int, hi: int):
    """FSDD recordings with repetition lo..hi → [(path, digit, speaker)]."""
    items = []
    for p in sorted(fsdd.iterdir()):
        m = FSDD_NAME.match(p.name)
        if m and lo <= int(m.group(3)) <= hi:
            items.append((p.resolve(), int(m.group(1)), m.group(2)))
    return items


def load_digits_data():
    """scikit-learn's load_digits: (images 8×8 in 0..16, digits). Needs scikit-learn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digit_png(img: np.ndarray, path: Path) -> None:
    """One load_digits image as an 8×8 grey PNG: ink dark on white, 0..16 over 0..255."""
    from PIL import Image

    px = (255 - img * 255 / 16).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(px, "L").save(path)


def digit_png_name(digit: int, index: int) -> str:
    """index: the row in load_digits."""
    return f"{digit}_{index:04}.png"


def digits_items(work: Path):
    images, target = load_digits_data()
    out = []
    work.mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images, target)):
        p = work / digit_png_name(int(y), i)
        digit_png(img, p)
        out.append((p, int(y), "load_digits"))
    return out


def print_result(name: str, r: dict, indent: str = "") -> None:
    """One score() result: overall, per group, confusion matrix."""
    print(f"{indent}{name}: {r['n']} inputs, emergent zero-shot top-1 {100 * r['top1']:.1f} % (chance 10 %)")
    if len(r["per_group"]) > 1:
        for g, v in r["per_group"].items():
            print(f"{indent}  {g:12s} {100 * v:5.1f} %")
    print(f"{indent}  confusion (rows: truth 0-9, columns: predicted 0-9):")
    for row in r["confusion"]:
        print(f"{indent}   " + " ".join(f"{x:3d}" for x in row))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsdd", type=Path, help="FSDD recordings directory")
    ap.add_argument("--reps", default="0-4", help="FSDD repetitions, `a-b` (default 0-4, FSDD's test split)")
    ap.add_argument("--digits", action="store_true", help="also scikit-learn's load_digits")
    ap.add_argument("--pack", help="pack directory (default: the binary's built-in pack)")
    ap.add_argument("--bin", default=os.environ.get("SENSEBIND_BIN", str(ROOT / "target/release/sensebind")))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    lo, hi = (int(x) for x in a.reps.split("-"))
    labels = label_embeddings(a.bin, a.pack)
    res = {}
    if a.fsdd:
        res["spoken_fsdd"] = score(a.bin, a.pack, "--audio", fsdd_items(a.fsdd, lo, hi), labels)
    if a.digits:
        with tempfile.TemporaryDirectory() as tmp:
            res["handwritten_load_digits"] = score(a.bin, a.pack, "--image", digits_items(Path(tmp)), labels)
    for name, r in res.items():
        print_result(name, r)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
