#!/usr/bin/env bash
# Installs what the etcd store tests need when it is missing: Debian's etcd server (the tests
# start their own members on loopback ports; this script starts nothing) and protoc, which
# the etcd-client crate's build compiles etcd's API with.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  echo "etcd setup: installing ${missing[*]} (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
# Debian's package may start a system etcd on the default ports; the tests never use it.
command -v etcd >/dev/null || { echo "etcd setup: etcd not found after install" >&2; exit 1; }
