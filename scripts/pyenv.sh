#!/usr/bin/env bash
# Makes the Python environment of the API end-to-end test (proxmoxer from
# PyPI) under target/, keyed by the requirements, and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
req=qemu-tests/python/requirements.txt
key=$(sha256sum "$req" | cut -c1-12)
env="target/pyenv-$key"
if [ ! -x "$env/bin/python3" ] || [ ! -f "$env/.complete" ]; then
    rm -rf "$env"
    python3 -m venv "$env" >&2
    "$env/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    touch "$env/.complete"
fi
echo "$env"
