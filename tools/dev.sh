#!/usr/bin/env bash
# sensebind developer entry point: `tools/dev.sh setup|demo|demo-real|test|deb|ort-path`.
# Each command does its own set-up on a fresh Debian machine: system packages (apt),
# a Python virtual environment in .venv with ONNX Runtime (the daemon loads
# libonnxruntime.so from it) and the Python test client's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
# mcap, mcap-protobuf-support, foxglove-sdk and websockets: independent readers, writers
# and a Foxglove WebSocket client for the recording and live-view tests; prometheus-client
# parses the `/metrics` text as Prometheus itself would.
PY_REQS=(onnxruntime==1.31.1 eclipse-zenoh==1.10.2 rosbags==0.11.9 cbor2==5.7.1 numpy pytest==8.4.2
  mcap==1.6.0 mcap-protobuf-support==0.6.0 foxglove-sdk==0.30.3 websockets==15.0.1
  pillow==13.0.0 prometheus-client==0.23.1)
# libclang-dev (v4l2 bindings) and libasound2-dev (ALSA) build the `robot` drivers;
# espeak-ng speaks the MiniBind digit world (tools/minibind) and these font packages
# draw it: sans, serif, mono, display and handwriting faces (the pack was trained on
# the fonts they install, less the quarter world.py holds out; tests/minibind.rs draws
# held-out ones, so the test needs the same set).
MINIBIND_FONTS=(fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf
  fonts-urw-base35 fonts-comic-neue fonts-humor-sans fonts-dkg-handwriting fonts-breip
  fonts-femkeklaver fonts-sil-andika fonts-cantarell fonts-open-sans fonts-lato
  fonts-roboto-unhinted fonts-crosextra-carlito fonts-crosextra-caladea fonts-inconsolata
  fonts-hack fonts-firacode fonts-ebgaramond fonts-linuxlibertine fonts-cabin fonts-comfortaa
  fonts-quicksand fonts-bebas-neue fonts-jura fonts-texgyre fonts-lobster fonts-fantasque-sans
  fonts-staypuft fonts-dustin fonts-tlwg-purisa fonts-league-spartan fonts-sil-gentium)
# help2man writes the package's manual page from `sensebind --help`; lintian checks the
# package (tools/test_deb.sh).
APT_PKGS=(pkg-config python3-venv systemd openssl libclang-dev libasound2-dev espeak-ng help2man lintian
  "${MINIBIND_FONTS[@]}")
# cargo-deb builds the Debian package (`make deb`); installed with cargo on first use.
CARGO_DEB_VERSION=3.8.0

log() { printf '\033[1m[sensebind]\033[0m %s\n' "$*" >&2; }

apt_setup() {
  local missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1; then
      local sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      log "installing system packages: ${missing[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "warning: not a Debian system; make sure these are installed: ${missing[*]}"
    fi
  fi
}

venv_setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.sensebind-reqs"
  if [ "$(cat "$stamp" 2>/dev/null)" != "${PY_REQS[*]}" ]; then
    log "installing Python packages: ${PY_REQS[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_REQS[@]}"
    echo "${PY_REQS[*]}" > "$stamp"
  fi
}

ort_path() {
  local p
  p=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n 1 || true)
  if [ -z "$p" ]; then
    echo "libonnxruntime.so not found in $VENV: run tools/dev.sh setup" >&2
    return 1
  fi
  echo "$p"
}

# The Debian package for this machine's architecture, in target/debian/ (prints its path).
deb() {
  if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    log "installing cargo-deb $CARGO_DEB_VERSION (one time, a few minutes)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
  fi
  # Every driver that builds on Debian (Cargo.toml [package.metadata.deb] features).
  cargo build --release --locked --features robot
  mkdir -p target/man
  help2man --no-info --no-discard-stderr --section 1 \
    --name "one ImageBind embedding space for everything a robot senses, on zenoh" \
    --include debian/sensebind.h2m target/release/sensebind > target/man/sensebind.1
  gzip -9nf target/man/sensebind.1
  rm -f target/debian/sensebind_*.deb
  cargo deb --no-build --locked --strip --output target/debian/ >&2
  ls target/debian/sensebind_*.deb
}

setup() {
  apt_setup
  venv_setup
  export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ort_path)}"
  log "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
}

case "${1:-}" in
  setup)
    setup
    ;;
  ort-path)
    ort_path
    ;;
  demo)
    shift
    setup
    log "building (release) and starting the demo: synthetic sensors playing the digit world, built-in MiniBind pack; watch with target/release/sensebind listen; Ctrl-C stops"
    cargo build --release --locked
    exec ./target/release/sensebind run "$@"
    ;;
  demo-real)
    shift
    setup
    log "building (release) and starting the demo with real people: a recording (assets/demo-real) of handwritten digits held up to a camera and digits spoken into a microphone, looped in real time, built-in MiniBind pack (configs/demo-real.toml); watch with target/release/sensebind listen; Ctrl-C stops"
    cargo build --release --locked
    exec ./target/release/sensebind run --config configs/demo-real.toml "$@"
    ;;
  test)
    setup
    log "cargo fmt --check"
    cargo fmt --all -- --check
    # Drivers sit behind cargo features; `robot` enables every one that builds here.
    log "cargo clippy -D warnings (default features, and every driver)"
    # Default features: the library and binary a newcomer builds (`make demo`). Tests,
    # benches and examples are only ever built with drivers on: the pass below.
    cargo clippy --release --locked --lib --bins -- -D warnings
    # Every driver at once (no code is compiled only *without* a feature, so this covers
    # `--features robot` too). RealSense cannot link here (no librealsense2 in Debian);
    # realsense-sys's `docs-only` bindings let the driver be type-checked against the
    # real API.
    cargo clippy --release --locked --all-targets --features robot,realsense,realsense-rust/docs-only -- -D warnings
    log "cargo test (release, --features robot)"
    # tests/minibind.rs writes held-out digit-world files with the venv's Python.
    SENSEBIND_PYTHON="$VENV/bin/python" cargo test --release --locked --features robot
    log "Python tests (bus client, MCAP readers/writers, Foxglove live view)"
    SENSEBIND_BIN="$ROOT/target/release/sensebind" "$VENV/bin/python" -m pytest -q tests/python
    # The Debian package: built, checked by lintian and dpkg-deb, installed on this
    # machine, run as its service user, verified by systemd, purged. Before the fuzz
    # build, which rebuilds the library with other flags in the same target dir: here
    # the release binary the tests ran is packaged as it is.
    if [ -n "${SENSEBIND_SKIP_DEB_TEST:-}" ]; then
      log "SKIPPED: the Debian package test (SENSEBIND_SKIP_DEB_TEST is set)"
    else
      log "Debian package (make deb, then tools/test_deb.sh: install, check, purge)"
      pkg=$(deb)
      tools/test_deb.sh "$pkg" "$ORT_DYLIB_PATH"
    fi
    # Every parser and converter that reads outside data, fuzzed from the committed
    # corpus (fuzz/corpus) for a few seconds each; a crash fails the run.
    log "fuzz (tools/fuzz.sh, ${FUZZ_SECONDS:-5} s per target)"
    FUZZ_SECONDS="${FUZZ_SECONDS:-5}" tools/fuzz.sh
    ;;
  deb)
    setup
    deb
    ;;
  *)
    echo "usage: tools/dev.sh setup|demo|demo-real|test|deb|ort-path" >&2
    exit 2
    ;;
esac
