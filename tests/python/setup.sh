#!/usr/bin/env bash
# Installs what the Python gRPC test (tests/cert_principals/) runs: `grpcio` and
# `grpcio-tools` from PyPI, into a virtual environment at target/python-grpc (or $1).
# Quick when already installed; installs python3-venv with apt-get when venv is missing.
#
#   tests/python/setup.sh [DIR]
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-${CARGO_TARGET_DIR:-$root/target}/python-grpc}

if "$venv/bin/python" -c 'import grpc, grpc_tools.protoc' >/dev/null 2>&1; then
  exit 0
fi

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "tests/python: installing python3-venv (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq python3-venv >&2
fi

echo "tests/python: installing grpcio and grpcio-tools into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'grpcio>=1.60' 'grpcio-tools>=1.60' >&2
"$venv/bin/python" -c 'import grpc, grpc_tools.protoc'
