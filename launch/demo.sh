#!/usr/bin/env bash
# The demo: synthetic camera, depth, thermal, microphone and IMU, the built-in tiny
# random-weight pack, zenoh on tcp/127.0.0.1:7447. Watch it from another terminal:
#   target/release/sensebind listen
set -euo pipefail
cd "$(dirname "$0")/.."
exec tools/dev.sh demo "$@"
