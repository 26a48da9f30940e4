#!/usr/bin/env bash
# Prepares a SoftHSM2 token for Keyhaven's PKCS#11 keystore: installs SoftHSM2 when missing,
# creates a fresh token labelled `keyhaven` with known PINs in DIR (default: a new temporary
# directory), and prints the `export` lines that point a shell at it:
#
#   eval "$(hsm-sim/setup.sh [DIR])"
#
# Everything but the export lines goes to stderr. The PINs are test values, not secrets.
#
# It also builds the fault-injecting PKCS#11 module (hsm-sim/fault, for tests/device_faults.rs)
# and prints its path and its control file, DIR/fault-plan (empty: no fault). The tests cannot
# build it themselves: cargo holds its build lock while they run.
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

fault_exports=
if command -v cargo >/dev/null 2>&1; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  echo "hsm-sim: building the fault-injecting module (hsm-sim/fault)" >&2
  (cd "$root" && cargo build --locked --quiet -p keyhaven-hsm-fault >&2)
  target_dir=${CARGO_TARGET_DIR:-target}
  case $target_dir in /*) ;; *) target_dir=$root/$target_dir ;; esac
  : > "$dir/fault-plan"
  fault_exports="export KEYHAVEN_FAULT_PKCS11_MODULE=$target_dir/debug/libkeyhaven_hsm_fault.so
export KEYHAVEN_FAULT_REAL_MODULE=$module
export KEYHAVEN_FAULT_FILE=$dir/fault-plan"
else
  echo "hsm-sim: cargo not found: the fault-injecting module is not built" >&2
fi

cat <<EXPORTS
export SOFTHSM2_CONF=$dir/softhsm2.conf
export KEYHAVEN_PKCS11_MODULE=$module
export KEYHAVEN_PKCS11_TOKEN_LABEL=$label
export KEYHAVEN_PKCS11_PIN=$user_pin
${fault_exports}
EXPORTS
