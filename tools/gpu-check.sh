#!/usr/bin/env bash
# GPU check: the full-size pack through sensebind's own engine on TensorRT fp16, CUDA and
# CPU; windows/s per modality, nodes per provider, and each GPU embedding's cosine
# against the CPU one. About 10 minutes on a machine with an NVIDIA GPU (the first
# TensorRT engine build dominates; the engine cache makes reruns quick).
#
#   tools/gpu-check.sh                      # build, make/find the huge pack, run all three
#   PROVIDERS="cuda cpu" tools/gpu-check.sh # a subset
#
# What it needs, and where it looks:
#   sensebind       SENSEBIND_BIN, else `cargo build --release` here.
#   the pack        SENSEBIND_BENCH_PACK (a pack directory), else tools/make_bench_pack.sh huge.
#   ONNX Runtime    ORT_DYLIB_PATH pointing at a GPU build of libonnxruntime (JetPack's on
#                   Jetson), else a venv at $SENSEBIND_CACHE/gpu-venv with
#                   onnxruntime-gpu==1.31.1 and its CUDA/cuDNN wheels.
#   TensorRT        libnvinfer.so.10 on the loader path (JetPack, or the TensorRT wheels'
#                   lib directory in LD_LIBRARY_PATH). Without it the tensorrt row says so
#                   and its encoders run on CUDA (ONNX Runtime's own fallback).
# Knobs: SECONDS_PER (per modality, default 6), BATCH (default 1), MODALITIES
# (default all), OUT (results directory, default a temp dir; results.json is written there).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${SENSEBIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sensebind}"
PROVIDERS="${PROVIDERS:-tensorrt cuda cpu}"
SECONDS_PER="${SECONDS_PER:-6}"
BATCH="${BATCH:-1}"
MODALITIES="${MODALITIES:-vision,audio,depth,thermal,imu,text}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
log() { printf '\033[1m[gpu-check]\033[0m %s\n' "$*" >&2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 \
  || log "warning: nvidia-smi not found; is there an NVIDIA GPU and driver?"

BIN="${SENSEBIND_BIN:-}"
if [ -z "$BIN" ]; then
  log "building sensebind (release)"
  cargo build --release --locked >&2
  BIN="$ROOT/target/release/sensebind"
fi

PACK="${SENSEBIND_BENCH_PACK:-}"
if [ -z "$PACK" ]; then
  PACK=$(tools/make_bench_pack.sh huge)
fi
[ -f "$PACK/pack.toml" ] || { log "error: no pack.toml in $PACK"; exit 1; }

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  VENV="$CACHE/gpu-venv"
  if [ ! -f "$VENV/.ok" ]; then
    log "creating $VENV with onnxruntime-gpu==1.31.1 (CUDA and cuDNN wheels)"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "onnxruntime-gpu[cuda,cudnn]==1.31.1"
    touch "$VENV/.ok"
  fi
  ORT_DYLIB_PATH=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
  # The CUDA/cuDNN wheels' libraries, for the CUDA provider to load.
  for d in "$VENV"/lib/python3*/site-packages/nvidia/*/lib; do
    LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
  done
  export LD_LIBRARY_PATH
fi
export ORT_DYLIB_PATH
log "ONNX Runtime: $ORT_DYLIB_PATH"
log "pack: $PACK; results in $OUT"

for p in $PROVIDERS; do
  case "$p" in
    tensorrt) list='["tensorrt", "cuda", "cpu"]' ;;
    cuda) list='["cuda", "cpu"]' ;;
    cpu) list='["cpu"]' ;;
    *) log "error: unknown provider $p (tensorrt, cuda, cpu)"; exit 2 ;;
  esac
  cat >"$OUT/$p.toml" <<EOF
[pack]
path = "$PACK"
[engine]
providers = $list
trt_fp16 = true
trt_engine_cache = "$CACHE/trt-cache"
EOF
  log "$p: bench (encoders warm up first: TensorRT builds its engines then)"
  start=$(date +%s)
  RUST_LOG=info "$BIN" bench -c "$OUT/$p.toml" --json --seconds "$SECONDS_PER" --batch "$BATCH" \
    --modalities "$MODALITIES" --vectors "$OUT/$p.vectors.jsonl" >"$OUT/$p.bench.jsonl" 2>"$OUT/$p.bench.log" || {
    log "$p: bench failed:"; tail -5 "$OUT/$p.bench.log" >&2; continue; }
  grep -E "provider_fallback|encoder ready" "$OUT/$p.bench.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220 >&2 || true
  log "$p: took $(($(date +%s) - start)) s"
done

python3 - "$OUT" $PROVIDERS <<'PY'
import json, math, sys
from pathlib import Path
out, provs = Path(sys.argv[1]), sys.argv[2:]
def lines(p):
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.is_file() else []
bench = {p: {r["modality"]: r for r in lines(out / f"{p}.bench.jsonl")} for p in provs}
vec = {p: {r["modality"]: r["embedding"] for r in lines(out / f"{p}.vectors.jsonl")} for p in provs}
nodes = {(p, r["modality"]): ",".join(f"{k}:{v}" for k, v in r.get("provider_nodes", {}).items())
         for p in provs for r in lines(out / f"{p}.vectors.jsonl")}
def cos(a, b):
    ab = sum(x * y for x, y in zip(a, b)); aa = sum(x * x for x in a); bb = sum(y * y for y in b)
    return ab / math.sqrt(aa * bb) if aa and bb else float("nan")
rows = []
print(f"{'provider':<9} {'modality':<8} {'windows/s':>10} {'vs cpu':>7} {'infer ms':>9} {'prep ms':>8} {'cos vs cpu':>10}  nodes")
for p in provs:
    for m, r in bench[p].items():
        c = cos(vec[p].get(m, []), vec.get("cpu", {}).get(m, [])) if "cpu" in vec and p != "cpu" else 1.0
        base = bench.get("cpu", {}).get(m, {}).get("windows_per_s")
        ratio = r["windows_per_s"] / base if base else float("nan")
        rows.append({**r, "config": p, "cosine_vs_cpu": c, "speedup_vs_cpu": ratio, "nodes": nodes.get((p, m), "")})
        print(f"{p:<9} {m:<8} {r['windows_per_s']:>10.2f} {ratio:>6.1f}x {r['infer_ms']:>9.2f} {r['preprocess_ms']:>8.2f} {c:>10.6f}  {nodes.get((p, m), '')}")
(out / "results.json").write_text(json.dumps(rows, indent=1))
print(f"results: {out / 'results.json'}")
PY
