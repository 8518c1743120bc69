#!/usr/bin/env bash
# The Debian package, tested as a fleet operator uses it (run by `make test`):
#   tools/test_deb.sh target/debian/sensebind_<version>_<arch>.deb <libonnxruntime.so>
#
#  1. lintian reports no errors (the overrides shipped are listed in docs/packaging.md);
#  2. dpkg-deb: exactly the expected files, modes and conffiles;
#  3. dpkg -i on this machine: the `sensebind` user and its groups, /var/lib/sensebind,
#     the service enabled but not started;
#  4. `sensebind check --config /etc/sensebind/sensebind.toml` as the `sensebind` user:
#     without ORT_DYLIB_PATH it names the variable and /etc/default/sensebind; with the
#     config as shipped it says no source is configured; with ORT_DYLIB_PATH set in
#     /etc/default/sensebind and a demo source added, it passes, and --json reports
#     providers, engine cache and the memory estimate;
#  5. systemd-analyze verify of the installed unit;
#  6. dpkg --remove keeps /var/lib/sensebind and the conffiles; dpkg --purge leaves
#     nothing but the `sensebind` user (kept, as Debian keeps system users).
# Needs root (or passwordless sudo). Refuses to run where sensebind is installed.
set -euo pipefail
deb=${1:?usage: tools/test_deb.sh PACKAGE.deb LIBONNXRUNTIME}
ort=${2:?usage: tools/test_deb.sh PACKAGE.deb LIBONNXRUNTIME}
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "tools/test_deb.sh: installs the package on this machine, so it needs root or passwordless sudo (SENSEBIND_SKIP_DEB_TEST=1 skips it, and says so)" >&2
    exit 1
  fi
fi
say() { printf '\033[1m[deb test]\033[0m %s\n' "$*" >&2; }
fail() {
  printf '\033[1;31m[deb test] FAILED:\033[0m %s\n' "$*" >&2
  exit 1
}
if dpkg -s sensebind >/dev/null 2>&1; then
  fail "sensebind is already installed here; this test installs and purges the package, so it will not touch a real installation (dpkg --purge sensebind first, or SENSEBIND_SKIP_DEB_TEST=1)"
fi
# Whatever happens, the machine is left without the package.
cleanup() { $SUDO dpkg --purge sensebind >/dev/null 2>&1 || true; $SUDO rm -rf "$ortdir"; }
ortdir=$(mktemp -d /opt/sensebind-test-ort.XXXXXX 2>/dev/null || $SUDO mktemp -d /opt/sensebind-test-ort.XXXXXX)
trap cleanup EXIT

# 1. lintian
say "lintian $deb"
lint=$(lintian --fail-on none "$deb" 2>&1 || true)
echo "$lint" >&2
if echo "$lint" | grep -q '^E:'; then
  fail "lintian reports errors"
fi
# Every warning left is one docs/packaging.md explains.
while read -r tag; do
  grep -q "\`$tag\`" docs/packaging.md || fail "lintian warning \`$tag\` is not explained in docs/packaging.md"
done < <(echo "$lint" | awk '/^W:/ {print $3}' | sort -u)

# 2. contents
say "dpkg-deb: files and conffiles"
arch=$(dpkg --print-architecture)
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "Architecture is not $arch"
for dep in adduser libasound2 init-system-helpers; do
  dpkg-deb -f "$deb" Depends | grep -q "$dep" || fail "Depends lacks $dep: $(dpkg-deb -f "$deb" Depends)"
