#!/usr/bin/env python3
"""sensebind against its baselines, measured in the same run, printed as ratios.

Sections (``--sections``, default all but ``latency``):

preprocess  one pinned core, the same bytes on both sides (``sensebind bench
            --write-inputs``): the official ImageBind transforms (PIL Resize(224,
            BICUBIC) + CenterCrop + ToTensor + Normalize per frame; torchaudio resample
            + ``imagebind.data.waveform2melspec`` + Normalize) vs the daemon's
            preprocessing (``sensebind bench`` preprocess p50). Also checks the two
            produced the same tensor (max |delta|), so the same work was timed.
ort         daemon end-to-end windows/s (``sensebind bench``: preprocessing + batched
            inference) vs raw ONNX Runtime (Python ``onnxruntime``, the same library
            version, the same .onnx, threads, batch and input tensors) running the
            encoder alone.
pytorch     daemon end-to-end windows/s vs the official PyTorch pipeline on the same
            weights (the pack's architecture rebuilt under its seed): official
            preprocessing + eager ``ImageBindModel`` forward, same threads. Depth,
            thermal and IMU have no official loader; PyTorch gets the daemon's tensors
            for free there.
latency     the daemon running the five synthetic streams at robot sizes and rates on
            the pack; ``sensebind listen --json --embeddings`` receives every embedding;
            window end -> embedding on the bus (p50, p99) per modality, and windows
            dropped, from health.

Python: the export tool environment (tools/requirements-export.txt, plus
imagebind-unofficial --no-deps) with pytorchvideo==0.1.5 and setuptools<81 (the
official ``imagebind/data.py`` imports them).

Examples:
    python tools/bench_vs_official.py --sections preprocess
    python tools/bench_vs_official.py --pack mid --threads 2
    python tools/bench_vs_official.py --pack huge --sections ort,pytorch --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
CACHE = Path(os.environ.get("SENSEBIND_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sensebind")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def resolve_pack(name: str) -> str:
    """'' (built-in), a directory, or huge/mid (the cache made by make_bench_pack.sh)."""
    if name in ("", "builtin"):
        return ""
    if name in ("huge", "mid"):
        p = CACHE / "packs" / f"imagebind-{name}-random"
        if not (p / "pack.toml").is_file():
            raise SystemExit(f"error: no {name} benchmark pack at {p}; make it with "
                             f"`tools/make_bench_pack.sh {name}`")
        return str(p)
    if not (Path(name) / "pack.toml").is_file():
        raise SystemExit(f"error: --pack {name}: no pack.toml there (or use huge, mid)")
    return name


def five_streams(camera_w: int, camera_h: int) -> str:
    """The daemon config of five synthetic streams at robot rates: camera at 30 Hz,
    848x480 depth at 30 Hz, 160x120 thermal at 9 Hz, 48 kHz microphone, 200 Hz IMU."""
    return f"""[sources.camera]
type = "synthetic"
sensor = "camera"
width = {camera_w}
height = {camera_h}
rate_hz = 30
[sources.depth]
type = "synthetic"
sensor = "depth"
width = 848
height = 480
rate_hz = 30
[sources.thermal]
type = "synthetic"
sensor = "thermal"
width = 160
height = 120
rate_hz = 9
[sources.microphone]
type = "synthetic"
sensor = "microphone"
sample_rate = 48000
[sources.imu]
type = "synthetic"
sensor = "imu"
rate_hz = 200
"""


def embedding_latencies(lines, steady_from: int, lat: dict[str, list[float]]) -> None:
    """From `sensebind listen --embeddings --json` lines: window end -> received, in ms,
    per modality, for windows ending at or after `steady_from` (ns)."""
    for line in lines:
        now = time.time_ns()
        msg = json.loads(line)
        if "/embedding/" not in msg["key"]:
            continue
        body = msg["message"]
        if body["t_end_ns"] < steady_from:
            continue
        lat.setdefault(body["modality"], []).append((now - body["t_end_ns"]) / 1e6)


def sensebind(args: argparse.Namespace, *cli: str, core: int | None = None) -> str:
    cmd = ([] if core is None else ["taskset", "-c", str(core)]) + [args.bin, *cli]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def daemon_bench(args, pack: str, mods: list[str], threads: int, batch: int,
                 core: int | None = None) -> dict[str, dict]:
    cli = ["bench", "--json", "--seconds", str(args.seconds), "--threads", str(threads),
           "--batch", str(batch), "--modalities", ",".join(mods)]
    if pack:
        cli += ["--pack", pack]
    out = sensebind(args, *cli, core=core)
    return {r["modality"]: r for r in map(json.loads, out.splitlines())}


def daemon_inputs(args):
    """The daemon's benchmark inputs and its tensors of them (``bench --write-inputs``)."""
    with tempfile.TemporaryDirectory() as tmp:
        sensebind(args, "bench", "--write-inputs", tmp)
        return load_inputs(Path(tmp))


