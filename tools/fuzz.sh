#!/usr/bin/env bash
# Build the fuzz targets (fuzz/, cargo-fuzz layout, libfuzzer-sys) and run each one
# for FUZZ_SECONDS (default 10) from its committed corpus (fuzz/corpus/<target>). New
# inputs go to a scratch directory; a crash fails the run and leaves its input in
# fuzz/artifacts/<target>/.
#   tools/fuzz.sh                       # every target, 10 s each (what CI runs)
#   FUZZ_SECONDS=600 tools/fuzz.sh query_json
# The build instruments the workspace's crates as cargo-fuzz does (see
# tools/fuzz-rustc.sh) and reuses the dependencies of the release build; with
# cargo-fuzz installed, `RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target>` works too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-10}
RUSTC_WORKSPACE_WRAPPER="$ROOT/tools/fuzz-rustc.sh" \
  cargo build --release --locked -p sensebind-fuzz --bins --target-dir "$ROOT/target"
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^sensebind-fuzz$')
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
  rc=0
  "$ROOT/target/release/$t" "$scratch/$t" "fuzz/corpus/$t" \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$scratch/$t.log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
  new=$(sed -n 's/^stat::new_units_added: *//p' "$scratch/$t.log")
  echo "[fuzz] $t: ${runs:-?} runs in ${SECONDS_EACH} s from $(ls "fuzz/corpus/$t" | wc -l) seeds, ${new:-?} new units" >&2
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$scratch/$t.log" >&2
    echo "[fuzz] $t failed (exit $rc); the input is kept in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
