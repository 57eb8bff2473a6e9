#!/usr/bin/env bash
# The main job on a fresh machine: build Deputy, prepare the Python environment its agents run in, start the server on
# ./deputy-data at 127.0.0.1:8080, deploy the seed's RAG agent and ask it the same question as different users, show
# the token path underneath, and leave the server running (Ctrl-C stops it). Extra arguments go to `deputy demo`,
# e.g. `--exit` to stop after the walkthrough or `--listen 127.0.0.1:9090`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# The same (debug) build the tests use, so a fresh machine compiles the dependencies once; the built-in models'
# kernels are optimised in it (see Cargo.toml).
cargo build -p deputy

# Python agents run on this venv's interpreter: the agent runtime's complete lock is all the example agent needs.
venv=${DEPUTY_AGENT_VENV:-$HOME/.cache/deputy/agent-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r python/deputy-agent-runtime/requirements.txt
"$venv/bin/python" -c 'import databricks.sdk, mlflow.pyfunc, pandas, numpy'
export DEPUTY_AGENT_PYTHON="$venv/bin/python"

exec "${CARGO_TARGET_DIR:-$root/target}/debug/deputy" demo "$@"