done
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $1, $6}' | sed 's| \./| /|' | sort)
expected=$(sort <<'EOF'
-rw-r--r-- /etc/default/sensebind
-rw-r--r-- /etc/sensebind/sensebind.toml
-rw-r--r-- /usr/lib/systemd/system/sensebind.service
-rw-r--r-- /usr/share/doc/sensebind/README.md
-rw-r--r-- /usr/share/doc/sensebind/changelog.Debian.gz
-rw-r--r-- /usr/share/doc/sensebind/copyright
-rw-r--r-- /usr/share/doc/sensebind/default.toml
-rw-r--r-- /usr/share/doc/sensebind/examples/calibration.toml
-rw-r--r-- /usr/share/doc/sensebind/examples/zenoh-mtls-acl.json5
-rw-r--r-- /usr/share/doc/sensebind/examples/zenoh-tls.json5
-rw-r--r-- /usr/share/doc/sensebind/jetson.md
-rw-r--r-- /usr/share/doc/sensebind/packaging.md
-rw-r--r-- /usr/share/lintian/overrides/sensebind
-rw-r--r-- /usr/share/man/man1/sensebind.1.gz
-rw-r--r-- /usr/share/sensebind/packs/minibind/README.md
-rw-r--r-- /usr/share/sensebind/packs/minibind/audio.onnx
-rw-r--r-- /usr/share/sensebind/packs/minibind/depth.onnx
-rw-r--r-- /usr/share/sensebind/packs/minibind/imu.onnx
-rw-r--r-- /usr/share/sensebind/packs/minibind/pack.toml
-rw-r--r-- /usr/share/sensebind/packs/minibind/text.onnx
-rw-r--r-- /usr/share/sensebind/packs/minibind/thermal.onnx
-rw-r--r-- /usr/share/sensebind/packs/minibind/vision.onnx
-rwxr-xr-x /usr/bin/sensebind
EOF
)
[ "$files" = "$expected" ] || fail "file list differs from the expected one:
$(diff <(echo "$expected") <(echo "$files") || true)"
conffiles=$(dpkg-deb -I "$deb" conffiles | sort)
[ "$conffiles" = "$(printf '/etc/default/sensebind\n/etc/sensebind/sensebind.toml')" ] || fail "conffiles: $conffiles"
for s in postinst prerm postrm; do
  dpkg-deb -I "$deb" "$s" >/dev/null || fail "no $s maintainer script"
done

# 3. install
say "dpkg -i"
$SUDO dpkg -i "$deb" >&2 || fail "dpkg -i"
id sensebind >/dev/null 2>&1 || fail "no sensebind user"
[ "$(getent passwd sensebind | cut -d: -f6,7)" = "/var/lib/sensebind:/usr/sbin/nologin" ] \
  || fail "sensebind user's home and shell: $(getent passwd sensebind)"
groups=$(id -nG sensebind)
for g in video audio plugdev render; do
  if getent group "$g" >/dev/null; then
    echo " $groups " | grep -q " $g " || fail "sensebind is not in group $g: $groups"
  fi
done
[ "$(stat -c '%U:%G %a' /var/lib/sensebind)" = "sensebind:sensebind 750" ] \
  || fail "/var/lib/sensebind: $(stat -c '%U:%G %a' /var/lib/sensebind)"
# Enabled (the wants link, made offline by deb-systemd-helper), not started.
[ -L /etc/systemd/system/multi-user.target.wants/sensebind.service ] || fail "the service is not enabled"
if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet sensebind && fail "the service was started on install"
fi
[ "$(command -v sensebind)" = /usr/bin/sensebind ] || fail "sensebind is not /usr/bin/sensebind on PATH"
man -w sensebind >/dev/null 2>&1 || [ -f /usr/share/man/man1/sensebind.1.gz ] || fail "no manual page"

# 4. sensebind check as the service user, in the service's environment
as_service() { $SUDO runuser -u sensebind -- env -i PATH=/usr/bin:/bin $(grep -E '^[A-Z_]+=' /etc/default/sensebind || true) "$@"; }
say "sensebind check, ONNX Runtime not configured"
out=$(as_service sensebind check --config /etc/sensebind/sensebind.toml 2>&1) && fail "check passed without ONNX Runtime: $out"
echo "$out" | grep -q "ORT_DYLIB_PATH" && echo "$out" | grep -q "/etc/default/sensebind" \
  || fail "check without ONNX Runtime names neither ORT_DYLIB_PATH nor /etc/default/sensebind: $out"
