"""The README's main job: `deputy demo --exit` on a fresh data directory builds the seed's scenario, asks the RAG
agent as alice, bob and carol, and shows the token path underneath. It runs here rather than among the Rust tests
because the demo's agent needs this venv's Python packages and the built-in models."""

import os
import re
import subprocess
import sys

from conftest import _deputy_binary, _server_environment


def test_the_demo_runs_end_to_end(tmp_path):
    environment = {**_server_environment(), "DEPUTY_AGENT_PYTHON": sys.executable}
    run = subprocess.run(
        [str(_deputy_binary()), "demo", "--exit", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        env=environment, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    sources = dict(re.findall(r"\n   (\w+)@example.com\n     answer: .*\n     sources: (.*)", out))
    assert "Falcon launch plan" in sources["alice"] and "Acme" not in sources["alice"], out
    assert "Acme renewal" in sources["bob"] and "Falcon" not in sources["bob"], out
    assert sources["carol"] == "none" and "retriever tool skipped: PermissionDenied" in out, out
    assert "scope = serving.serving-endpoints vectorsearch.vector-search-indexes" in out, out
    assert "PERMISSION_DENIED" in out and "access token has been revoked" in out, out
    assert os.path.isdir(tmp_path / "data" / "demo-rag-agent-model")
