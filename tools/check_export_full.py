#!/usr/bin/env python3
"""Check the ONNX export at FULL imagebind_huge size (random weights), by hand.

Builds the official ImageBindModel with tools/arch/huge.json (random init, --seed),
exports each of the six encoders with tools/export_imagebind.py's own code path
(``ModalityEncoder`` + ``export_one``: dynamo exporter, opset 18, dynamic batch, weights
in ``<m>.onnx.data`` above 1.5 GB), runs each graph with onnxruntime against the
PyTorch forward on the same random batch (batch 2) and prints a table:

    modality, parameters, ONNX size, max abs(onnxruntime - torch), export s, peak RSS

Exits 1 if any max |d| is above --tol (default 1e-4).

Cost: ~3 min and ~9 GB peak RAM on 2 cores for all six.  Modalities are done one at a
time; each one's submodules are dropped from the model once it is checked, and its
ONNX files are deleted (unless --out is given), so memory and disk go down as it runs.

    nice python tools/check_export_full.py                 # temp dir, removed after
    nice python tools/check_export_full.py --out /tmp/huge # keep the exported graphs
    python tools/check_export_full.py --modalities audio,imu

Tool time only; not part of CI (needs tools/requirements-export.txt).
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import export_imagebind as ex  # noqa: E402

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=Path, default=HERE / "arch" / "huge.json")
    p.add_argument("--out", type=Path, help="export here and keep the graphs "
                   "(default: a temporary directory, removed at the end)")
    p.add_argument("--modalities", default=",".join(ex.MODALITIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=2, help="verification batch (default 2)")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    args = p.parse_args(argv)
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    bad = [m for m in mods if m not in ex.MODALITIES]
    if bad or not mods:
        p.error(f"--modalities: unknown {bad}; choose from {', '.join(ex.MODALITIES)}")
    torch.set_num_threads(args.threads)

    t0 = time.time()
    imagebind_model, _ = ex.import_imagebind()
    torch.manual_seed(args.seed)
    model = ex.build_model(imagebind_model, ex.load_arch(args.arch)).eval()
    total_params = sum(p.numel() for p in model.parameters())
    print(f"built {args.arch.name}: {total_params / 1e6:.1f}M parameters "
          f"({total_params * 4 / 1024**3:.2f} GiB fp32) in {time.time() - t0:.0f} s; "
          f"peak RSS {peak_rss_gib():.1f} GiB", flush=True)

    keep = args.out is not None
    out_dir = args.out if keep else Path(tempfile.mkdtemp(prefix="imagebind-full-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    rows, failed = [], []
    try:
        for m in mods:
            enc = ex.ModalityEncoder(model, m).eval()
            n_params = sum(p.numel() for p in enc.parameters())
            print(f"[{m}] exporting {n_params / 1e6:.1f}M parameters ...", flush=True)
            t = time.time()
            path = ex.export_one(enc, m, out_dir, gen)
            t_export = time.time() - t
            files = [path] + sorted(out_dir.glob(f"{m}.onnx.*"))
            size = sum(f.stat().st_size for f in files)

            x = ex.random_input(m, args.batch, gen)
            with torch.no_grad():
                ref = enc(x).numpy().astype(np.float64)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            t = time.time()
            got = sess.run([ex.OUTPUT_NAME], {m: x.numpy()})[0]
            t_run = time.time() - t
            del sess
            if got.shape != ref.shape:
                raise SystemExit(f"error: {m}: onnx output {got.shape} vs torch {ref.shape}")
            delta = float(np.max(np.abs(got.astype(np.float64) - ref)))
            ok = delta <= args.tol  # False for NaN too
            if not ok:
                failed.append(m)
            rows.append((m, n_params, size, "+".join(f.name for f in files), delta, ok,
                         t_export, t_run, peak_rss_gib()))
            print(f"[{m}] {human(size)} in {', '.join(f.name for f in files)}; "
                  f"max |d| = {delta:.3e} ({'ok' if ok else 'FAILED'}); "
                  f"peak RSS {peak_rss_gib():.1f} GiB", flush=True)

            # Free this modality before the next one.
            del enc
            for attr in ("modality_preprocessors", "modality_trunks", "modality_heads",
                         "modality_postprocessors"):
                getattr(model, attr)[m] = torch.nn.Identity()
            if not keep:
                for f in files:
                    f.unlink()
            gc.collect()
    finally:
        if not keep:
            shutil.rmtree(out_dir, ignore_errors=True)

    print()
    print(f"full {args.arch.name}, random init (seed {args.seed}), batch {args.batch}, "
          f"opset {ex.OPSET}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    head = ("modality", "parameters", "ONNX size", "files", "max abs diff", "", "export s",
            f"ort s (b={args.batch})", "peak RSS")
    table = [head] + [
        (m, f"{n:,}", human(s), fs, f"{d:.2e}", "ok" if ok else "FAIL",
         f"{te:.0f}", f"{tr:.2f}", f"{rss:.1f} GiB")
        for m, n, s, fs, d, ok, te, tr, rss in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"total {time.time() - t0:.0f} s; "
          + (f"graphs kept in {out_dir}" if keep else "temporary graphs removed"))
    if failed:
        print(f"error: max |d| above {args.tol:g} for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
