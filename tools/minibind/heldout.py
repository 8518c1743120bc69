#!/usr/bin/env python3
"""Write held-out digit-world samples as the files sensors and users hand to
`sensebind embed` (the evaluation and the Rust meaning tests read them):

    python tools/minibind/heldout.py OUT [--per-digit N] [--seed S]

OUT/<modality>_<digit>_<i>.<ext>:
    image    .jpg  RGB, camera-like size (JPEG, as cameras deliver)
    audio    .wav  16 kHz mono 16-bit, 2 s
    depth    .png  16-bit millimetres
    thermal  .png  16-bit Y16 centikelvin
    imu      .csv  t_s,ax,ay,az,gx,gy,gz at 200 Hz, 2 s
and OUT/index.json listing {modality, digit, path}. Everything comes from world.py's
*held-out* split (fonts, writers, voices, phrasings and noise never used in training).
"""
from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

MODALITIES = ("image", "audio", "depth", "thermal", "imu")


def write(modality: str, digit: int, index: int, seed: int, out: Path) -> Path:
    rng = world.rng_for("heldout-file", modality, digit, index, seed)
    stem = out / f"{modality}_{digit}_{index}"
    if modality == "image":
        h = int(rng.integers(200, 400))
        w = int(h * rng.uniform(1.0, 1.34))
        p = stem.with_suffix(".jpg")
        Image.fromarray(world.image(digit, "heldout", index, seed, h=h, w=w)).save(p, quality=90)
    elif modality == "audio":
        p = stem.with_suffix(".wav")
        x = world.audio(digit, "heldout", index, seed)
        with wave.open(str(p), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(world.AUDIO_RATE)
            f.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    elif modality in ("depth", "thermal"):
        p = stem.with_suffix(".png")
        a = world.depth(digit, "heldout", index, seed) if modality == "depth" else world.thermal(digit, "heldout", index, seed)
        Image.fromarray(a.astype(np.uint16)).save(p)
    elif modality == "imu":
        p = stem.with_suffix(".csv")
        x = world.imu(digit, "heldout", index, seed)
        t = np.arange(len(x))[:, None] / world.IMU_RATE
        np.savetxt(p, np.hstack([t, x]), fmt="%.5f", delimiter=",", header="t_s,ax,ay,az,gx,gy,gz", comments="")
    else:
        raise ValueError(modality)
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-digit", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    index = []
    for m in a.modalities.split(","):
        for i in range(a.per_digit):
            for d in world.DIGITS:
                index.append({"modality": m, "digit": d, "path": str(write(m, d, i, a.seed, a.out))})
    texts = [{"digit": d, "text": world.text(d, "heldout", i, a.seed)} for i in range(a.per_digit) for d in world.DIGITS]
    (a.out / "index.json").write_text(json.dumps({"files": index, "texts": texts}, indent=1))
    print(f"wrote {len(index)} files to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
