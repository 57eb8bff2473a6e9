"""Requests/s and latency of a trivial ChatAgent through the worker protocol (what the Rust supervisor sees).

    python bench_worker.py [--requests 2000] [--warmup 100] [--model tests/agents/trivial_chat_agent.py]

Starts `python -m deputy_agent_runtime` with the serving environment, sends requests one at a time (as the
supervisor does) with a fresh user token each, and times send -> result line. Prints startup time, requests/s,
p50/p90/p99/max latency. Bounded: stops after --requests requests.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def percentile(sorted_values, p):
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--stream", action="store_true", help="streaming requests (time to done)")
    parser.add_argument("--model", default=os.path.join(HERE, "tests", "agents", "trivial_chat_agent.py"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as creds:
        with open(os.path.join(creds, "model-dependencies-oauth-token"), "w") as f:
            json.dump({"OAUTH_TOKEN": [{"oauthTokenValue": "system-token-bench"}]}, f)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": creds,
            "PYTHONPATH": HERE,
            "IS_IN_DB_MODEL_SERVING_ENV": "true",
            "DATABRICKS_MODEL_SERVING_HOST_URL": "http://127.0.0.1:9",
            "SERVING_CREDENTIALS_DIR": creds,
        }
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "deputy_agent_runtime", "--model", os.path.abspath(args.model)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=creds,
        )
        ready = json.loads(proc.stdout.readline())
        startup = time.perf_counter() - start
        assert ready["type"] == "ready", ready
        terminal = ("done", "error") if args.stream else ("result", "error")

        def one(i):
            line = json.dumps(
                {
                    "id": f"b{i}",
                    "stream": args.stream,
                    "payload": {"messages": [{"role": "user", "content": "hi"}]},
                    "user_token": f"user-token-{i:08d}",
                    "user_id": "bench@example.com",
                }
            )
            t0 = time.perf_counter()
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            while True:
                reply = json.loads(proc.stdout.readline())
                if reply["type"] in terminal:
                    break
            elapsed = time.perf_counter() - t0
            if reply["type"] == "error":
                raise SystemExit(f"request failed: {reply}")
            return elapsed

        for i in range(args.warmup):
            one(-1 - i)
        latencies = []
        t_all = time.perf_counter()
        for i in range(args.requests):
            latencies.append(one(i))
        total = time.perf_counter() - t_all
        proc.stdin.close()
        proc.wait(timeout=30)

    latencies.sort()
    ms = lambda s: f"{s * 1000:.3f} ms"  # noqa: E731
    print(f"worker: flavor={ready['flavor']} python={ready['python']} mlflow={ready['mlflow']} stream={args.stream}")
    print(f"startup to ready: {startup:.2f} s")
    print(f"requests: {args.requests} sequential (after {args.warmup} warm-up) in {total:.2f} s")
    print(f"throughput: {args.requests / total:.0f} requests/s")
    print(
        f"latency: p50 {ms(percentile(latencies, 50))}  p90 {ms(percentile(latencies, 90))}  "
        f"p99 {ms(percentile(latencies, 99))}  max {ms(latencies[-1])}  mean {ms(statistics.fmean(latencies))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
