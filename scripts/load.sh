#!/usr/bin/env bash
# Load and soak: builds the release server, the load generator and the whoami agent, then drives a fresh
# `deputy serve` on 127.0.0.1 with many users at once (agent invocations, SQL, vector queries, token creation) and
# checks every answer. Arguments go to the generator, e.g. `scripts/load.sh --duration-secs 600` for a 10-minute
# soak, or `--database postgres://HOST/FRESH_NAME --replicas 2 [--kill-replica-after-secs 10]` for replicas sharing
# a PostgreSQL database; `--help` lists them. Exits non-zero on any isolation failure or lost acknowledged write.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p deputy -p deputy-load
cargo build --release -p deputy-sdk --example whoami_agent
exec "$target/release/deputy-load" "$@"
