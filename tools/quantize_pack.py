#!/usr/bin/env python3
"""Make a smaller variant of a sensebind pack, then report its speed-up and cosine
against the original, per modality, measured in the same run with the daemon's own
`sensebind bench` (same windows, threads and batch).

Variants (``--mode``):
  int8    ONNX Runtime dynamic quantisation: MatMul/Gemm weights int8 per channel,
          activations quantised at run time (VNNI / AVX-512 VNNI on x86, dot-product
          instructions on Arm). For CPUs.
  fp16    weights and compute in float16 (inputs and outputs stay float32, so the
          daemon feeds it unchanged). For GPUs: most CPUs have no fast fp16 GEMM.

    python tools/quantize_pack.py --pack ~/.cache/sensebind/packs/imagebind-mid-random --mode int8
    python tools/quantize_pack.py --pack DIR --mode fp16 --out DIR-fp16 --no-report

Needs the tool environment (onnx, onnxruntime==1.31.1; tools/requirements-export.txt)
and a built sensebind (target/release/sensebind, or --bin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINGLE_FILE_LIMIT = int(1.5 * 1024**3)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def quantize_int8(src: Path, dst: Path, external: bool) -> None:
    import tempfile

    import onnx
    # The exporter's intermediate shape annotations trip the quantiser's shape
    # inference ("inferred shape and existing shape differ"); it re-infers them anyway.
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    # Only weight GEMMs: MatMul/Gemm nodes with a constant operand. Quantising the
    # activation x activation products of attention (Q·Kᵀ, A·V) costs most of the
    # accuracy for little speed.
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weight_gemms = [n.name for n in model.graph.node
                    if n.op_type in ("MatMul", "Gemm") and any(i in consts for i in n.input)]
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        clean = Path(tmp) / src.name
        onnx.save_model(model, str(clean), save_as_external_data=external,
                        location=clean.name + ".data" if external else None)
        del model
        _quantize(clean, dst, external, weight_gemms)


def _quantize(src: Path, dst: Path, external: bool, nodes: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(
        str(src), str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=nodes,
        use_external_data_format=external,
    )


def convert_fp16(src: Path, dst: Path, external: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save_model(model, str(dst), save_as_external_data=external,
                    location=dst.name + ".data" if external else None)


def make_variant(pack: Path, out: Path, mode: str, mods: list[str]) -> None:
    manifest = tomllib.loads((pack / "pack.toml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "pack.toml").unlink(missing_ok=True)
    for m in mods:
        spec = manifest[m]
        src = pack / spec["file"]
        size = src.stat().st_size + sum(f.stat().st_size for f in pack.glob(f"{spec['file']}.*"))
        dst = out / spec["file"]
        log(f"[{m}] {mode}: {src} ({size / 1e6:.0f} MB) -> {dst}")
        external = size // (2 if mode == "fp16" else 4) > SINGLE_FILE_LIMIT
        if mode == "int8":
            quantize_int8(src, dst, external)
        else:
            convert_fp16(src, dst, external)
    text = (pack / "pack.toml").read_text()
    name = manifest["pack"]["name"]
    text = text.replace(f'name = "{name}"', f'name = "{name}-{mode}"', 1)
    weights = manifest["pack"].get("weights", "")
    text = text.replace(f'weights = "{weights}"', f'weights = "{weights}, {mode}"', 1)
    # Encoders not converted are copied as they are, so the pack stays complete.
    for m in [k for k in manifest if k != "pack" and isinstance(manifest[k], dict) and "file" in manifest[k]]:
        if m not in mods:
            for f in pack.glob(f"{manifest[m]['file']}*"):
                shutil.copy2(f, out / f.name)
    (out / "pack.toml").write_text(text)


def bench(binary: str, pack: Path, mods: list[str], seconds: float, threads: int, batch: int,
          vectors: Path) -> dict[str, dict]:
    cmd = [binary, "bench", "--pack", str(pack), "--json", "--seconds", str(seconds),
           "--threads", str(threads), "--batch", str(batch), "--modalities", ",".join(mods),
           "--vectors", str(vectors)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)}:\n{r.stderr[-2000:]}")
    return {j["modality"]: j for j in map(json.loads, r.stdout.splitlines())}


def cos(a, b):
    ab = sum(x * y for x, y in zip(a, b))
    aa = sum(x * x for x in a)
    bb = sum(y * y for y in b)
    return ab / math.sqrt(aa * bb) if aa and bb else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--mode", choices=["int8", "fp16"], required=True)
    p.add_argument("--out", type=Path, help="default: <pack>-<mode> next to it")
    p.add_argument("--modalities", default="vision,text,audio,depth,thermal,imu")
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "sensebind"))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--no-report", action="store_true", help="only write the pack")
    args = p.parse_args(argv)
    pack = args.pack.expanduser()
    if not (pack / "pack.toml").is_file():
        raise SystemExit(f"error: --pack {pack}: no pack.toml there")
    manifest = tomllib.loads((pack / "pack.toml").read_text())
    mods = [m.strip() for m in args.modalities.split(",") if m.strip() in manifest]
    out = (args.out or pack.with_name(f"{pack.name}-{args.mode}")).expanduser()
    make_variant(pack, out, args.mode, mods)
    log(f"wrote {out}")
    if args.no_report:
        return 0
    if not os.environ.get("ORT_DYLIB_PATH"):
        import onnxruntime
        libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
        os.environ["ORT_DYLIB_PATH"] = str(libs[0])
    base_v, var_v = out / "vectors-base.jsonl", out / "vectors-variant.jsonl"
    base = bench(args.bin, pack, mods, args.seconds, args.threads, args.batch, base_v)
    var = bench(args.bin, out, mods, args.seconds, args.threads, args.batch, var_v)
    vb = {j["modality"]: j["embedding"] for j in map(json.loads, base_v.read_text().splitlines())}
    vv = {j["modality"]: j["embedding"] for j in map(json.loads, var_v.read_text().splitlines())}
    base_v.unlink()
    var_v.unlink()
    sizes = lambda d, m: sum(f.stat().st_size for f in d.glob(f"{manifest[m]['file']}*"))
    print(f"{pack.name} vs {out.name} ({args.mode}), {args.threads} threads, batch {args.batch}, "
          f"provider {next(iter(var.values()))['provider'] if var else '?'}")
    print(f"{'modality':<8} {'fp32 w/s':>9} {args.mode + ' w/s':>9} {'speed-up':>8} {'cosine':>9} {'MB':>12}")
    rows = []
    for m in mods:
        s = var[m]["windows_per_s"] / base[m]["windows_per_s"]
        c = cos(vb[m], vv[m])
        rows.append({"modality": m, "base_windows_per_s": base[m]["windows_per_s"],
                     "variant_windows_per_s": var[m]["windows_per_s"], "speedup": s, "cosine": c})
        print(f"{m:<8} {base[m]['windows_per_s']:>9.2f} {var[m]['windows_per_s']:>9.2f} {s:>7.2f}x "
              f"{c:>9.5f} {sizes(pack, m) / 1e6:>5.0f}->{sizes(out, m) / 1e6:<5.0f}")
    (out / "report.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
