#!/usr/bin/env bash
# On-behalf-of latency: the same trivial agent invoked through its worker directly, through a release
# `deputy serve` (on-behalf-of on and off), and, for the Python ChatAgent, under `mlflow models serve`.
# Python for Deputy's workers: $DEPUTY_AGENT_PYTHON, else ~/.cache/deputy/test-venv/bin/python (the runtime's
# requirements.txt). MLflow: the venv $DEPUTY_BENCH_VENV (default ~/.cache/deputy/obo-bench-venv), created with the
# full mlflow when missing. Arguments go to the benchmark (`--rounds 5`, `--requests 2000`, `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="${DEPUTY_BENCH_VENV:-$HOME/.cache/deputy/obo-bench-venv}"
if [ ! -x "$venv/bin/mlflow" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet mlflow==3.17.2 pandas==3.1.1 numpy==2.4.6
fi
if [ -z "${DEPUTY_AGENT_PYTHON:-}" ] && [ -x "$HOME/.cache/deputy/test-venv/bin/python" ]; then
    export DEPUTY_AGENT_PYTHON="$HOME/.cache/deputy/test-venv/bin/python"
fi
cargo build --release -p deputy -p deputy-load
exec "$target/release/deputy-obo-bench" --mlflow-python "$venv/bin/python" "$@"