def throughput_row(section: str, m: str, args, pack: str, mine: float, base: float,
                   baseline_name: str, note: str) -> dict:
    """A windows/s row: the daemon against a baseline, same batch, threads and pack."""
    return {
        "section": section, "modality": m,
        "what": f"windows/s, batch {args.batch}, {args.threads} threads, {Path(pack).name}",
        "sensebind": mine, "baseline": base, "unit": "windows/s",
        "baseline_name": baseline_name, "ratio": mine / base, "note": note,
    }


def timed(f, seconds: float, min_runs: int = 3) -> list[float]:
    """Run f once untimed, then until `seconds` have passed (at least min_runs): ms."""
    f()
    out, start = [], time.perf_counter()
    while len(out) < min_runs or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def import_official():
    import torchvision
    sys.modules.setdefault("torchvision.transforms.functional_tensor",
                           torchvision.transforms._functional_tensor)
    sys.path.insert(0, str(TOOLS))
    import export_imagebind as ex
    ex.import_imagebind()
    import imagebind.data as ibdata
    return ex, ibdata


def official_transforms(ibdata):
    T = ibdata.transforms
    vision = T.Compose([
        T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
    ])
    audio_norm = T.Normalize(mean=AUDIO_MEAN, std=AUDIO_STD)
    return vision, audio_norm


def load_inputs(d: Path):
    import numpy as np
    info = json.loads((d / "inputs.json").read_text())
    v = info["vision"]
    frames = [np.fromfile(d / f, dtype=np.uint8).reshape(v["height"], v["width"], 3)
              for f in v["frames"]]
    audio = np.fromfile(d / info["audio"]["samples"], dtype="<f4")
    ours_v = np.fromfile(d / v["tensor"], dtype="<f4").reshape(v["tensor_shape"])
    ours_a = np.fromfile(d / info["audio"]["tensor"], dtype="<f4").reshape(
        info["audio"]["tensor_shape"])
    return frames, audio, ours_v, ours_a


def official_vision_fn(frames, transform):
    import torch
    from PIL import Image

    def run():
        # [3, T, 224, 224]: each frame through the official image transform.
        return torch.stack([transform(Image.fromarray(f)) for f in frames], dim=1)
    return run


def official_audio_fn(samples, ibdata, norm, sr=48000):
    import torch
    import torchaudio
    x = torch.from_numpy(samples.copy())[None]

    def run():
        w = torchaudio.functional.resample(x, orig_freq=sr, new_freq=16000)
        return norm(ibdata.waveform2melspec(w, 16000, 128, 204))  # [1, 128, 204]
    return run


def section_preprocess(args, rows):
    import numpy as np
    import torch
    core = args.core
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    _, ibdata = import_official()
    vt, an = official_transforms(ibdata)
    frames, audio, ours_v, ours_a = daemon_inputs(args)
    fv = official_vision_fn(frames, vt)
    fa = official_audio_fn(audio, ibdata, an)
    dv = float(np.abs(fv().numpy() - ours_v).max())
    da = float(np.abs(fa().numpy() - ours_a).max())
    ours = daemon_bench(args, "", ["vision", "audio"], threads=1, batch=1, core=core)
    for m, f, d, what in [
        ("vision", fv, dv, "2 frames 1920x1080 RGB -> [3,2,224,224]"),
        ("audio", fa, da, "2 s 48 kHz mono -> [1,128,204]"),
    ]:
        base = statistics.median(timed(f, args.seconds / 2))
        mine = ours[m]["preprocess_ms"]
        rows.append({
            "section": "preprocess", "modality": m, "what": what + f" (1 core, pinned cpu{core})",
            "sensebind": mine, "baseline": base, "unit": "ms/window (p50)",
            "baseline_name": "official Python transforms", "ratio": base / mine,
            "note": f"same tensor: max |delta| {d:.2g}",
        })


