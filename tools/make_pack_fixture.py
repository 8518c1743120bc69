#!/usr/bin/env python3
"""Write a small reference fixture for a sensebind model pack (for the Rust tests).

For every modality in DIR/pack.toml it runs the pack's ONNX graph with onnxruntime on
one deterministic item (batch of 1) and records the output embedding and its L2 norm.
The inputs are defined by formulas so the Rust side can regenerate them instead of
storing them:

  * float inputs: over the flattened per-item tensor (row-major, i = 0..numel-1)
        x[i] = float32(sin(0.001 * i) * 0.5)      (computed in float64, then rounded)
  * text (int64): [49406, 320, 1125, 539, 320, 1929, 49407] zero-padded to 77
        ("a photo of a dog" with SOT/EOT in the CLIP BPE vocabulary)

Usage:
    python tools/make_pack_fixture.py --pack packs/tiny-random \\
        --out tests/fixtures/tiny_pack_ref.json

Needs only numpy and onnxruntime (see tools/requirements-export.txt).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

FLOAT_FORMULA = "x[i] = float32(sin(0.001 * i) * 0.5), i = 0..numel-1 over the " \
    "flattened per-item tensor (row-major), computed in float64 then rounded"
TEXT_IDS = [49406, 320, 1125, 539, 320, 1929, 49407]


def float_input(shape: list[int]) -> np.ndarray:
    """The deterministic float item, with a leading batch axis of 1."""
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    x = (np.sin(0.001 * i) * 0.5).astype(np.float32)
    return x.reshape(1, *shape)


def text_input(shape: list[int]) -> np.ndarray:
    """The deterministic token ids, zero-padded to the context length."""
    (ctx,) = shape
    ids = np.zeros((1, ctx), dtype=np.int64)
    ids[0, : len(TEXT_IDS)] = TEXT_IDS
    return ids


def f32(v) -> float:
    """Shortest decimal that round-trips to the same float32 (keeps the JSON small)."""
    return float(str(np.float32(v)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, required=True, help="pack directory (pack.toml)")
    p.add_argument("--out", type=Path, required=True, help="fixture JSON to write")
    args = p.parse_args(argv)

    manifest = tomllib.loads((args.pack / "pack.toml").read_text(encoding="utf-8"))
    fixture = {
        "pack": manifest["pack"]["name"],
        "weights": manifest["pack"]["weights"],
        "made_by": "tools/make_pack_fixture.py",
        "float_input": FLOAT_FORMULA,
        "modalities": {},
    }
    for modality, table in manifest.items():
        if modality == "pack":
            continue
        shape = table["input_shape"]
        if table["input_dtype"] == "int64":
            x = text_input(shape)
            input_desc = {"ids": x[0].tolist()}
        else:
            x = float_input(shape)
            # A few values so the Rust side can check its input generator.
            input_desc = {
                "formula": "sin(0.001*i)*0.5",
                "first": [f32(v) for v in x.ravel()[:4]],
                "sum": float(x.astype(np.float64).sum()),
            }
        sess = ort.InferenceSession(
            str(args.pack / table["file"]), providers=["CPUExecutionProvider"]
        )
        (emb,) = sess.run([table["output"]], {table["input"]: x})
        emb = emb[0]
        fixture["modalities"][modality] = {
            "input_shape": [1, *shape],
            "input_dtype": table["input_dtype"],
            "input": input_desc,
            "logit_scale": table["logit_scale"],
            "output": [f32(v) for v in emb],
            "l2_norm": float(np.linalg.norm(emb.astype(np.float64))),
        }
        print(f"{modality}: dim {emb.shape[0]}, |emb| = "
              f"{fixture['modalities'][modality]['l2_norm']:.6f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, indent=1)
    # Keep number lists on one line each (indent=1 would put every float on its own).
    text = re.sub(r"\[\s*([-+0-9.eE,\s]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