# The operator installs ONNX Runtime where the service can read it and says where.
$SUDO install -m 0755 -d "$ortdir"
$SUDO install -m 0644 "$ort" "$ortdir/libonnxruntime.so"
echo "ORT_DYLIB_PATH=$ortdir/libonnxruntime.so" | $SUDO tee -a /etc/default/sensebind >/dev/null
say "sensebind check, config as shipped (no sources)"
out=$(as_service sensebind check --config /etc/sensebind/sensebind.toml 2>&1) && fail "check passed with no sources: $out"
echo "$out" | grep -q "no sources configured" || fail "check with no sources does not say so: $out"
say "sensebind check, a demo source added"
printf '\n[sources.demo]\ntype = "synthetic"\nsensor = "camera"\n' | $SUDO tee -a /etc/sensebind/sensebind.toml >/dev/null
out=$(as_service sensebind check --config /etc/sensebind/sensebind.toml 2>&1) || fail "check: $out"
echo "$out" >&2
for needle in "version " "pack: minibind (/usr/share/sensebind/packs/minibind)" "source demo: ok" \
  "tensorrt engine cache: /var/lib/sensebind/trt-cache" "memory: encoders vision+text" "machine memory:"; do
  echo "$out" | grep -qF "$needle" || fail "check output lacks \`$needle\`"
done
json=$(as_service sensebind check --json --config /etc/sensebind/sensebind.toml 2>/dev/null) || fail "check --json"
echo "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["ok"] and not r["failed"], r["failed"]
assert r["onnxruntime"]["version"].startswith("1."), r["onnxruntime"]
assert {p["name"] for p in r["providers"]} == {"tensorrt", "cuda", "cpu"}, r["providers"]
assert r["engine_cache"]["dir"] == "/var/lib/sensebind/trt-cache", r["engine_cache"]
mods = r["memory"]["modalities"]
assert mods == ["vision", "text"], mods
enc = {e["modality"]: e for e in r["pack"]["encoders"]}
assert enc["vision"]["provider"] and enc["vision"]["nodes"], enc["vision"]
w = sum(enc[m]["weights"]["bytes"] for m in mods)
est = r["memory"]["estimate"]
assert est["weights_bytes"] == w and est["weights_fp16_bytes"] < w < est["cpu_fp32_rss_bytes"], est
assert r["memory"]["available_bytes"] > 0
' || fail "check --json: $json"
# The service user can write its state directory; nothing else of the system.
as_service sh -c 'touch /var/lib/sensebind/probe' || fail "sensebind cannot write /var/lib/sensebind"

# 5. the unit
say "systemd-analyze verify"
err=$(systemd-analyze verify /usr/lib/systemd/system/sensebind.service 2>&1) || fail "systemd-analyze verify: $err"
[ -z "$(echo "$err" | grep sensebind || true)" ] || fail "systemd-analyze verify: $err"

# 6. remove, then purge
say "dpkg --remove"
$SUDO dpkg --remove sensebind >&2 || fail "dpkg --remove"
[ ! -e /usr/bin/sensebind ] || fail "/usr/bin/sensebind left after remove"
[ -f /var/lib/sensebind/probe ] || fail "remove deleted /var/lib/sensebind"
[ -f /etc/sensebind/sensebind.toml ] && [ -f /etc/default/sensebind ] || fail "remove deleted a conffile"
dpkg -s sensebind 2>/dev/null | grep -q "Status: deinstall ok config-files" || fail "state after remove: $(dpkg -s sensebind 2>&1 | grep Status)"
say "dpkg --purge"
$SUDO dpkg --purge sensebind >&2 || fail "dpkg --purge"
for p in /etc/sensebind /etc/default/sensebind /var/lib/sensebind /usr/share/sensebind /usr/share/doc/sensebind \
  /usr/lib/systemd/system/sensebind.service /etc/systemd/system/multi-user.target.wants/sensebind.service \
  /usr/share/man/man1/sensebind.1.gz /usr/share/lintian/overrides/sensebind; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p left after purge"
done
dpkg -s sensebind >/dev/null 2>&1 && fail "dpkg still knows sensebind after purge"
id sensebind >/dev/null 2>&1 || fail "the sensebind user was removed (Debian keeps system users)"
say "ok: lintian clean of errors, contents as expected, installed, checked as the service user, verified, removed, purged"
