"""The MiniBind digit world (tools/minibind/world.py): deterministic, in the sensors'
formats, and with held-out styles (fonts, voices, writers) that training never sees.
The fonts and voices it draws and speaks with must be installed (tools/dev.sh setup):
without them the world silently falls back to strokes and silence, so these tests fail."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "minibind"))
import world  # noqa: E402

FORMATS = {
    "image": ((224, 224, 3), np.uint8),
    "depth": ((240, 320), np.uint16),
    "thermal": ((120, 160), np.uint16),
    "imu": ((400, 6), np.float32),
}


@pytest.mark.parametrize("modality", sorted(FORMATS))
def test_samples_are_deterministic_and_in_sensor_formats(modality):
    shape, dtype = FORMATS[modality]
    a = world.sample(modality, 7, "train", 3)
    b = world.sample(modality, 7, "train", 3)
    c = world.sample(modality, 7, "train", 4)
    assert a.shape == shape and a.dtype == dtype
    assert np.array_equal(a, b), "same arguments, same sample"
    assert not np.array_equal(a, c), "another index, another sample"


def test_the_digit_is_in_the_picture():
    # The thermal digit is warmer than the scene around it: its hottest pixels are
    # well above the median.
    t = world.thermal(1, "train", 0).astype(np.float64) / 100
    assert np.percentile(t, 99.5) - np.median(t) > 5
    # The depth relief stands in front of the wall.
    d = world.depth(8, "train", 0).astype(np.float64)
    valid = d[d > 0]
    assert np.median(valid) - np.percentile(valid, 1) > 100
    # IMU: gravity dominates the mean acceleration, and the hand moves.
    imu = world.imu(3, "train", 0)
    assert 9 < np.linalg.norm(imu[:, :3].mean(0)) < 10.6
    assert imu[:, :3].std(0).max() > 0.2


def font_packages():
    """The Debian font packages tools/dev.sh installs for the digit world."""
    m = re.search(r"^MINIBIND_FONTS=\(([^)]*)\)", (ROOT / "tools/dev.sh").read_text(), re.M)
    assert m, "tools/dev.sh lists no MINIBIND_FONTS"
    return m.group(1).split()


def test_the_fonts_tools_dev_sh_installs_are_there_and_drawn_with():
    packages = font_packages()
    assert len(packages) >= 10, packages
    dpkg = shutil.which("dpkg-query")
    assert dpkg, "dpkg-query not found: the digit world's fonts are the Debian packages tools/dev.sh installs"
    status = subprocess.run([dpkg, "-W", "-f=${Package} ${db:Status-Status}\n", *packages], capture_output=True, text=True)
    installed = {l.split()[0] for l in status.stdout.splitlines() if l.split()[1:] == ["installed"]}
    missing = [p for p in packages if p not in installed]
    assert not missing, f"font packages not installed (run tools/dev.sh setup): {missing}"
    # Every package that puts font files under /usr/share/fonts gives the world at least
    # one face that draws the digits.
    fonts = {os.path.realpath(f) for f in world.fonts()}
    for p in packages:
        files = subprocess.run([dpkg, "-L", p], capture_output=True, text=True, check=True).stdout.split()
        faces = {os.path.realpath(f) for f in files if f.startswith("/usr/share/fonts/") and f.endswith((".ttf", ".otf"))}
        assert not faces or faces & fonts, f"{p}: none of its fonts draws the digits: {sorted(faces)[:5]}"
    # Both splits have fonts of their own (tests/minibind.rs draws held-out ones).
    held = [f for f in world.fonts() if world.held_out(f)]
    assert len(held) >= 4 and len(world.fonts()) - len(held) >= 4, (len(held), len(world.fonts()))


def test_held_out_styles_never_appear_in_training():
    rng = np.random.default_rng(0)
    for names in (world.WRITERS, world.voices(), world.fonts()):
        assert len(names) > 3, names
        train = {world.pick_style(names, "train", rng) for _ in range(300)}
        held = {world.pick_style(names, "heldout", rng) for _ in range(300)}
        assert not train & held, (train & held)
    assert world.text(7, "heldout", 0) not in {world.text(7, "train", i) for i in range(200)}


def test_audio_is_two_seconds_of_speech_at_16k():
    assert shutil.which("espeak-ng"), "espeak-ng is not installed (tools/dev.sh setup installs it)"
    a = world.audio(7, "train", 0)
    assert a.shape == (32000,) and a.dtype == np.float32
    assert 0.05 < np.abs(a).max() <= 0.9
    assert np.array_equal(a, world.audio(7, "train", 0))
