#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml: every dependency, with the test and
# cluster extras, pinned to one version with the SHA-256 of each of its files, for CPython
# 3.11 on Linux x86-64, torch as the CPU wheel (so no CUDA packages come in). Versions
# already in the lock are kept where pyproject.toml still allows them.
#
#   tools/lock.sh                       # torch's CPU wheel from download.pytorch.org
#   tools/lock.sh --find-links DIR      # ... or from a folder holding that wheel
#
# Any argument is handed to `uv pip compile` (pip install uv). The lock's second line
# records the SHA-256 of pyproject.toml's dependency tables, which the tests compare. The
# lock names no index: where pip does not already find the CPU torch wheel, installing it
# needs PIP_EXTRA_INDEX_URL set to PyTorch's CPU index (see the README).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_INDEX="https://download.pytorch.org/whl/cpu"
source=(--extra-index-url "$TORCH_INDEX" --index-strategy unsafe-best-match)
for arg in "$@"; do
    if [ "$arg" = "--find-links" ]; then source=(); fi
done

deps_sha=$(python3 tools/lock_digest.py)
tmp=$(mktemp requirements.lock.XXXXXX)
trap 'rm -f "$tmp"' EXIT
[ -f requirements.lock ] && cp requirements.lock "$tmp"
uv pip compile pyproject.toml --extra test --extra cluster \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --generate-hashes --no-emit-index-url --no-emit-find-links --no-header \
    "${source[@]}" "$@" -o "$tmp" >/dev/null
{
    echo "# Exact, hashed dependencies of mfsym (Linux x86-64, CPython 3.11, CPU torch)."
    echo "# pyproject-dependencies-sha256: $deps_sha"
    echo "# Regenerate with tools/lock.sh; install with the README's command."
    grep -v -e '^# ' -e '^--extra-index-url' "$tmp" | sed -e '/./,$!d'
} > requirements.lock
