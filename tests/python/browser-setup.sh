#!/usr/bin/env bash
# Installs what the console's browser test (tests/console.rs) drives: Chromium and its
# WebDriver from Debian's packages, and Selenium's Python bindings from PyPI in a virtual
# environment at target/browser-venv (or $1). Quick when already installed. Prints the
# venv's python.
#
#   tests/python/browser-setup.sh [DIR]
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-${CARGO_TARGET_DIR:-$root/target}/browser-venv}
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
export DEBIAN_FRONTEND=noninteractive

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "browser-setup: installing chromium and chromium-driver (apt-get)" >&2
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >&2
fi

if "$venv/bin/python" -c 'import selenium' >/dev/null 2>&1; then
  echo "$venv/bin/python"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "browser-setup: installing python3-venv (apt-get)" >&2
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq python3-venv >&2
fi
echo "browser-setup: installing selenium into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'selenium>=4.20,<5' >&2
"$venv/bin/python" -c 'import selenium'
echo "$venv/bin/python"
