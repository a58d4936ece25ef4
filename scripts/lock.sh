#!/usr/bin/env bash
# Refresh constraints.txt, the lock: every package that `pip install -e '.[test]'` installs, transitive
# ones included, at one exact version, resolved by pip-tools (pip's own resolver) from pyproject.toml and
# the pins we chose in constraints.in. Resolved for CPython 3.11 on Linux x86-64, the machines we test on.
#   scripts/lock.sh                    keep every locked version that still fits; add what is new
#   scripts/lock.sh --upgrade          newest versions that fit (then run the whole test suite)
#   scripts/lock.sh -P botocore        move one package
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check pip-tools==7.7.0
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tools/venv/bin/pip-compile" --quiet --extra test --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links \
    --constraint constraints.in --output-file constraints.txt "$@" pyproject.toml
echo "constraints.txt: $(grep -c '==' constraints.txt) packages pinned"
