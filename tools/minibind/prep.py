"""The daemon's preprocessing, in Python, for training and evaluating MiniBind.

Image and audio follow official ImageBind's loaders (which `src/preprocess` matches:
see docs/preprocessing.md); depth, thermal and IMU follow sensebind's documented
choices with the defaults of configs/default.toml and calibration/example.toml. The
Rust tests embed the held-out data through the daemon itself (`sensebind embed`, the
daemon on the bus), so a drift between this file and `src/preprocess` shows up there.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from PIL import Image

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
AUDIO_MEAN, AUDIO_STD, MEL_BINS, TARGET_LEN = -4.268, 9.138, 128, 204
# calibration/example.toml: disparity = baseline·focal / depth.
BASELINE_M, FOCAL_PX = 0.050, 382.0
MIN_DEPTH_M, MAX_DEPTH_M = 0.01, 50.0
IMU_STEPS = 2000


def _round_half_even(x: float) -> int:
    return int(round(x))  # Python's round is ties-to-even, like CenterCrop


def image(rgb: np.ndarray, mode: str = "image") -> np.ndarray:
    """RGB u8 H×W×3 → [3, 2, 224, 224] float32 (the frame repeated, as PadIm2Video).

    mode "image": the official image loader (PIL bicubic with antialias, u8, CenterCrop);
    mode "video": pytorchvideo ShortSideScale (bilinear, no antialias) + centre crop."""
    h, w = rgb.shape[:2]
    if mode == "image":
        if h <= w:
            nh, nw = SIZE, int(SIZE * w / h)
        else:
            nh, nw = int(SIZE * h / w), SIZE
        x = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC), np.float32) / 255.0
        top, left = _round_half_even((nh - SIZE) / 2), _round_half_even((nw - SIZE) / 2)
        x = x[top: top + SIZE, left: left + SIZE]
        x = (x - MEAN) / STD
        x = x.transpose(2, 0, 1)
    else:
        if h <= w:
            nh, nw = SIZE, int(math.floor(w / h * SIZE))
        else:
            nh, nw = int(math.floor(h / w * SIZE)), SIZE
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)[0]
        t = (t - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None]
        top, left = math.ceil((nh - SIZE) / 2), math.ceil((nw - SIZE) / 2)
        x = t[:, top: top + SIZE, left: left + SIZE].numpy()
    return np.repeat(x[:, None], 2, axis=1).astype(np.float32)


def audio(wave16k: np.ndarray) -> np.ndarray:
    """float32 mono at 16 kHz (2 s) → [1, 128, 204] normalised fbank."""
    w = torch.from_numpy(np.asarray(wave16k, np.float32))[None]
    w = w - w.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        w, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=MEL_BINS, dither=0.0, frame_length=25, frame_shift=10,
    ).transpose(0, 1)
    n = fb.shape[1]
    if n < TARGET_LEN:
        fb = F.pad(fb, (0, TARGET_LEN - n))
    fb = fb[:, :TARGET_LEN]
    return ((fb - AUDIO_MEAN) / AUDIO_STD)[None].numpy().astype(np.float32)


def _gray(x: np.ndarray) -> np.ndarray:
    """Float H×W → short side 224 (Catmull-Rom, antialiased, float), centre crop."""
    h, w = x.shape
    if h <= w:
        nh, nw = SIZE, int(SIZE * w / h)
    else:
        nh, nw = int(SIZE * h / w), SIZE
    y = np.asarray(Image.fromarray(x.astype(np.float32), mode="F").resize((nw, nh), Image.BICUBIC), np.float32)
    top, left = _round_half_even((nh - SIZE) / 2), _round_half_even((nw - SIZE) / 2)
    return y[top: top + SIZE, left: left + SIZE][None]


def disparity(mm: np.ndarray) -> np.ndarray:
    m = np.clip(mm.astype(np.float32) / 1000.0, MIN_DEPTH_M, MAX_DEPTH_M)
    d = BASELINE_M * FOCAL_PX / m
    return np.where(mm == 0, 0.0, d).astype(np.float32)


def depth(mm: np.ndarray) -> np.ndarray:
    """u16 millimetres H×W → [1, 224, 224] disparity."""
    return _gray(disparity(mm))


def thermal(raw: np.ndarray) -> np.ndarray:
    """u16 Y16 H×W → [1, 224, 224]: each frame's min..max → [0, 1] (range = "auto")."""
    r = raw.astype(np.float32)
    lo, hi = float(r.min()), float(r.max())
    return _gray(np.clip((r - lo) / max(hi - lo, 1.0), 0, 1))


def imu(samples: np.ndarray, rate: float = 200.0, seconds: float = 2.0) -> np.ndarray:
    """N×6 readings at `rate` Hz from the window's start → [6, 2000] (linear)."""
    t_in = np.arange(len(samples)) / rate
    t_out = np.arange(IMU_STEPS) * seconds / IMU_STEPS
    return np.stack([np.interp(t_out, t_in, samples[:, c]) for c in range(6)]).astype(np.float32)


_TOKENIZER = None


def tokenize(texts: list[str]) -> np.ndarray:
    """Official SimpleTokenizer → int64 [N, 77]."""
    global _TOKENIZER
    if _TOKENIZER is None:
        import importlib.util
        import os

        from imagebind.models.multimodal_preprocessors import SimpleTokenizer

        spec = importlib.util.find_spec("imagebind")
        bpe = os.path.join(list(spec.submodule_search_locations)[0], "bpe", "bpe_simple_vocab_16e6.txt.gz")
        _TOKENIZER = SimpleTokenizer(bpe_path=bpe)
    return _TOKENIZER(texts).numpy().astype(np.int64)
