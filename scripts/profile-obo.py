#!/usr/bin/env python3
"""Where an on-behalf-of invocation's CPU goes: instruction counts per request, repeatable on a noisy machine.

A release `deputy serve` runs under `valgrind --tool=callgrind` with instrumentation off while it is set up through
the public API (a user with a PAT, the trivial Rust agent of `deputy-load` with CAN_QUERY). Then, for on-behalf-of
on and off in turn: 50 warm-up invocations, counters zeroed, instrumentation on around N sequential invocations,
off, and the counters dumped as one file per phase. The agent's worker is another process and is not counted.

    cargo build --release -p deputy -p deputy-load
    python3 scripts/profile-obo.py [N]          # default 400; needs valgrind and `requests`
    callgrind_annotate --inclusive=yes OUT/deputy.out.1     # obo on; .2 is obo off (OUT is printed)
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import requests

N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
WARMUP = 50
root = pathlib.Path(__file__).resolve().parent.parent
release = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", root / "target")) / "release"
out = pathlib.Path(tempfile.mkdtemp(prefix="deputy-callgrind-"))
data = tempfile.mkdtemp(prefix="deputy-callgrind-data-")
port = 18555
host = f"http://127.0.0.1:{port}"


def callgrind_control(*args):
    subprocess.run(["callgrind_control", *args, str(server.pid)], check=True, capture_output=True)


server = subprocess.Popen(
    ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/deputy.out",
     str(release / "deputy"), "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
    env={**os.environ, "RUST_LOG": "warn"}, stdout=open(f"{data}/server.log", "w"), stderr=subprocess.STDOUT)
try:
    deadline = time.monotonic() + 300
    while True:
        try:
            if requests.get(host + "/healthz", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the server under callgrind did not answer /healthz (log: {data}/server.log)")
        time.sleep(0.5)
    admin = {"Authorization": "Bearer " + open(f"{data}/admin-token").read().strip()}

    def call(method, path, body=None):
        reply = requests.request(method, host + path, json=body, headers=admin, timeout=120)
        assert reply.ok, (path, reply.status_code, reply.text)
        return reply.json() if reply.text else {}

    user = call("POST", "/api/2.0/preview/scim/v2/Users", {"userName": "profile@example.com"})
    token = call("POST", "/api/2.0/token-management/on-behalf-of/tokens",
                 {"application_id": user["id"], "lifetime_seconds": 86400})["token_value"]
    call("POST", "/api/2.0/deputy/agents", {"name": "trivial", "source_path": str(release / "trivial-agent"),
                                           "user_scopes": ["iam.scim"], "workers": 1})
    endpoint = call("GET", "/api/2.0/serving-endpoints/trivial")
    call("PATCH", f"/api/2.0/permissions/serving-endpoints/{endpoint['id']}",
         {"access_control_list": [{"user_name": "profile@example.com", "permission_level": "CAN_QUERY"}]})
    session = requests.Session()
    as_user = {"Authorization": "Bearer " + token}
    body = {"messages": [{"role": "user", "content": "hi"}]}

    def invoke(count):
        for _ in range(count):
            reply = session.post(host + "/serving-endpoints/trivial/invocations", json=body, headers=as_user,
                                 timeout=120)
            assert reply.ok and "ok profile@example.com" in reply.text, reply.text

    for phase, obo in [("obo-on", True), ("obo-off", False)]:
        call("PATCH", "/api/2.0/deputy/settings", {"obo-enabled": obo})
        invoke(WARMUP)
        callgrind_control("-z")
        callgrind_control("-i", "on")
        invoke(N)
        callgrind_control("-i", "off")
        callgrind_control("-d", phase)
        print(f"{phase}: {N} invocations counted", flush=True)
finally:
    server.terminate()
    server.wait(timeout=120)
print(f"counts in {out}: deputy.out.1 (obo on), deputy.out.2 (obo off); divide by {N} for one invocation")
