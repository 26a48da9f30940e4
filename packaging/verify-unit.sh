#!/usr/bin/env bash
# Checks packaging/keyhaven.service with `systemd-analyze verify`, pointed at BINARY (verify
# needs ExecStart's program to exist): any error or warning fails. Installs systemd's tools
# (Debian's `systemd` package, apt-get) when systemd-analyze is missing.
#
#   packaging/verify-unit.sh target/debug/keyhaven
set -euo pipefail

binary=${1:?usage: verify-unit.sh BINARY}
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "verify-unit: installing systemd-analyze (apt-get install systemd)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq systemd >&2
fi
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "verify-unit: systemd-analyze not found after 'apt-get install systemd'" >&2
  exit 1
}

work=$(mktemp -d -t keyhaven-unit-XXXXXX)
trap 'rm -rf "$work"' EXIT
sed "s#/usr/bin/keyhaven#${binary}#g" "$here/keyhaven.service" > "$work/keyhaven.service"
# Warnings (an unknown or misspelt option is only a warning) count as failures.
if ! output=$(cd "$work" && systemd-analyze verify "$work/keyhaven.service" 2>&1); then
  echo "verify-unit: systemd-analyze verify failed:" >&2
  echo "$output" >&2
  exit 1
fi
if [ -n "$output" ]; then
  echo "verify-unit: systemd-analyze verify warned:" >&2
  echo "$output" >&2
  exit 1
fi
echo "verify-unit: keyhaven.service verifies ($(systemd-analyze --version | head -1))"
