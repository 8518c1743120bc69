"""The MiniBind digit world (tools/minibind/world.py): deterministic, in the sensors'
formats, and with held-out styles (fonts, voices, writers) that training never sees."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "minibind"))
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


def test_held_out_styles_never_appear_in_training():
    rng = np.random.default_rng(0)
    for names in (world.WRITERS, world.voices(), world.fonts() or ["none"]):
        train = {world.pick_style(names, "train", rng) for _ in range(300)}
        held = {world.pick_style(names, "heldout", rng) for _ in range(300)}
        if len(names) > 3:
            assert not train & held, (train & held)
    assert world.text(7, "heldout", 0) not in {world.text(7, "train", i) for i in range(200)}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_audio_is_two_seconds_of_speech_at_16k():
    a = world.audio(7, "train", 0)
    assert a.shape == (32000,) and a.dtype == np.float32
    assert 0.05 < np.abs(a).max() <= 0.9
    assert np.array_equal(a, world.audio(7, "train", 0))
