#!/usr/bin/env python3
"""Crash safety: acknowledged writes survive SIGKILL, and nothing is half-applied.

    DEPUTY_BIN=target/debug/deputy python tests/security/crash.py [--rounds N] [--seed S]

Each round starts `deputy serve` on the same data directory (and the same port, so JWTs stay valid), checks that
the state equals what the previous rounds acknowledged, then streams writes from three writers at once:
- SQL `INSERT INTO crash.s.t VALUES (k)` through `/api/2.0/sql/statements`;
- grant changes (add or remove SELECT for one of 40 users) through `/api/2.1/unity-catalog/permissions/...`;
- personal access token creation, then revocation of PATs and of exchanged JWTs through `/oidc/v1/revoke`;
and SIGKILLs the server at a random moment. Every writer has at most one request in flight; a request whose answer
did not arrive is "in flight" and may or may not have been applied, but never half: after the restart

    acknowledged <= present <= acknowledged + in flight

for the rows of the table (and no duplicates), the grants, the tokens that work and the tokens that are refused.
Prints one line per round and a summary line; exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Api, Server  # noqa: E402

USERS = [f"crash-user-{i:02d}@example.com" for i in range(40)]
TABLE = "crash.s.t"
TT_PAT = "urn:databricks:params:oauth:token-type:personal-access-token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


class Model:
    """What the server acknowledged, and what was in flight when it died."""

    def __init__(self):
        self.rows_acked: set[int] = set()
        self.rows_pending: set[int] = set()
        self.next_row = 0
        self.grants_acked: set[str] = set()
        self.grant_pending: tuple[str, bool] | None = None  # (user, add?)
        self.pats_live: dict[str, str] = {}  # value -> owner, acknowledged and not revoked
        self.pats_pending: set[str] = set()  # creation or revocation in flight: either state is fine
        self.revoked: set[str] = set()  # PATs and JWTs whose revocation was acknowledged
        self.parent: dict[str, str] = {}  # exchanged JWT -> the PAT it came from (revoking the PAT revokes it)
        self.jwts_live: set[str] = set()


class Writers:
    def __init__(self, api: Api, admin: str, warehouse: str, model: Model, rng: random.Random):
        self.api, self.admin, self.warehouse, self.model, self.rng = api, admin, warehouse, model, rng
        self.stop = threading.Event()
        self.counts = {"inserts": 0, "grants": 0, "pats": 0, "revocations": 0}
        self.errors: list[str] = []

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                   for f in (self.inserts, self.grants, self.tokens)]
        for thread in threads:
            thread.start()
        return threads

    def _guard(self, function):
        try:
            function()
        except Exception:  # the server was killed mid-request: expected, the pending op stays pending
            pass

    def inserts(self):
        m = self.model
        while not self.stop.is_set():
            k = m.next_row
            m.next_row += 1
            m.rows_pending.add(k)
            reply = self.api.sql(self.admin, self.warehouse, f"INSERT INTO {TABLE} VALUES ({k})")
            state = (reply.body or {}).get("status", {}).get("state")
            if reply.status == 200 and state == "SUCCEEDED":
                m.rows_pending.discard(k)
                m.rows_acked.add(k)
                self.counts["inserts"] += 1
            else:
                self.errors.append(f"insert {k}: {reply!r}")
                return

    def grants(self):
        m = self.model
        while not self.stop.is_set():
            user = self.rng.choice(USERS)
            add = user not in m.grants_acked
            m.grant_pending = (user, add)
            change = {"principal": user, ("add" if add else "remove"): ["SELECT"]}
            reply = self.api.patch(f"/api/2.1/unity-catalog/permissions/table/{TABLE}", self.admin,
                                   {"changes": [change]})
            if reply.status != 200:
                self.errors.append(f"grant {change}: {reply!r}")
                return
            (m.grants_acked.add if add else m.grants_acked.discard)(user)
            m.grant_pending = None
            self.counts["grants"] += 1

    def tokens(self):
        m = self.model
        while not self.stop.is_set():
            if m.pats_live and self.rng.random() < 0.4:
                value = self.rng.choice(sorted(m.pats_live))
                # Revocation cascades: the JWTs exchanged from this PAT are in flight with it.
                children = {jwt for jwt in m.jwts_live if m.parent.get(jwt) == value}
                m.jwts_live -= children
                m.pats_pending |= children | {value}
                del m.pats_live[value]
                reply = self.api.form("/oidc/v1/revoke", {"token": value})
                if reply.status != 200:
                    self.errors.append(f"revoke PAT: {reply!r}")
                    return
                m.pats_pending -= children | {value}
                m.revoked |= children | {value}
                self.counts["revocations"] += 1
            elif m.jwts_live and self.rng.random() < 0.3:
                value = m.jwts_live.pop()
                m.pats_pending.add(value)
                reply = self.api.form("/oidc/v1/revoke", {"token": value})
                if reply.status != 200:
                    self.errors.append(f"revoke JWT: {reply!r}")
                    return
                m.pats_pending.discard(value)
                m.revoked.add(value)
                self.counts["revocations"] += 1
            else:
                reply = self.api.post("/api/2.0/token/create", self.admin, {"comment": "crash", "lifetime_seconds": 7200})
                if reply.status != 200:
                    self.errors.append(f"create PAT: {reply!r}")
                    return
                value = reply.body["token_value"]
                m.pats_live[value] = "admin"
                self.counts["pats"] += 1
                exchanged = self.api.form("/oidc/v1/token", {"grant_type": EXCHANGE, "subject_token": value,
                                                              "subject_token_type": TT_PAT, "scope": "sql"})
                if exchanged.status == 200:
                    m.jwts_live.add(exchanged.body["access_token"])
                    m.parent[exchanged.body["access_token"]] = value


def verify(api: Api, admin: str, warehouse: str, m: Model) -> list[str]:
    """Everything acknowledged is there; anything else present was in flight; the pending sets are then resolved to
    what the server actually holds."""
    problems = []
    reply = api.sql(admin, warehouse, f"SELECT id FROM {TABLE}")
    if reply.status != 200 or reply.body["status"]["state"] != "SUCCEEDED":
        return [f"cannot read {TABLE}: {reply!r}"]
    ids = [int(row[0]) for row in (reply.body.get("result") or {}).get("data_array") or []]
    present = set(ids)
    if len(ids) != len(present):
        problems.append(f"duplicate rows: {sorted(i for i in present if ids.count(i) > 1)[:10]}")
    if missing := m.rows_acked - present:
        problems.append(f"acknowledged inserts lost: {sorted(missing)[:10]} ({len(missing)})")
    if extra := present - m.rows_acked - m.rows_pending:
        problems.append(f"rows never written: {sorted(extra)[:10]}")
    m.rows_acked = present & (m.rows_acked | m.rows_pending)
    m.rows_pending = set()

    reply = api.get(f"/api/2.1/unity-catalog/permissions/table/{TABLE}", admin)
    if reply.status != 200:
        return problems + [f"cannot read grants: {reply!r}"]
    granted = {a["principal"] for a in reply.body.get("privilege_assignments", []) if "SELECT" in a["privileges"]}
    allowed = {frozenset(m.grants_acked)}
    if m.grant_pending:
        user, add = m.grant_pending
        allowed.add(frozenset(m.grants_acked | {user}) if add else frozenset(m.grants_acked - {user}))
    if frozenset(granted) not in allowed:
        problems.append(f"grants {sorted(granted)} are neither the acknowledged state nor it plus the pending change "
                        f"{m.grant_pending}; acknowledged {sorted(m.grants_acked)}")
    m.grants_acked, m.grant_pending = set(granted), None

    for value in list(m.pats_live):
        if api.get("/api/2.0/preview/scim/v2/Me", value).status != 200:
            problems.append("an acknowledged PAT no longer works")
    for value in list(m.jwts_live):
        status = api.get("/api/2.0/preview/scim/v2/Me", value).status
        if status != 200:
            problems.append(f"an acknowledged, unrevoked JWT is refused ({status})")
    for value in m.revoked:
        reply = api.get("/api/2.0/preview/scim/v2/Me", value)
        if reply.status != 401:
            problems.append(f"a revoked token works again: {reply!r}")
    for value in list(m.pats_pending):
        works = api.get("/api/2.0/preview/scim/v2/Me", value).status == 200
        m.pats_pending.discard(value)
        if works:
            (m.pats_live.__setitem__(value, "admin") if value.startswith("dapi") else m.jwts_live.add(value))
        else:
            m.revoked.add(value)
    return problems


def setup(api: Api, admin: str) -> str:
    for user in USERS:
        reply = api.post("/api/2.0/preview/scim/v2/Users", admin, {"userName": user})
        assert reply.status == 200, reply
    warehouse = api.get("/api/2.0/sql/warehouses", admin).body["warehouses"][0]["id"]
    for statement in ["CREATE CATALOG crash", "CREATE SCHEMA crash.s", f"CREATE TABLE {TABLE} (id INT)"]:
        reply = api.sql(admin, warehouse, statement)
        assert reply.body["status"]["state"] == "SUCCEEDED", reply
    return warehouse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--min-delay", type=float, default=0.3, help="earliest kill, seconds after writes start")
    parser.add_argument("--max-delay", type=float, default=3.0, help="latest kill")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"crash test: {args.rounds} rounds, seed {seed}", flush=True)

    server = Server()
    model = Model()
    failures = 0
    totals = {"inserts": 0, "grants": 0, "pats": 0, "revocations": 0}
    try:
        server.start()
        admin = server.admin_token
        api = Api(server.host)
        warehouse = setup(api, admin)
        for round_number in range(1, args.rounds + 1):
            if round_number > 1:
                server.start(same_port=True)
                api = Api(server.host)
                problems = verify(api, admin, warehouse, model)
                if problems:
                    failures += 1
                    print(f"round {round_number - 1}: VIOLATION after restart:\n  " + "\n  ".join(problems), flush=True)
            writers = Writers(api, admin, warehouse, model, rng)
            threads = writers.run()
            delay = rng.uniform(args.min_delay, args.max_delay)
            time.sleep(delay)
            server.kill()
            writers.stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for key in totals:
                totals[key] += writers.counts[key]
            in_flight = len(model.rows_pending) + (model.grant_pending is not None) + len(model.pats_pending)
            print(f"round {round_number}: killed after {delay:.2f}s; acknowledged {writers.counts}; "
                  f"in flight {in_flight}" + (f"; writer errors {writers.errors[:2]}" if writers.errors else ""),
                  flush=True)
            if writers.errors:
                failures += 1
        server.start(same_port=True)
        api = Api(server.host)
        problems = verify(api, admin, warehouse, model)
        if problems:
            failures += 1
            print(f"round {args.rounds}: VIOLATION after restart:\n  " + "\n  ".join(problems), flush=True)
        code = server.stop()
        if code != 0:
            failures += 1
            print(f"SIGTERM exit code {code}")
        db = sqlite3.connect(server.data_dir / "metadata.db")
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        db.close()
        if integrity != "ok":
            failures += 1
            print(f"metadata.db integrity_check: {integrity}")
        rows = len(model.rows_acked)
    finally:
        if server.alive():
            server.kill()
        panics = [line for line in server.log().splitlines() if "panicked" in line]
        server.cleanup()
    if panics:
        failures += 1
        print("panics in the server log:\n  " + "\n  ".join(panics[:5]))
    print(f"crash test: {args.rounds} rounds, {failures} violations; acknowledged {totals}; "
          f"table holds {rows} rows; seed {seed}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
