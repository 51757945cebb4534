#!/usr/bin/env bash
# Run import-linter (the contracts in pyproject.toml) on the package as it installs.
#
# adapters/ and validation/ sit beside emu_backend/ in the source tree and are mapped into the package
# by pyproject's package-dir; grimp finds a package's modules by walking its folder, so it is given the
# assembled copy that a plain (non-editable) install makes, in a temporary folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python -m pip install -q --no-deps --no-build-isolation --target "$tmp/site" "$root" >/dev/null 2>&1 \
    || python -m pip install -q --no-deps --target "$tmp/site" "$root" >/dev/null
cd "$tmp/site"
lint-imports --no-cache "$root/pyproject.toml" "$@"
