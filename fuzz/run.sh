#!/usr/bin/env bash
# Runs every fuzz target for a fixed time and prints executions per target.
#
#   fuzz/run.sh [SECONDS]            # default 60 s per target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Works on the stable toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz
# passes nightly-only flags). No sanitizer: the crates under test forbid `unsafe`, so the targets look for panics,
# failed assertions (the properties), hangs and runaway memory, which libFuzzer catches on its own.
# Findings land in fuzz/artifacts/<target>/ and make the script exit non-zero; the corpus grows in fuzz/corpus/.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
targets=(token_verify token_mutate scope_parse token_exchange vector_filter agent_definition)

cargo fuzz build -s none >/dev/null
status=0
printf '%-16s %12s %10s %8s %s\n' target executions exec/s seconds findings
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target" "artifacts/$target"
  before=$(ls "artifacts/$target" | wc -l)
  log=$(mktemp)
  # -rss_limit_mb: no input (token, scope string, filter, MLmodel) may need much memory; -timeout: nor much time.
  if ! cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 >"$log" 2>&1; then
    status=1
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  runs="${runs:-0}"
  after=$(ls "artifacts/$target" | wc -l)
  findings=$((after - before))
  if [ "$findings" -gt 0 ]; then
    status=1
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2
  fi
  printf '%-16s %12s %10s %8s %s\n' "$target" "$runs" "$((runs / seconds))" "$seconds" "$findings"
  rm -f "$log"
done
exit "$status"
