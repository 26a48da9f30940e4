#!/usr/bin/env bash
# Prepares a SoftHSM2 token for Keyhaven's PKCS#11 keystore: installs SoftHSM2 when missing,
# creates a fresh token labelled `keyhaven` with known PINs in DIR (default: a new temporary
# directory), and prints the `export` lines that point a shell at it:
#
#   eval "$(hsm-sim/setup.sh [DIR])"
#
# Everything but the export lines goes to stderr. The PINs are test values, not secrets.
set -euo pipefail

dir=${1:-}
label=${KEYHAVEN_HSM_LABEL:-keyhaven}
user_pin=${KEYHAVEN_HSM_PIN:-12345678}
so_pin=${KEYHAVEN_HSM_SO_PIN:-87654321}

find_module() {
  for candidate in /usr/lib/softhsm/libsofthsm2.so \
                   /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
                   /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
                   /usr/local/lib/softhsm/libsofthsm2.so; do
    if [ -f "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! command -v softhsm2-util >/dev/null 2>&1 || ! find_module >/dev/null; then
  echo "hsm-sim: installing SoftHSM2 (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq softhsm2 >&2
fi
module=$(find_module) || { echo "hsm-sim: libsofthsm2.so not found after install" >&2; exit 1; }

if [ -z "$dir" ]; then
  dir=$(mktemp -d -t keyhaven-softhsm-XXXXXX)
fi
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
# A fresh token every time: two tokens with the same label would be ambiguous.
rm -rf "${dir:?}/tokens/"*
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"
softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$user_pin" >&2

cat <<EXPORTS
export SOFTHSM2_CONF=$dir/softhsm2.conf
export KEYHAVEN_PKCS11_MODULE=$module
export KEYHAVEN_PKCS11_TOKEN_LABEL=$label
export KEYHAVEN_PKCS11_PIN=$user_pin
EXPORTS
