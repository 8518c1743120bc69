#!/usr/bin/env python3
"""Make a smaller variant of a sensebind pack, then report its speed-up and cosine
against the original, per modality, measured in the same run with the daemon's own
`sensebind bench` (same windows, threads and batch).

Variants (``--mode``):
  int8         ONNX Runtime dynamic quantisation: MatMul/Gemm weights int8 per channel,
               activations quantised at run time (VNNI / AVX-512 VNNI on x86,
               dot-product instructions on Arm). For CPUs.
  int8-static  ONNX Runtime static quantisation, QDQ format: weights int8 per channel,
               activations uint8 (the x86 u8s8 / VNNI path; ``--activations s8`` gives
               the same numbers, ONNX Runtime shifts s8 to u8 on x86) with ranges calibrated
               on windows of the benchmark's kind (see "Calibration"). The first layer
               (patch / input projection) and the last (head) stay fp32, and so do the
               activation x activation MatMuls of attention unless
               ``--quantize-attention``. Every ``--calibrate`` method is tried; per
               modality the one with the best cosine on separate selection windows is
               kept. For CPUs.
  fp16         weights and compute in float16 (inputs and outputs stay float32, so the
               daemon feeds it unchanged). For GPUs: most CPUs have no fast fp16 GEMM.
  bf16         weights and compute in bfloat16 (inputs and outputs float32). The tool
               first checks that ONNX Runtime's CPU provider can run it, and when it
               cannot says why and reports no figures (exit status 3). With ONNX Runtime
               1.31.1 it cannot: no bfloat16 MatMul or Add kernels, and Conv at the packs'
               opset 18 does not admit bfloat16.

Calibration (int8-static) and held-out cosine, per modality:
  * vision, audio: the daemon's own preprocessed tensors of its benchmark window
    (``sensebind bench --write-inputs``), plus
  * every modality: ``--calib-windows`` more windows made like the benchmark's
    (``src/bench.rs``: textured 1920x1080 frames, a chirp with noise at 48 kHz, a
    sloped 848x480 depth map with holes, a 160x120 thermal gradient, 400 IMU samples)
    with seeded random variations (gradient directions, stripe sizes, noise, an object;
    chirp range, level, a second tone; depth range, holes, a box; a warm blob; IMU
    frequencies, amplitudes, gravity direction), preprocessed by
    tools/minibind/prep.py (the daemon's preprocessing in Python; it reproduces the
    daemon's vision tensor within 1 LSB and its audio tensor within 4e-4). Text: a
    fixed list of prompts.
  The calibration method is chosen on other seeds (selection windows), and the
  "held-out" cosine of the report is on seeds used for neither.

    python tools/quantize_pack.py --pack ~/.cache/sensebind/packs/imagebind-mid-random --mode int8
    python tools/quantize_pack.py --pack packs/minibind --mode int8-static --threads 2
    python tools/quantize_pack.py --pack DIR --mode fp16 --out DIR-fp16 --no-report

Needs the tool environment (onnx, onnxruntime==1.31.1, and for int8-static and the
held-out cosine torch, torchaudio, Pillow and imagebind-unofficial for the text
tokenizer; tools/requirements-export.txt) and a built sensebind
(target/release/sensebind, or --bin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINGLE_FILE_LIMIT = int(1.5 * 1024**3)
MODES = ["int8", "int8-static", "fp16", "bf16"]
CALIBRATE = ["minmax", "percentile", "entropy"]
# Seeds of the generated windows: calibration 1.., method selection 500.., held-out 1000..
SELECT_SEED, HELDOUT_SEED = 500, 1000
PROMPTS = [
    "a person walking a dog past the robot on a rainy street",  # the benchmark's
    "a red car parked in front of a warehouse", "two people talking in a kitchen",
    "a forklift moving pallets", "the sound of rain on a metal roof", "a cat on a sofa",
    "an empty corridor with fluorescent lights", "a child riding a bicycle in a park",
    "a door slamming shut", "a robot arm picking up a box", "the number seven",
    "a crowded train station at rush hour", "a dog barking at night", "snow on a mountain road",
    "a hand waving at the camera", "a person falling down the stairs", "traffic at a crossing",
    "a glass of water on a table", "someone typing on a keyboard", "the beach at sunset",
    "a drone flying over a field", "smoke rising from a chimney", "a man running with a backpack",
    "an alarm ringing in an office", "a stack of books next to a lamp",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- graphs

def load_clean(src: Path):
    import onnx
    # The exporter's intermediate shape annotations trip the quantiser's shape
    # inference ("inferred shape and existing shape differ"); it re-infers them anyway.
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    return model


def save(model, dst: Path, external: bool) -> None:
    import onnx
    onnx.save_model(model, str(dst), save_as_external_data=external,
                    location=dst.name + ".data" if external else None)


def weight_layers(model) -> tuple[list[str], list[str]]:
    """(Conv/MatMul/Gemm nodes with a constant operand in graph order, MatMuls of two
    activations: attention's Q·Kᵀ and A·V)."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights, act_act = [], []
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Conv"):
            (weights if any(i in consts for i in n.input) else act_act).append(n.name)
    return weights, act_act


def quantize_int8(src: Path, dst: Path, external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = load_clean(src)
    # Only weight GEMMs. Quantising the activation x activation products of attention
    # (Q·Kᵀ, A·V) costs most of the accuracy for little speed.
    weights, _ = weight_layers(model)
    weight_gemms = [n.name for n in model.graph.node if n.name in set(weights) and n.op_type != "Conv"]
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        clean = Path(tmp) / src.name
        save(model, clean, external)
        del model
        quantize_dynamic(
            str(clean), str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_quantize=weight_gemms,
            use_external_data_format=external,
        )


def _reader(name: str, windows: list):
    """An onnxruntime.quantization.CalibrationDataReader over a list of windows."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(windows):
                return None
            self.i += 1
            return {name: windows[self.i - 1][None]}

        def rewind(self):
            self.i = 0

    return Reader()



def quantize_static_one(clean: Path, dst: Path, external: bool, input_name: str, calib: list,
                        method: str, activations: str, exclude: list[str], reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    qmod = sys.modules[quantize_static.__module__]
    create = qmod.create_calibrator

    def create_entropy(*a, **kw):
        # quantize_static gives the entropy calibrator as many histogram bins as
        # quantised bins (128), which leaves it no threshold but the min/max: widen it.
        kw["extra_options"] = {"num_bins": 2048, "num_quantized_bins": 128, **(kw.get("extra_options") or {})}
        return create(*a, **kw)

    if method == "entropy":
        qmod.create_calibrator = create_entropy
    try:
        quantize_static(
            str(clean), str(dst), _reader(input_name, calib),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            use_external_data_format=external,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            extra_options={"CalibPercentile": 99.999} if method == "percentile" else {},
        )
    finally:
        qmod.create_calibrator = create


def quantize_static_variant(src: Path, dst: Path, external: bool, spec: dict, data: dict,
                            args) -> dict:
    """Quantise with every calibration method, keep the best by cosine on the selection
    windows. Returns what was chosen, for the report."""
    import onnx
    model = load_clean(src)
    weights, act_act = weight_layers(model)
    # Text's first layer is its token embedding (a Gather, never quantised).
    text = model.graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
    exclude = ([] if text else weights[:1]) + weights[-1:] if args.keep_ends else []
    if not args.quantize_attention:
        exclude += act_act
    log(f"  {len(weights)} weight layers, {len(act_act)} activation x activation MatMuls; "
        f"fp32: {', '.join(exclude[:2 - text]) if args.keep_ends else 'none'}"
        f"{' + attention MatMuls' if not args.quantize_attention and act_act else ''}")
    scores = {}
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        clean = Path(tmp) / src.name
        save(model, clean, external)
        del model
        ref = run_model(src, spec["input"], data["select"], args.threads)
        for method in args.calibrate:
            (Path(tmp) / method).mkdir()
            cand = Path(tmp) / method / src.name
            quantize_static_one(clean, cand, external, spec["input"], data["calib"], method,
                                args.activations, exclude, args.reduce_range)
            got = run_model(cand, spec["input"], data["select"], args.threads)
            c = [cos(a, b) for a, b in zip(ref, got)]
            scores[method] = sum(c) / len(c)
            log(f"  calibration {method}: selection cosine mean {scores[method]:.5f} min {min(c):.5f}")
        best = max(scores, key=lambda k: scores[k])
        for f in (Path(tmp) / best).glob(f"{src.name}*"):
            shutil.move(str(f), str(dst.parent / f.name))
    return {"calibration": best, "selection_cosine": scores}


def convert_fp16(src: Path, dst: Path, external: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True)
    save(model, dst, external)


def convert_bf16(src: Path, dst: Path, external: bool) -> None:
    """ONNX Runtime's fp16 converter (which op to keep in fp32, where to cast), then
    every float16 tensor and cast retyped to bfloat16, values rounded from the fp32
    originals (not from their fp16 clamps)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16
    orig = onnx.load(str(src))
    fp32 = {t.name: t for t in orig.graph.initializer}
    fp32 |= {n.output[0]: a.t for n in orig.graph.node if n.op_type == "Constant"
             for a in n.attribute if a.name == "value"}
    model = convert_float_to_float16(orig, keep_io_types=True)

    def bf16(t, name):
        x = numpy_helper.to_array(fp32[name] if name in fp32 else t).astype(np.float32)
        u = x.view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        out = TensorProto(name=t.name, data_type=TensorProto.BFLOAT16, dims=list(x.shape))
        out.raw_data = u.tobytes()
        return out

    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.FLOAT16:
            model.graph.initializer[i].CopyFrom(bf16(t, t.name))
    for n in model.graph.node:
        for a in n.attribute:
            if a.name == "to" and n.op_type == "Cast" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.BFLOAT16
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                a.t.CopyFrom(bf16(a.t, n.output[0]))
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.BFLOAT16
    save(model, dst, external)


def check_runs(path: Path, input_name: str, window) -> str | None:
    """None when ONNX Runtime's CPU provider loads and runs the model, else why not."""
    try:
        run_model(path, input_name, [window], 1)
    except Exception as e:  # noqa: BLE001 (any failure means: cannot run)
        return str(e).strip().splitlines()[0][:300]
    return None


# ---------------------------------------------------------------- windows

def _prep():
    sys.path.insert(0, str(ROOT / "tools" / "minibind"))
    import torchvision
    # imagebind (the tokenizer) imports pytorchvideo, which wants a module torchvision renamed.
    sys.modules.setdefault("torchvision.transforms.functional_tensor",
                           torchvision.transforms._functional_tensor)
    import prep
    return prep


def _vision_frame(rng, shift: int, params: dict):
    import numpy as np
    w, h = 1920, 1080
    x = np.arange(w)[None, :] + shift
    y = np.arange(h)[:, None]
    p = params
    stripe = np.where((x // p["sx"] + y // p["sy"]) % 2 == 0, p["stripe"], 0)
    gx, gy = (x * 200 // w), (y * 200 // h)
    if p["flip"]:
        gx = 200 - gx
    chans = [gx, gy, (gx + gy) // 2]
    chans = [chans[i] for i in p["perm"]]
    img = np.stack([np.broadcast_to(c * g, (h, w)) for c, g in zip(chans, p["gain"])], -1)
    img = img + stripe[..., None] + rng.integers(0, p["noise"], (h, w, 3))
    y0, x0, rh, rw = p["obj"]
    img[y0:y0 + rh, x0 + shift:x0 + shift + rw] = p["colour"]
    return np.clip(img, 0, 255).astype(np.uint8)


def window(prep, m: str, seed: int):
    """One preprocessed window of modality `m` (no batch axis), benchmark-like, varied by seed."""
    import numpy as np
    rng = np.random.default_rng(seed)
    if m == "vision":
        p = {"sx": int(rng.integers(6, 40)), "sy": int(rng.integers(6, 40)),
             "stripe": int(rng.integers(0, 96)), "flip": bool(rng.integers(2)),
             "perm": rng.permutation(3), "gain": rng.uniform(0.4, 1.25, 3),
             "noise": int(rng.integers(4, 64)),
             "obj": (int(rng.integers(0, 700)), int(rng.integers(0, 1400)),
                     int(rng.integers(50, 380)), int(rng.integers(50, 480))),
             "colour": rng.integers(0, 256, 3)}
        frames = [_vision_frame(rng, s, p) for s in (0, int(rng.integers(0, 40)))]
        return np.stack([prep.image(f)[:, 0] for f in frames], 1)
    if m == "audio":
        import torch
        import torchaudio
        t = np.arange(96_000) / 48_000.0
        f0, slope = rng.uniform(100, 800), rng.uniform(0, 2000)
        wave = rng.uniform(0.05, 0.6) * np.sin(2 * np.pi * (f0 + slope * t) * t)
        wave += rng.uniform(0, 0.2) * np.sin(2 * np.pi * rng.uniform(50, 4000) * t)
        wave += rng.uniform(0.005, 0.1) * (rng.random(t.size) - 0.5)
        w16 = torchaudio.functional.resample(torch.from_numpy(wave.astype(np.float32)), 48000, 16000)
        return prep.audio(w16.numpy())
    if m == "depth":
        w, h = 848, 480
        x, y = np.arange(w)[None, :], np.arange(h)[:, None]
        mm = rng.uniform(300, 3000) + x * rng.uniform(0, 8) + y * rng.uniform(0, 6)
        y0, x0 = rng.integers(0, 400), rng.integers(0, 700)
        mm[y0:y0 + rng.integers(40, 200), x0:x0 + rng.integers(40, 300)] = rng.uniform(250, 1500)
        mm = np.where(rng.random((h, w)) < rng.uniform(0, 0.06), 0, mm)
        return prep.depth(np.clip(mm, 0, 65535).astype(np.uint16))
    if m == "thermal":
        w, h = 160, 120
        x, y = np.arange(w)[None, :], np.arange(h)[:, None]
        raw = rng.uniform(6000, 8000) + x * rng.uniform(0, 30) + y * rng.uniform(0, 20)
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 40)
        raw += rng.uniform(0, 3000) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        raw += rng.integers(0, 64, (h, w))
        return prep.thermal(raw.astype(np.uint16))
    if m == "imu":
        t = np.arange(400)[:, None] / 200.0
        f = rng.uniform(0.5, 12, 6)
        a = np.concatenate([rng.uniform(0, 2.0, 3), rng.uniform(0, 0.5, 3)])
        g = rng.normal(size=3)
        g = 9.81 * g / np.linalg.norm(g)
        s = a * np.sin(2 * np.pi * f * t / 6 + rng.uniform(0, 6.3, 6)) + np.concatenate([g, rng.normal(0, 0.02, 3)])
        return prep.imu(s.astype(np.float32))
    if m == "text":
        return prep.tokenize([PROMPTS[seed % len(PROMPTS)]]).reshape(-1, 77)[0]
    raise SystemExit(f"error: no window generator for {m}")


def windows(args, pack: Path, mods: list[str], need_calib: bool) -> dict[str, dict]:
    """Per modality: calibration, selection and held-out windows."""
    prep = _prep()
    daemon = {}
    if need_calib and ({"vision", "audio"} & set(mods)):
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([args.bin, "bench", "--pack", str(pack), "--write-inputs", d],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"error: sensebind bench --write-inputs:\n{r.stderr[-2000:]}")
            import numpy as np
            info = json.loads((Path(d) / "inputs.json").read_text())
            for m in ("vision", "audio"):
                daemon[m] = np.fromfile(Path(d) / info[m]["tensor"], dtype="<f4").reshape(info[m]["tensor_shape"])
    out = {}
    for m in mods:
        text = m == "text"
        n = args.calib_windows
        calib = [window(prep, m, s) for s in range(1, n + 1)] if need_calib else []
        if text and need_calib:  # every prompt but the held-out ones
            calib = [window(prep, m, s) for s in range(len(PROMPTS) - 2 * args.held_out)]
        if m in daemon:
            calib = [daemon[m]] + calib
        k = args.held_out
        sel = [window(prep, m, (len(PROMPTS) - 2 * k + i) if text else SELECT_SEED + i) for i in range(k)]
        held = [window(prep, m, (len(PROMPTS) - k + i) if text else HELDOUT_SEED + i) for i in range(k)]
        out[m] = {"calib": calib, "select": sel, "heldout": held}
    return out


# ---------------------------------------------------------------- running

def run_model(path: Path, input_name: str, inputs: list, threads: int) -> list:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [s.run(None, {input_name: x[None]})[0][0].ravel().tolist() for x in inputs]


def make_variant(pack: Path, out: Path, mode: str, mods: list[str], args, data) -> dict[str, dict]:
    manifest = tomllib.loads((pack / "pack.toml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "pack.toml").unlink(missing_ok=True)
    notes = {}
    for m in mods:
        spec = manifest[m]
        src = pack / spec["file"]
        size = src.stat().st_size + sum(f.stat().st_size for f in pack.glob(f"{spec['file']}.*"))
        dst = out / spec["file"]
        log(f"[{m}] {mode}: {src} ({size / 1e6:.0f} MB) -> {dst}")
        external = size // (2 if mode in ("fp16", "bf16") else 4) > SINGLE_FILE_LIMIT
        if mode == "int8":
            quantize_int8(src, dst, external)
        elif mode == "int8-static":
            notes[m] = quantize_static_variant(src, dst, external, spec, data[m], args)
        elif mode == "fp16":
            convert_fp16(src, dst, external)
        else:
            convert_bf16(src, dst, external)
            why = check_runs(dst, spec["input"], data[m]["heldout"][0]) if data else None
            if why:
                notes[m] = {"cannot_run": why}
                log(f"  ONNX Runtime's CPU provider cannot run the bf16 {m} encoder: {why}")
    text = (pack / "pack.toml").read_text()
    name = manifest["pack"]["name"]
    text = text.replace(f'name = "{name}"', f'name = "{name}-{mode}"', 1)
    weights = manifest["pack"].get("weights", "")
    text = text.replace(f'weights = "{weights}"', f'weights = "{weights}, {mode}"', 1)
    # Encoders not converted are copied as they are, so the pack stays complete.
    for k in [k for k in manifest if k != "pack" and isinstance(manifest[k], dict) and "file" in manifest[k]]:
        if k not in mods:
            for f in pack.glob(f"{manifest[k]['file']}*"):
                shutil.copy2(f, out / f.name)
    (out / "pack.toml").write_text(text)
    return notes


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
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--out", type=Path, help="default: <pack>-<mode> next to it")
    p.add_argument("--modalities", default="vision,text,audio,depth,thermal,imu")
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "sensebind"))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--no-report", action="store_true", help="only write the pack")
    q = p.add_argument_group("int8-static")
    q.add_argument("--calibrate", default=",".join(CALIBRATE),
                   help="calibration methods to try, the best by cosine is kept (default: %(default)s)")
    q.add_argument("--calib-windows", type=int, default=8, help="generated calibration windows per modality")
    q.add_argument("--activations", choices=["u8", "s8"], default="u8",
                   help="activation type (weights are always s8): u8 is the x86 u8s8 (VNNI) path")
    q.add_argument("--reduce-range", action="store_true", help="7-bit weights (AVX2 without VNNI saturation)")
    q.add_argument("--quantize-attention", action="store_true",
                   help="also quantise attention's activation x activation MatMuls")
    q.add_argument("--quantize-ends", dest="keep_ends", action="store_false",
                   help="also quantise the first (input projection) and last (head) layers")
    p.add_argument("--held-out", type=int, default=3,
                   help="windows per modality for the held-out cosine (and for int8-static's "
                        "method selection); 0: none")
    args = p.parse_args(argv)
    args.calibrate = [c.strip() for c in args.calibrate.split(",") if c.strip()]
    if bad := [c for c in args.calibrate if c not in CALIBRATE]:
        raise SystemExit(f"error: --calibrate {','.join(bad)}: one of {','.join(CALIBRATE)}")
    if args.mode == "int8-static" and args.held_out < 1:
        raise SystemExit("error: int8-static needs --held-out >= 1 (it selects the calibration on them)")
    pack = args.pack.expanduser()
    if not (pack / "pack.toml").is_file():
        raise SystemExit(f"error: --pack {pack}: no pack.toml there")
    manifest = tomllib.loads((pack / "pack.toml").read_text())
    mods = [m.strip() for m in args.modalities.split(",") if m.strip() in manifest]
    out = (args.out or pack.with_name(f"{pack.name}-{args.mode}")).expanduser()
    if not os.environ.get("ORT_DYLIB_PATH"):
        import onnxruntime
        libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
        os.environ["ORT_DYLIB_PATH"] = str(libs[0])
    need_data = args.mode == "int8-static" or (args.held_out > 0 and not args.no_report) or args.mode == "bf16"
    data = windows(args, pack, mods, args.mode == "int8-static") if need_data else {}
    notes = make_variant(pack, out, args.mode, mods, args, data)
    log(f"wrote {out}")
    if broken := {m: n["cannot_run"] for m, n in notes.items() if "cannot_run" in n}:
        print(f"{out.name}: ONNX Runtime's CPU provider cannot run {args.mode} here, so there is "
              f"no speed-up or cosine to report:")
        for m, why in broken.items():
            print(f"  {m}: {why}")
        (out / "report.json").write_text(json.dumps({"cannot_run": broken}, indent=1))
        return 3
    if args.no_report:
        return 0
    base_v, var_v = out / "vectors-base.jsonl", out / "vectors-variant.jsonl"
    base = bench(args.bin, pack, mods, args.seconds, args.threads, args.batch, base_v)
    var = bench(args.bin, out, mods, args.seconds, args.threads, args.batch, var_v)
    vb = {j["modality"]: j["embedding"] for j in map(json.loads, base_v.read_text().splitlines())}
    vv = {j["modality"]: j["embedding"] for j in map(json.loads, var_v.read_text().splitlines())}
    base_v.unlink()
    var_v.unlink()
    held = {}
    for m in mods if data else []:
        f = manifest[m]
        a = run_model(pack / f["file"], f["input"], data[m]["heldout"], args.threads)
        b = run_model(out / f["file"], f["input"], data[m]["heldout"], args.threads)
        held[m] = min(cos(x, y) for x, y in zip(a, b))
    sizes = lambda d, m: sum(f.stat().st_size for f in d.glob(f"{manifest[m]['file']}*"))
    print(f"{pack.name} vs {out.name} ({args.mode}), {args.threads} threads, batch {args.batch}, "
          f"provider {next(iter(var.values()))['provider'] if var else '?'}")
    print(f"{'modality':<8} {'fp32 w/s':>9} {'variant w/s':>11} {'speed-up':>8} {'cosine':>9} "
          f"{'held-out':>9} {'MB':>12}  calibration")
    rows = []
    for m in mods:
        s = var[m]["windows_per_s"] / base[m]["windows_per_s"]
        c = cos(vb[m], vv[m])
        h = held.get(m, float("nan"))
        cal = notes.get(m, {}).get("calibration", "")
        rows.append({"modality": m, "base_windows_per_s": base[m]["windows_per_s"],
                     "variant_windows_per_s": var[m]["windows_per_s"], "speedup": s, "cosine": c,
                     "heldout_min_cosine": h, **notes.get(m, {})})
        print(f"{m:<8} {base[m]['windows_per_s']:>9.2f} {var[m]['windows_per_s']:>11.2f} {s:>7.2f}x "
              f"{c:>9.5f} {h:>9.5f} {sizes(pack, m) / 1e6:>5.0f}->{sizes(out, m) / 1e6:<5.0f}  {cal}")
    print("cosine: the benchmark window through the daemon (for int8-static vision and audio, "
          "a calibration window); held-out: the lowest over windows used for neither "
          "calibration nor its selection")
    (out / "report.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
