#!/usr/bin/env bash
# Make a random-init benchmark pack of the official ImageBind architecture, in a cache
# outside the repository (never committed):
#
#   tools/make_bench_pack.sh huge   # imagebind_huge (tools/arch/huge.json), ~4.8 GB
#   tools/make_bench_pack.sh mid    # ViT-B-sized encoders (tools/arch/mid.json), quick runs
#
# Writes $SENSEBIND_CACHE/packs/imagebind-<size>-random (SENSEBIND_CACHE defaults to
# ${XDG_CACHE_HOME:-~/.cache}/sensebind) and prints its path. Weights are the
# architecture's own initialisation under seed 0, so any machine makes the same pack and
# tools/bench_vs_official.py can rebuild the identical PyTorch model.
#
# Python: $SENSEBIND_TOOL_PYTHON if set, else a venv at $SENSEBIND_CACHE/tool-venv made
# on first use from tools/requirements-export.txt (torch, ~3 GB to download).
# Time and memory (2 cores): mid ~3 min; huge ~15-25 min and ~16 GB RAM.
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-}"
case "$size" in
  huge | mid) ;;
  *)
    echo "usage: tools/make_bench_pack.sh huge|mid" >&2
    exit 2
    ;;
esac
CACHE="${SENSEBIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sensebind}"
OUT="$CACHE/packs/imagebind-$size-random"
if [ -f "$OUT/pack.toml" ]; then
  echo "$OUT"
  exit 0
fi
PY="${SENSEBIND_TOOL_PYTHON:-}"
if [ -z "$PY" ]; then
  VENV="$CACHE/tool-venv"
  if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.ok" ]; then
    echo "[make_bench_pack] creating the tool venv $VENV (torch, onnx; one time)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tools/requirements-export.txt
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps imagebind-unofficial==0.1.1
    touch "$VENV/.ok"
  fi
  PY="$VENV/bin/python"
fi
mkdir -p "$OUT"
echo "[make_bench_pack] exporting imagebind-$size-random to $OUT" >&2
"$PY" tools/export_imagebind.py --random --seed 0 --arch "tools/arch/$size.json" \
  --out "$OUT" --name "imagebind-$size-random" >&2
echo "$OUT"