def section_ort(args, rows, pack: str, mods: list[str]):
    import numpy as np
    import onnxruntime as ort
    manifest = tomllib.loads((Path(pack) / "pack.toml").read_text())
    ours = daemon_bench(args, pack, mods, threads=args.threads, batch=args.batch)
    _, _, ours_v, ours_a = daemon_inputs(args)
    rng = np.random.default_rng(0)
    for m in mods:
        spec = manifest[m]
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(Path(pack) / spec["file"]), so,
                                    providers=["CPUExecutionProvider"])
        shape = [args.batch, *spec["input_shape"]]
        if m == "vision":
            x = np.broadcast_to(ours_v, shape).copy()
        elif m == "audio":
            x = np.broadcast_to(ours_a, shape).copy()
        elif m == "text":
            x = rng.integers(1, 49407, size=shape).astype(np.int64)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        feed = {spec["input"]: x}
        ms = statistics.median(timed(lambda: sess.run([spec["output"]], feed), args.seconds / 2))
        rows.append(throughput_row(
            "ort", m, args, pack, ours[m]["windows_per_s"], args.batch / ms * 1e3,
            "raw ONNX Runtime (encoder alone)",
            f"daemon preprocess {ours[m]['preprocess_ms']:.2f} ms + infer "
            f"{ours[m]['infer_ms']:.2f} ms/window"))


def section_pytorch(args, rows, pack: str, mods: list[str]):
    import torch
    ex, ibdata = import_official()
    manifest = tomllib.loads((Path(pack) / "pack.toml").read_text())
    weights = manifest["pack"].get("weights", "")
    if not weights.startswith("random-init (seed "):
        raise SystemExit(f"error: pack {pack} has weights {weights!r}; the PyTorch baseline "
                         "rebuilds random-init packs only (tools/make_bench_pack.sh)")
    seed = int(weights.removeprefix("random-init (seed ").rstrip(")"))
    torch.set_num_threads(args.threads)
    imagebind_model, _ = ex.import_imagebind()
    torch.manual_seed(seed)
    model = ex.build_model(imagebind_model, manifest["pack"]["arch"]).eval()
    vt, an = official_transforms(ibdata)
    frames, audio, ours_v, _ = daemon_inputs(args)
    ours = daemon_bench(args, pack, mods, threads=args.threads, batch=args.batch)
    fv = official_vision_fn(frames, vt)
    fa = official_audio_fn(audio, ibdata, an)
    prompt = "a person walking a dog past the robot on a rainy street"
    gen = torch.Generator().manual_seed(0)
    B = args.batch

    def pipeline(m):
        if m == "vision":
            # [B, 1 clip, 3, T, 224, 224]: the official video layout (ImageBind folds
            # a 5-D+ input's second axis as clips and averages them).
            return lambda: {m: torch.stack([fv() for _ in range(B)])[:, None]}
        if m == "audio":
            return lambda: {m: torch.stack([fa() for _ in range(B)])[:, None]}  # [B, 1 clip, 1, 128, 204]
        if m == "text":
            return lambda: {m: ibdata.load_and_transform_text([prompt] * B, "cpu")}
        shape = [B, *manifest[m]["input_shape"]]
        x = torch.randn(shape, generator=gen)
        return lambda: {m: x}
    for m in mods:
        prep = pipeline(m)
        with torch.inference_mode():
            ms = statistics.median(timed(lambda: model(prep()), args.seconds / 2))
        rows.append(throughput_row(
            "pytorch", m, args, pack, ours[m]["windows_per_s"], B / ms * 1e3,
            "official PyTorch pipeline (eager)",
            "" if m in ("vision", "audio", "text") else "PyTorch side: forward only"))


