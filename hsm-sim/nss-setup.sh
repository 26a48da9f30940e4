#!/usr/bin/env bash
# Prepares the second PKCS#11 token the tests run against: NSS's softoken (`libsoftokn3.so`
# from Debian's libnss3), its database in DIR (default: a new temporary directory), with a
# token labelled `keyhaven-nss` and a known user PIN. Installs libnss3 and libnss3-tools
# (certutil, which sets the PIN) when missing. Prints the `export` lines that point a shell
# at it:
#
#   eval "$(hsm-sim/nss-setup.sh [DIR])"
#
# The softoken has no configuration file: it reads its database directory and token names from
# the string given to C_Initialize (KEYHAVEN_PKCS11_SECOND_INIT_PARAMETERS, the keystore's
# `init_parameters`). Everything but the export lines goes to stderr. The PIN is a test value.
set -euo pipefail

dir=${1:-}
label=${KEYHAVEN_NSS_LABEL:-keyhaven-nss}
user_pin=${KEYHAVEN_NSS_PIN:-12345678}

find_module() {
  for candidate in /usr/lib/x86_64-linux-gnu/libsoftokn3.so \
                   /usr/lib/aarch64-linux-gnu/libsoftokn3.so \
                   /usr/lib64/libsoftokn3.so \
                   /usr/lib/libsoftokn3.so; do
    if [ -f "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! command -v certutil >/dev/null 2>&1 || ! find_module >/dev/null; then
  echo "hsm-sim: installing NSS's softoken and tools (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq --no-install-recommends libnss3 libnss3-tools >&2
fi
module=$(find_module) || { echo "hsm-sim: libsoftokn3.so not found after install" >&2; exit 1; }

if [ -z "$dir" ]; then
  dir=$(mktemp -d -t keyhaven-nss-XXXXXX)
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# A fresh database every time.
rm -f "$dir"/cert9.db "$dir"/key4.db "$dir"/pkcs11.txt "$dir"/pin
printf '%s\n' "$user_pin" > "$dir/pin"
certutil -N -d "sql:$dir" -f "$dir/pin" >&2
rm -f "$dir/pin"

parameters="configdir='sql:$dir' certPrefix='' keyPrefix='' secmod='secmod.db' flags=noModDB dbTokenDescription='$label'"

cat <<EXPORTS
export KEYHAVEN_PKCS11_SECOND_MODULE=$module
export KEYHAVEN_PKCS11_SECOND_INIT_PARAMETERS=$(printf '%q' "$parameters")
export KEYHAVEN_PKCS11_SECOND_TOKEN_LABEL=$label
export KEYHAVEN_PKCS11_SECOND_PIN=$user_pin
EXPORTS
