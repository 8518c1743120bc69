#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER for tools/fuzz.sh: compiles the workspace's own crates (the
# daemon's library and the fuzz targets) with cargo-fuzz's libFuzzer instrumentation
# (sanitizer coverage, `--cfg fuzzing`) and overflow checks. Dependencies are not
# wrapped, so they are reused from the release build the tests already made. The
# workspace's crates are built at opt-level 1 without debug info: about as fast to
# fuzz for CI's few seconds per target, and much quicker to compile and link (nine
# binaries, each linking the whole daemon).
rustc="$1"
shift
case " $* " in
  *" --crate-name "*)
    exec "$rustc" "$@" -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Copt-level=1 -Cdebuginfo=0
    ;;
  *) exec "$rustc" "$@" ;;
esac