def section_latency(args, rows, pack: str):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        prom = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pack_line = f'[pack]\npath = "{pack}"\n' if pack else ""
        daemon = tmp / "daemon.toml"
        daemon.write_text(f"""{pack_line}
[robot]
id = "bench"
state_dir = "{tmp / 'state'}"
[engine]
intra_threads = {args.threads}
[bus]
listen = ["tcp/127.0.0.1:{port}"]
[prometheus]
listen = "127.0.0.1:{prom}"
{five_streams(1920, 1080)}""")
        client = tmp / "client.toml"
        client.write_text(f'[bus]\nlisten = []\nconnect = ["tcp/127.0.0.1:{port}"]\n')
        d = subprocess.Popen([args.bin, "run", "-c", str(daemon)], stderr=subprocess.DEVNULL)
        try:
            lat: dict[str, list[float]] = {}
            time.sleep(1.0)
            # The first windows after a start are late (start-up transients of the
            # sources and the bus session): skip those ending in the first seconds.
            steady_from = time.time_ns() + int(args.latency_warmup * 1e9)
            lp = subprocess.Popen([args.bin, "listen", "-c", str(client), "--robot", "bench",
                                   "--embeddings", "--json", "--seconds", str(args.latency_seconds)],
                                  stdout=subprocess.PIPE, text=True)
            embedding_latencies(lp.stdout, steady_from, lat)
            lp.wait()
            import urllib.request
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=5).read().decode()
        finally:
            d.terminate()
            d.wait(timeout=30)
    dropped = {}
    for line in metrics.splitlines():
        if line.startswith("sensebind_stream_windows_dropped_total{"):
            labels, value = line.rsplit(" ", 1)
            mod = labels.split('modality="')[1].split('"')[0] if 'modality="' in labels else labels
            dropped[mod] = dropped.get(mod, 0) + float(value)
    for m, v in sorted(lat.items()):
        v.sort()
        p = lambda q: v[min(len(v) - 1, int(q * len(v)))]
        rows.append({
            "section": "latency", "modality": m,
            "what": f"window end -> embedding on the bus, 5 live streams, {args.threads} threads, "
                    f"{Path(pack).name if pack else 'builtin'}",
            "sensebind": p(0.5), "baseline": p(0.99), "unit": "ms (p50 | p99)",
            "baseline_name": "p99", "ratio": float("nan"),
            "note": f"{len(v)} embeddings in {args.latency_seconds} s after {args.latency_warmup} s "
                    f"warm-up; windows dropped {dropped.get(m, 0):.0f}",
        })


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "sensebind"))
    p.add_argument("--pack", default="mid", help="huge, mid, builtin or a pack directory (default mid)")
    p.add_argument("--sections", default="preprocess,ort,pytorch")
    p.add_argument("--modalities", default="vision,audio,depth,thermal,imu,text")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seconds", type=float, default=6.0, help="per measurement (default 6)")
    p.add_argument("--latency-seconds", type=float, default=60.0)
    p.add_argument("--latency-warmup", type=float, default=10.0,
                   help="latency: ignore windows ending in the first N s (default 10)")
    p.add_argument("--core", type=int, default=0, help="the core the preprocess section pins")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    args = p.parse_args(argv)
    if not Path(args.bin).is_file():
        raise SystemExit(f"error: {args.bin} not found: cargo build --release first")
    if not os.environ.get("ORT_DYLIB_PATH"):
        # The daemon loads the same ONNX Runtime as this Python's onnxruntime package,
        # so the `ort` section compares one library with itself.
        import onnxruntime
        capi = Path(onnxruntime.__file__).parent / "capi"
        libs = sorted(capi.glob("libonnxruntime.so*"))
        if not libs:
            raise SystemExit("error: set ORT_DYLIB_PATH (no libonnxruntime.so in this Python's onnxruntime)")
        os.environ["ORT_DYLIB_PATH"] = str(libs[0])
    log(f"[bench] ONNX Runtime: {os.environ['ORT_DYLIB_PATH']}")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    pack = resolve_pack(args.pack) if set(sections) - {"preprocess"} else ""
    rows: list[dict] = []
    for s in sections:
        log(f"[bench] {s} ...")
        if s == "preprocess":
            section_preprocess(args, rows)
        elif s == "ort":
            section_ort(args, rows, pack or str(ROOT / "packs" / "minibind"), mods)
        elif s == "pytorch":
            section_pytorch(args, rows, pack or str(ROOT / "packs" / "tiny-random"), mods)
        elif s == "latency":
            section_latency(args, rows, pack)
        else:
            raise SystemExit(f"error: unknown section {s!r}")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} CPUs; sensebind {args.bin}")
    print(f"{'section':<10} {'modality':<8} {'sensebind':>11} {'baseline':>11} {'ratio':>7}  unit; baseline; what; note")
    for r in rows:
        print(f"{r['section']:<10} {r['modality']:<8} {r['sensebind']:>11.3f} {r['baseline']:>11.3f} "
              f"{r['ratio']:>6.2f}x  {r['unit']}; {r['baseline_name']}; {r['what']}; {r['note']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
