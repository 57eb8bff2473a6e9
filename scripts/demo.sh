#!/usr/bin/env bash
# The main job on a fresh machine: build Deputy, start it on ./deputy-data at 127.0.0.1:8080, walk through the
# on-behalf-of token path, and leave the server running (Ctrl-C stops it). Extra arguments go to `deputy demo`,
# e.g. `--exit` to stop after the walkthrough or `--listen 127.0.0.1:9090`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -p deputy
exec "${CARGO_TARGET_DIR:-$root/target}/release/deputy" demo "$@"
