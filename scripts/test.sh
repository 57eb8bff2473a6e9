#!/usr/bin/env bash
# Runs every test of the project: formatting, the Rust tests (unit, router-level, end-to-end against the real
# binary), then the compatibility tests with the real Python clients from PyPI against a running `deputy serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}

cargo fmt --all --check
cargo build -p deputy
# The Rust example agent that the Python tests deploy.
cargo build -p deputy-sdk --example whoami_agent
# The replica tests need PostgreSQL: they run in the second pass below.
cargo test --workspace -- --skip replicas_
# The built-in models (fetched once with pip, cached outside the clone); the serving tests need them.
"$target_dir/debug/deputy" models install

# The console's browser tests drive Debian's headless Chromium through its WebDriver (not on a fresh machine).
if ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  as_root=$([ "$(id -u)" = 0 ] || echo sudo)
  $as_root apt-get update && $as_root apt-get install -y chromium chromium-driver
fi

venv=${DEPUTY_TEST_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/security/requirements.txt
# databricks-langchain, for the tests of its classes: a lock installed without resolution (its file says why).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r tests/python/langchain-requirements.txt
# Every package the tests import is importable in the environment just made.
"$venv/bin/python" -c 'import databricks.sdk, databricks.vector_search, mlflow.pyfunc, openai, databricks_langchain, selenium'
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/deputy-agent-runtime/tests
# The attack suite and a short crash-safety run, each against its own fresh server.
DEPUTY_BIN="$target_dir/debug/deputy" "$venv/bin/python" tests/security/run.py
DEPUTY_BIN="$target_dir/debug/deputy" "$venv/bin/python" tests/security/crash.py --rounds 3
# The MCP conformance suite and the Node.js 22 it needs, as its package-lock.json says (test_mcp_conformance.py).
(cd tests/mcp-conformance && npm ci --no-audit --no-fund --silent)
DEPUTY_BIN="$target_dir/debug/deputy" PYTHON="$venv/bin/python" bash tests/python/run.sh

# The same suites again with the metadata on PostgreSQL, where replicas share one database: a throwaway server from
# Debian's packages (installed when missing) unless DEPUTY_TEST_POSTGRES_URL names one. The tests give every server
# and store a database of its own on it.
if [ -z "${DEPUTY_TEST_POSTGRES_URL:-}" ]; then
  postgres_dir=$(mktemp -d)
  trap 'scripts/postgres.sh stop "$postgres_dir"; rm -rf "$postgres_dir"' EXIT
  DEPUTY_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$postgres_dir")
fi
export DEPUTY_TEST_POSTGRES_URL
cargo test --workspace
DEPUTY_BIN="$target_dir/debug/deputy" "$venv/bin/python" tests/security/run.py
DEPUTY_BIN="$target_dir/debug/deputy" "$venv/bin/python" tests/security/crash.py --rounds 3
DEPUTY_BIN="$target_dir/debug/deputy" PYTHON="$venv/bin/python" bash tests/python/run.sh
