#!/usr/bin/env bash
# Runs the Python compatibility tests (real databricks-sdk against `deputy serve`).
#   PYTHON     the interpreter of a venv with tests/python/requirements.txt installed (default: python3)
#   DEPUTY_BIN the deputy binary (default: target/debug/deputy, relative to the repository root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
export DEPUTY_BIN="${DEPUTY_BIN:-target/debug/deputy}"
exec "$PYTHON" -m pytest -q -p no:cacheprovider tests/python "$@"
