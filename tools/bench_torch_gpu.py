#!/usr/bin/env python3
"""The hardware reference for docs/performance.md: official ImageBind (PyTorch, the
pack's architecture and seed) on the GPU in fp16, per modality, windows/s at batch 1
and 8, and the TFLOP/s that implies from the analytic FLOPs per window (the table in
docs/performance.md). Not a sensebind path: it says how far the GPU itself goes.

    python tools/bench_torch_gpu.py [--arch tools/arch/huge.json] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parent
# Analytic GFLOP per window of imagebind_huge (docs/performance.md, "FLOP arithmetic").
HUGE_GFLOP = {"vision": 334, "text": 47, "audio": 41, "depth": 9.1, "thermal": 35, "imu": 10.3}
SHAPES = {
    "vision": ((3, 2, 224, 224), torch.float16),
    "text": ((77,), torch.int64),
    "audio": ((1, 128, 204), torch.float16),
    "depth": ((1, 224, 224), torch.float16),
    "thermal": ((1, 224, 224), torch.float16),
    "imu": ((6, 2000), torch.float16),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", type=Path, default=TOOLS / "arch" / "huge.json")
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    sys.path.insert(0, str(TOOLS))
    import export_imagebind as ex
    imagebind_model, _ = ex.import_imagebind()
    torch.manual_seed(0)
    model = ex.build_model(imagebind_model, ex.load_arch(args.arch)).eval().half().cuda()
    huge = args.arch.name == "huge.json"
    rows = []
    for m, (shape, dtype) in SHAPES.items():
        for b in (1, 8):
            if dtype == torch.int64:
                x = torch.randint(1, 49407, (b, *shape), device="cuda")
            else:
                x = torch.randn((b, *shape), device="cuda", dtype=dtype)
            if m in ("vision", "audio"):
                x = x[:, None]  # one clip per window: ImageBind folds axis 1 of 5-D+ inputs as clips
            with torch.inference_mode():
                for _ in range(3):
                    model({m: x})
                torch.cuda.synchronize()
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    model({m: x})
                    n += 1
                torch.cuda.synchronize()
                dt = (time.perf_counter() - t0) / n
            wps = b / dt
            tflops = HUGE_GFLOP[m] * wps / 1e3 if huge else float("nan")
            rows.append({"modality": m, "batch": b, "windows_per_s": wps, "ms_per_call": dt * 1e3,
                         "tflops": tflops})
            print(f"{m:<8} batch {b}: {wps:9.1f} windows/s ({dt * 1e3:7.2f} ms per call), "
                  f"{tflops:6.1f} TFLOP/s", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
