#!/usr/bin/env python3
"""Write the digit world the demo's synthetic sensors play (src/sources/digit_world.rs
embeds these files in the binary):

    python tools/minibind/make_demo_world.py assets/digit-world

Per digit D (all from world.py's *held-out* split: fonts, writers and voices the
MiniBind pack never saw in training; fixed indices, not picked by result):
    image_D_V.png    320×240 RGB, V = 0, 1 (clean: the source adds noise per frame)
    depth_D.png      320×240 16-bit millimetres (clean: the sign and its wall)
    thermal_D.png    160×120 16-bit Y16 centikelvin (clean)
    speech_D_V.wav   the spoken word, 16 kHz mono 16-bit, V = 0, 1 (two voices)
    imu_D.csv        t_s,ax,ay,az,gx,gy,gz (m/s², rad/s): 400 rows at 200 Hz, 2 s
"""
from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

SPLIT = "heldout"
SEED = 7  # a seed of its own: the evaluation's held-out samples use seed 0


def png16(path: Path, a: np.ndarray) -> None:
    Image.fromarray(a.astype(np.uint16)).save(path, optimize=True)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "assets/digit-world")
    out.mkdir(parents=True, exist_ok=True)
    for d in world.DIGITS:
        for v in range(2):
            sq = world.image(d, SPLIT, v, SEED, h=240, w=240, clean=True)
            # 4:3 like a camera, the square scene in the middle (the daemon crops it).
            img = np.pad(sq, ((0, 0), (40, 40), (0, 0)), mode="reflect")
            Image.fromarray(img).save(out / f"image_{d}_{v}.png", optimize=True)
            rng = world.rng_for("demo-voice", d, v)
            voice = world.pick_style(world.voices(), SPLIT, rng)
            speech = world._speak(world.WORDS[d], voice, int(rng.integers(130, 190)), int(rng.integers(30, 70)))
            speech = speech / (np.abs(speech).max() + 1e-9) * 0.5
            with wave.open(str(out / f"speech_{d}_{v}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(world.AUDIO_RATE)
                w.writeframes((speech * 32767).astype("<i2").tobytes())
        png16(out / f"depth_{d}.png", world.depth(d, SPLIT, 0, SEED, clean=True))
        png16(out / f"thermal_{d}.png", world.thermal(d, SPLIT, 0, SEED, clean=True))
        imu = world.imu(d, SPLIT, 0, SEED)
        t = np.arange(len(imu))[:, None] / world.IMU_RATE
        np.savetxt(out / f"imu_{d}.csv", np.hstack([t, imu]), fmt="%.4f", delimiter=",",
                   header="t_s,ax,ay,az,gx,gy,gz", comments="")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
