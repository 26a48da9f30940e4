#!/bin/sh
# Installs the stock AWS clients the AWS-door tests drive (boto3, the AWS CLI and the AWS
# Encryption SDK, from PyPI) into a venv under
# target/ (tests/python/requirements-aws.txt). Idempotent and quick once installed. Prints the
# venv's python.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="${AWS_VENV:-$root/target/aws-venv}"
requirements="$root/tests/python/requirements-aws.txt"
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "aws-setup: installing python3-venv" >&2
        sudo -n apt-get install -y python3 python3-venv >&2 || apt-get install -y python3 python3-venv >&2
    fi
fi
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp" \
    && "$venv/bin/python" -c 'import boto3, awscli, aws_encryption_sdk' >/dev/null 2>&1; then
    echo "$venv/bin/python"
    exit 0
fi
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
cp "$requirements" "$stamp"
echo "$venv/bin/python"
