"""The README's main job: `deputy demo --exit` on a fresh data directory builds the seed's scenario, asks the RAG
agent as alice, bob and carol, and shows the token path underneath, with the default (relative) data directory. It runs here rather than among the Rust tests
because the demo's agent needs this venv's Python packages and the built-in models."""

import os
import subprocess
import sys

from conftest import _database_arguments, _deputy_binary, _server_environment
from demo_output import check_walkthrough


def test_the_demo_runs_end_to_end(tmp_path):
    environment = {**_server_environment(), "DEPUTY_AGENT_PYTHON": sys.executable}
    run = subprocess.run(
        [str(_deputy_binary()), "demo", "--exit", "--listen", "127.0.0.1:0", *_database_arguments()],
        env=environment, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    check_walkthrough(run.stdout)
    # The default data directory is relative (./deputy-data): the demo and the server resolve it against the
    # working directory, so deploying the agent from it works.
    assert os.path.isdir(tmp_path / "deputy-data" / "demo-rag-agent-model")
