#!/usr/bin/env python3
"""Export Meta's ImageBind encoders to ONNX as a sensebind model pack.

The model is the official architecture, ``imagebind.models.imagebind_model.
ImageBindModel`` from the PyPI package ``imagebind-unofficial==0.1.1`` (byte-identical
to upstream facebookresearch/ImageBind).  Each of the six modalities is exported as its
own graph that runs exactly the official per-modality forward:

    modality_preprocessors[m](**{m: x}) -> modality_trunks[m](**out["trunk"])
        -> modality_heads[m](y, **out["head"]) -> modality_postprocessors[m]

so the output ``emb`` is the L2-normalised embedding multiplied by that modality's
logit scale (recorded in ``pack.toml`` so consumers can undo or reuse it).

Pack layout written to --out:

    pack.toml              manifest (see write_manifest)
    <m>.onnx               one per modality; self-contained when it is < 1.5 GB,
    <m>.onnx.data          ... otherwise its weights live in this external-data file

Import note (no pytorchvideo shim needed): ``imagebind/__init__.py`` runs
``from imagebind import data``, and ``data.py`` imports pytorchvideo, PIL and
pkg_resources -- all only needed for the official *preprocessing* loaders, none for the
model.  Rather than installing pytorchvideo (which, on torchvision >= 0.17, would also
need ``sys.modules['torchvision.transforms.functional_tensor'] =
torchvision.transforms._functional_tensor`` before importing it), import_imagebind()
registers a bare ``imagebind`` package object pointing at the installed directory, so
the package ``__init__`` is skipped and only ``imagebind.models`` (needs einops, numpy,
ftfy, regex, iopath, timm) is imported.

Requirements: tools/requirements-export.txt.

Example:
    python tools/export_imagebind.py --checkpoint imagebind_huge.pth --out packs/imagebind-huge
    python tools/export_imagebind.py --random --seed 0 --arch tools/arch/tiny.json \\
        --out packs/tiny-random --name tiny-random
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
DEFAULT_ARCH = HERE / "arch" / "huge.json"

# torch 2.11's exporter trips over its own pytree deprecation; harmless noise.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)

PACK_FORMAT = 1
OPSET = 18
OUTPUT_NAME = "emb"  # never "embedding": clashes with a node name in the text graph
EXPORT_BATCH = 2  # example batch for export; batch 1 would freeze the batch axis
VERIFY_BATCH = 3  # a different batch size, so verification also exercises the dynamic axis
TOLERANCE = 1e-4  # max |onnxruntime - pytorch| accepted
SINGLE_FILE_LIMIT = int(1.5 * 1024**3)  # below this an encoder is saved as one .onnx file

# Official per-item input contract (batch axis excluded) of each encoder.
MODALITIES: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
    "vision": ((3, 2, 224, 224), torch.float32),
    "text": ((77,), torch.int64),
    "audio": ((1, 128, 204), torch.float32),
    "depth": ((1, 224, 224), torch.float32),
    "thermal": ((1, 224, 224), torch.float32),
    "imu": ((6, 2000), torch.float32),
}

CHECKPOINT_HINT = (
    "  the official imagebind_huge weights are at "
    "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
)

# CLIP tokenizer constants used to build valid random text inputs.
SOT_TOKEN = 49406
EOT_TOKEN = 49407


# --------------------------------------------------------------------------- imports


def import_imagebind():
    """Import ``imagebind.models.imagebind_model`` without running imagebind/__init__.py.

    See the module docstring: the package __init__ pulls in the data loaders
    (pytorchvideo, PIL, ...), which the model itself does not need.
    """
    if "imagebind" not in sys.modules:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                "error: the 'imagebind' package is not installed; "
                "pip install -r tools/requirements-export.txt "
                "(imagebind-unofficial is installed with --no-deps)"
            )
        pkg = types.ModuleType("imagebind")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        pkg.__spec__ = spec
        sys.modules["imagebind"] = pkg
    from imagebind.models import imagebind_model
    from imagebind.models.helpers import LearnableLogitScaling

    return imagebind_model, LearnableLogitScaling


# ----------------------------------------------------------------------------- model


def load_arch(path: Path) -> dict:
    """Read the ImageBindModel constructor kwargs from a JSON object."""
    try:
        arch = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: arch file not found: {path}")
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: arch file {path} is not valid JSON: {e}")
    if not isinstance(arch, dict):
        raise SystemExit(f"error: arch file {path} must hold a JSON object of kwargs")
    return arch


def build_model(imagebind_model, arch: dict) -> nn.Module:
    """Construct the official ImageBindModel from JSON kwargs (lists become tuples)."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    try:
        return imagebind_model.ImageBindModel(**kwargs)
    except TypeError as e:
        raise SystemExit(f"error: bad --arch kwargs for ImageBindModel: {e}")


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Strictly load a state dict (e.g. the official imagebind_huge.pth) into model."""
    if not path.is_file():
        raise SystemExit(f"error: checkpoint not found: {path}\n{CHECKPOINT_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - e.g. a pickle with non-tensor objects
        print(
            f"warning: weights_only load failed ({type(e).__name__}: {e}); "
            "retrying with weights_only=False -- only do this for a trusted file",
            file=sys.stderr,
        )
        state = torch.load(path, map_location="cpu", weights_only=False)
    # Accept the usual training-checkpoint wrappers around the state dict.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SystemExit(f"error: {path} does not hold a state dict")

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs arch {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [
            f"error: checkpoint {path} does not match the architecture "
            "(--arch; the default tools/arch/huge.json is imagebind_huge)"
        ]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                lines.append(f"  {len(items)} {title}, e.g.:")
                lines.extend(f"    {s}" for s in items[:8])
        raise SystemExit("\n".join(lines))
    model.load_state_dict(state, strict=True)


class ModalityEncoder(nn.Module):
    """The official ImageBindModel.forward restricted to one modality, one tensor in/out.

    (The official forward treats any >= 5-D input as a list of clips, which misreads a
    single [B,3,2,224,224] video clip; this wrapper avoids that and registers only this
    modality's submodules, so only its weights are exported.)
    """

    def __init__(self, model: nn.Module, modality: str):
        super().__init__()
        self.modality = modality
        self.preprocessor = model.modality_preprocessors[modality]
        self.trunk = model.modality_trunks[modality]
        self.head = model.modality_heads[modality]
        self.postprocessor = model.modality_postprocessors[modality]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.preprocessor(**{self.modality: x})
        y = self.trunk(**out["trunk"])
        y = self.head(y, **out["head"])
        return self.postprocessor(y)


def logit_scale_of(postprocessor: nn.Module, scaling_cls) -> float:
    """The factor the postprocessor multiplies the unit embedding by.

    Computed exactly like LearnableLogitScaling.forward (float32
    ``clip(exp(log_logit_scale), max=max_logit_scale)``); 1.0 when there is none
    (vision).  Text's scale is learned and comes from the checkpoint.
    """
    scale = 1.0
    for module in postprocessor.modules():
        if isinstance(module, scaling_cls):
            with torch.no_grad():
                s = torch.clip(module.log_logit_scale.exp(), max=module.max_logit_scale)
            scale *= float(s)
    return scale


# ---------------------------------------------------------------------------- inputs


def random_input(modality: str, batch: int, gen: torch.Generator) -> torch.Tensor:
    """A random batch obeying the modality's input contract."""
    shape, dtype = MODALITIES[modality]
    if dtype != torch.int64:
        return torch.randn((batch, *shape), generator=gen, dtype=dtype)
    # Text: SOT, random ordinary tokens, EOT at a random position, zero padding.
    # The head pools at argmax(ids), i.e. at the EOT (the largest id).
    (ctx,) = shape
    ids = torch.zeros((batch, ctx), dtype=torch.int64)
    for b in range(batch):
        eot = int(torch.randint(1, ctx, (1,), generator=gen))
        ids[b, 0] = SOT_TOKEN
        ids[b, 1:eot] = torch.randint(1, SOT_TOKEN, (eot - 1,), generator=gen)
        ids[b, eot] = EOT_TOKEN
    return ids


# ---------------------------------------------------------------------------- export


def export_one(enc: ModalityEncoder, modality: str, out_dir: Path, gen) -> Path:
    """Export one encoder to out_dir/<modality>.onnx (dynamic batch, opset 18)."""
    path = out_dir / f"{modality}.onnx"
    data_path = out_dir / f"{modality}.onnx.data"
    for p in (path, data_path):  # never mix with a previous export's files
        p.unlink(missing_ok=True)

    example = random_input(modality, EXPORT_BATCH, gen)
    torch.onnx.export(
        enc,
        (example,),
        str(path),
        dynamo=True,
        opset_version=OPSET,
        input_names=[modality],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=True,
        verbose=False,  # no per-stage progress lines
    )

    # Re-save the graph: drop the exporter's per-node Python stack traces (they embed
    # this machine's absolute paths and make the bytes depend on the checkout), and
    # fold small encoders' weights back into one self-contained file.
    model = onnx.load(str(path), load_external_data=False)
    strip_stack_traces(model.graph)
    data_files = sorted(out_dir.glob(f"{modality}.onnx.*"))
    total = path.stat().st_size + sum(f.stat().st_size for f in data_files)
    if total < SINGLE_FILE_LIMIT:
        onnx.load_external_data_for_model(model, str(out_dir))
        for f in data_files:
            f.unlink()
    # Tensors still marked external (large encoders) keep pointing at <m>.onnx.data.
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path


def strip_stack_traces(graph) -> None:
    """Remove 'pkg.torch.onnx.stack_trace' metadata from every node (and subgraph)."""
    for node in graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
        for attr in node.attribute:
            if attr.HasField("g"):
                strip_stack_traces(attr.g)
            for sub in attr.graphs:
                strip_stack_traces(sub)


def verify_one(enc: ModalityEncoder, modality: str, path: Path, gen) -> tuple[float, int]:
    """Compare onnxruntime with PyTorch on a random batch; return (max |Δ|, out dim)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    if inp.name != modality or out.name != OUTPUT_NAME:
        raise SystemExit(
            f"error: {path.name}: graph io is {inp.name!r} -> {out.name!r}, "
            f"expected {modality!r} -> {OUTPUT_NAME!r}"
        )
    if isinstance(inp.shape[0], int):
        raise SystemExit(f"error: {path.name}: batch axis was frozen to {inp.shape[0]}")

    x = random_input(modality, VERIFY_BATCH, gen)
    with torch.no_grad():
        ref = enc(x).numpy()
    got = sess.run([OUTPUT_NAME], {modality: x.numpy()})[0]
    if got.shape != ref.shape:
        raise SystemExit(f"error: {path.name}: output {got.shape} vs torch {ref.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - ref))), int(ref.shape[-1])


# -------------------------------------------------------------------------- manifest


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(v) -> str:
    """Serialise a JSON-like value as TOML (floats round-trip exactly via repr)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest repr that round-trips; always has '.' or 'e'
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def write_manifest(out_dir: Path, pack: dict, encoders: dict[str, dict]) -> Path:
    """Write pack.toml: a [pack] table, then one table per exported modality."""
    lines = ["# sensebind model pack — written by tools/export_imagebind.py", "[pack]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in pack.items()]
    for modality, table in encoders.items():
        lines += ["", f"[{modality}]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    path = out_dir / "pack.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Export the six ImageBind encoders (vision, text, audio, depth, thermal, "
            "imu) to ONNX (opset 18, dynamo exporter, dynamic batch axis) and write a "
            "sensebind model pack: <m>.onnx per modality plus pack.toml. Each graph "
            "takes one input named after its modality and returns 'emb', the "
            "L2-normalised embedding times the modality's logit scale (recorded in "
            "pack.toml). Every export is checked against PyTorch with onnxruntime; "
            f"the tool exits non-zero if max |diff| > {TOLERANCE:g}."
        ),
        epilog=(
            "Inputs (batch axis first, dynamic): vision float32 [B,3,2,224,224], "
            "text int64 [B,77], audio float32 [B,1,128,204], depth float32 "
            "[B,1,224,224], thermal float32 [B,1,224,224], imu float32 [B,6,2000]. "
            "Encoders under 1.5 GB are saved as one self-contained .onnx; larger ones "
            "keep their weights in <m>.onnx.data next to it. "
            "Example: %(prog)s --checkpoint imagebind_huge.pth --out packs/imagebind-huge"
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        type=Path,
        metavar="X.pth",
        help="state dict to load strictly (e.g. the official imagebind_huge.pth); "
        "must match --arch",
    )
    src.add_argument(
        "--random",
        action="store_true",
        help="use the architecture's own random initialisation (seeded by --seed) "
        "instead of trained weights; for tests only, the embeddings are meaningless",
    )
    p.add_argument(
        "--arch",
        type=Path,
        default=DEFAULT_ARCH,
        metavar="ARCH.json",
        help="JSON object of ImageBindModel constructor kwargs "
        f"(default: {DEFAULT_ARCH.relative_to(HERE.parent)}, the imagebind_huge config)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory for the pack (created if missing)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for --random init and for the verification inputs "
                   "(default: 0)")
    p.add_argument(
        "--modalities",
        default=",".join(MODALITIES),
        help="comma-separated subset to export (default: all: %(default)s)",
    )
    p.add_argument("--name", help="pack name written to pack.toml "
                   "(default: the basename of --out)")
    args = p.parse_args(argv)

    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown or not mods:
        p.error(f"--modalities: unknown {unknown}; choose from {', '.join(MODALITIES)}")
    args.modalities = list(dict.fromkeys(mods))  # keep order, drop duplicates
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # Cheap checks first: building the huge model alone takes a while and ~5 GB.
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise SystemExit(f"error: checkpoint not found: {args.checkpoint}\n{CHECKPOINT_HINT}")
    arch = load_arch(args.arch)
    imagebind_model, scaling_cls = import_imagebind()

    # Construct under the seed so --random is reproducible (ImageBind initialises
    # everything with torch's global RNG).
    torch.manual_seed(args.seed)
    model = build_model(imagebind_model, arch)
    if args.checkpoint is not None:
        load_checkpoint(model, args.checkpoint)
        weights = args.checkpoint.name
    else:
        weights = f"random-init (seed {args.seed})"
    model.eval()

    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pack.toml").unlink(missing_ok=True)  # only a successful run writes one
    gen = torch.Generator().manual_seed(args.seed)

    encoders: dict[str, dict] = {}
    failed = []
    for modality in args.modalities:
        enc = ModalityEncoder(model, modality).eval()
        print(f"[{modality}] exporting ...", flush=True)
        path = export_one(enc, modality, out_dir, gen)
        delta, dim = verify_one(enc, modality, path, gen)
        files = [path] + sorted(out_dir.glob(f"{modality}.onnx.*"))
        size = sum(f.stat().st_size for f in files)
        status = "ok" if delta <= TOLERANCE else "FAILED"
        print(
            f"[{modality}] {', '.join(f.name for f in files)}: {size} bytes; "
            f"max |onnxruntime - torch| = {delta:.3e} ({status})",
            flush=True,
        )
        if not delta <= TOLERANCE:  # also catches NaN
            failed.append(modality)

        shape, dtype = MODALITIES[modality]
        encoders[modality] = {
            "file": path.name,
            "input": modality,
            "output": OUTPUT_NAME,
            "dim": dim,
            "logit_scale": logit_scale_of(model.modality_postprocessors[modality],
                                          scaling_cls),
            "input_shape": list(shape),
            "input_dtype": str(dtype).removeprefix("torch."),
        }

    pack = {
        "name": args.name or out_dir.resolve().name,
        "format": PACK_FORMAT,
        "weights": weights,
        "arch": arch,
        "opset": OPSET,
    }
    if failed:
        # No manifest: a pack whose graphs disagree with PyTorch must not be used.
        print(f"error: verification above {TOLERANCE:g} for: {', '.join(failed)}; "
              "pack.toml not written", file=sys.stderr)
        return 1
    manifest = write_manifest(out_dir, pack, encoders)
    print(f"wrote {manifest}")
    for m, t in encoders.items():
        print(f"  {m}: dim {t['dim']}, logit_scale {t['logit_scale']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
