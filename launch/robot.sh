#!/usr/bin/env bash
# Run sensebind with the robot profile (launch/robot.toml, or the file given as $1).
# Expects ORT_DYLIB_PATH (or engine.ort_library) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cfg="${1:-launch/robot.toml}"
bin="${SENSEBIND_BIN:-target/release/sensebind}"
[ -x "$bin" ] || cargo build --release --locked
"$bin" check --config "$cfg"
exec "$bin" run --config "$cfg"
