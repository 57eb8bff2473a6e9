#!/usr/bin/env bash
# Runs every test of the project: formatting, the Rust tests (unit, router-level, end-to-end against the real
# binary), then the compatibility tests with the real Python clients from PyPI against a running `deputy serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}

cargo fmt --all --check
cargo build -p deputy
cargo test --workspace

venv=${DEPUTY_TEST_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
DEPUTY_BIN="$target_dir/debug/deputy" PYTHON="$venv/bin/python" bash tests/python/run.sh
