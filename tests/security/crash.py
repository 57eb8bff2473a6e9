#!/usr/bin/env python3
"""Crash safety: acknowledged writes survive SIGKILL, and nothing is half-applied.

    DEPUTY_BIN=target/debug/deputy python tests/security/crash.py [--rounds N] [--seed S]

Each round starts `deputy serve` on the same data directory (and the same port, so JWTs stay valid), checks that
the state equals what the previous rounds acknowledged, then streams writes from three writers at once:
- SQL `INSERT INTO crash.s.t VALUES (k)` through `/api/2.0/sql/statements`;
- grant changes (add or remove SELECT for one of 40 users) through `/api/2.1/unity-catalog/permissions/...`;
- personal access token creation, then revocation of PATs and of exchanged JWTs through `/oidc/v1/revoke`;
- vector upserts and deletes on a direct-access index through `/api/2.0/vector-search/indexes/.../upsert-data`;
- audit writes: requests made with a delegated token (an exchanged JWT naming an actor), each audited under its
  token's `jti` before the answer leaves;
and SIGKILLs the server at a random moment. Every writer has at most one request in flight; a request whose answer
did not arrive is "in flight" and may or may not have been applied, but never half: after the restart

    acknowledged <= present <= acknowledged + in flight

for the rows of the table (and no duplicates), the grants, the tokens that work and the tokens that are refused, the
index's rows (present, with the vector last written), and the audit events.
Prints one line per round and a summary line; exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Api, Server  # noqa: E402

USERS = [f"crash-user-{i:02d}@example.com" for i in range(40)]
TABLE = "crash.s.t"
INDEX = "crash.s.vectors"
AGENT = "crash-agent"
TT_PAT = "urn:databricks:params:oauth:token-type:personal-access-token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
COUNTED = ("inserts", "grants", "pats", "revocations", "vectors", "audited")


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
        self.vectors_acked: dict[str, float] = {}  # primary key -> the x of its vector [x, 1, 0]
        self.vector_pending: tuple[str, float | None] | None = None  # (key, new x or None for a delete)
        self.audited_acked: set[str] = set()  # jti of delegated requests whose answer arrived
        self.audited_pending: str | None = None


class Writers:
    def __init__(self, api: Api, admin: str, warehouse: str, actor: str, model: Model, rng: random.Random):
        self.api, self.admin, self.warehouse, self.actor, self.model, self.rng = api, admin, warehouse, actor, model, rng
        self.stop = threading.Event()
        self.counts = dict.fromkeys(COUNTED, 0)
        self.errors: list[str] = []

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                   for f in (self.inserts, self.grants, self.tokens, self.vectors, self.audited)]
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


    def vectors(self):
        m = self.model
        while not self.stop.is_set():
            key = f"k{self.rng.randrange(30)}"
            if key in m.vectors_acked and self.rng.random() < 0.3:
                m.vector_pending = (key, None)
                reply = self.api.post(f"/api/2.0/vector-search/indexes/{INDEX}/delete-data", self.admin,
                                      {"primary_keys": [key]})
            else:
                x = round(self.rng.random(), 4)
                m.vector_pending = (key, x)
                reply = self.api.post(f"/api/2.0/vector-search/indexes/{INDEX}/upsert-data", self.admin,
                                      {"inputs_json": json.dumps([{"id": key, "vec": [x, 1.0, 0.0]}])})
            if reply.status != 200 or (reply.body or {}).get("status") != "SUCCESS":
                self.errors.append(f"vector write {m.vector_pending}: {reply!r}")
                return
            key, x = m.vector_pending
            if x is None:
                m.vectors_acked.pop(key, None)
            else:
                m.vectors_acked[key] = x
            m.vector_pending = None
            self.counts["vectors"] += 1

    def audited(self):
        m = self.model
        while not self.stop.is_set():
            exchanged = self.api.form("/oidc/v1/token", {
                "grant_type": EXCHANGE, "subject_token": self.admin, "subject_token_type": TT_PAT,
                "actor_token": self.actor, "actor_token_type": TT_JWT, "scope": "iam.scim"})
            if exchanged.status != 200:
                self.errors.append(f"exchange for the audit writer: {exchanged!r}")
                return
            token = exchanged.body["access_token"]
            m.audited_pending = jti_of(token)
            reply = self.api.get("/api/2.0/preview/scim/v2/Me", token)
            if reply.status != 200:
                self.errors.append(f"delegated request: {reply!r}")
                return
            m.audited_acked.add(m.audited_pending)
            m.audited_pending = None
            self.counts["audited"] += 1


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


def verify_vectors(api: Api, admin: str, m: Model) -> list[str]:
    reply = api.post(f"/api/2.0/vector-search/indexes/{INDEX}/scan", admin, {"num_results": 1000})
    if reply.status != 200:
        return [f"cannot scan {INDEX}: {reply!r}"]
    present = {}
    for row in reply.body.get("data") or []:
        fields = {field["key"]: field["value"] for field in row["fields"]}
        vector = fields["vec"]["list_value"]["values"]
        present[fields["id"]["string_value"]] = round(vector[0]["number_value"], 4)
    allowed = [dict(m.vectors_acked)]
    if m.vector_pending:
        key, x = m.vector_pending
        after = dict(m.vectors_acked)
        if x is None:
            after.pop(key, None)
        else:
            after[key] = x
        allowed.append(after)
    problems = []
    if present not in allowed:
        lost = {k: v for k, v in m.vectors_acked.items() if present.get(k) != v}
        problems.append(f"index rows are neither the acknowledged state nor it plus the pending write "
                        f"{m.vector_pending}; differing: {dict(list(lost.items())[:5])}")
    m.vectors_acked, m.vector_pending = present, None
    return problems


def verify_audit(api: Api, admin: str, m: Model) -> list[str]:
    seen, after = set(), 0
    while True:
        reply = api.get(f"/api/2.0/deputy/audit?after={after}&limit=1000", admin)
        if reply.status != 200:
            return [f"cannot read the audit log: {reply!r}"]
        events = reply.body["events"]
        seen |= {event["request_id"] for event in events if event["api"] == "GET /api/2.0/preview/scim/v2/Me"}
        if len(events) < 1000:
            break
        after = reply.body["last_seq"]
    problems = []
    if missing := m.audited_acked - seen:
        problems.append(f"answered delegated requests missing from the audit log: {len(missing)}")
    m.audited_pending = None
    return problems


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
    return problems + verify_vectors(api, admin, m) + verify_audit(api, admin, m)


def integrity_problems(server: Server) -> list[str]:
    """What the metadata database's own check finds wrong once the server is stopped: SQLite's integrity check of
    the file or, on PostgreSQL (whose server only lost its client, never crashed itself), amcheck's check of every
    table and B-tree index of the server's database."""
    if server.database_url is None:
        return [message for (message,) in server.sql("PRAGMA integrity_check") if message != "ok"]
    server.sql("CREATE EXTENSION IF NOT EXISTS amcheck")
    found = server.sql("SELECT c.relname || ': ' || v.msg FROM pg_class c, verify_heapam(c.oid) v "
                       "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace")
    # bt_index_parent_check raises at the first damaged index (the whole tree, and that every row is in it).
    server.sql("SELECT bt_index_parent_check(c.oid, true) FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
               "WHERE c.relkind = 'i' AND a.amname = 'btree' AND c.relnamespace = 'public'::regnamespace")
    return [message for (message,) in found]


def setup(api: Api, admin: str) -> tuple[str, str]:
    """The users, the table, the vector index, and an agent's access token (the actor of the delegated requests)."""
    for user in USERS:
        reply = api.post("/api/2.0/preview/scim/v2/Users", admin, {"userName": user})
        assert reply.status == 200, reply
    warehouse = api.get("/api/2.0/sql/warehouses", admin).body["warehouses"][0]["id"]
    for statement in ["CREATE CATALOG crash", "CREATE SCHEMA crash.s", f"CREATE TABLE {TABLE} (id INT)"]:
        reply = api.sql(admin, warehouse, statement)
        assert reply.body["status"]["state"] == "SUCCEEDED", reply
    reply = api.post("/api/2.0/vector-search/endpoints", admin, {"name": "crash", "endpoint_type": "STANDARD"})
    assert reply.status == 200, reply
    reply = api.post("/api/2.0/vector-search/indexes", admin, {
        "name": INDEX, "endpoint_name": "crash", "primary_key": "id", "index_type": "DIRECT_ACCESS",
        "direct_access_index_spec": {
            "embedding_vector_columns": [{"name": "vec", "embedding_dimension": 3}],
            "schema_json": json.dumps({"id": "string", "vec": "array<float>"}),
        }})
    assert reply.status == 200, reply
    principal = api.post("/api/2.0/preview/scim/v2/ServicePrincipals", admin, {"displayName": AGENT}).body
    secret = api.post(f"/api/2.0/accounts/servicePrincipals/{principal['id']}/credentials/secrets", admin,
                      {"lifetime": "86400s"}).body["secret"]
    token = api.form("/oidc/v1/token", {"grant_type": "client_credentials", "scope": "all-apis",
                                         "client_id": principal["applicationId"], "client_secret": secret})
    assert token.status == 200, token
    return warehouse, token.body["access_token"]


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
    totals = dict.fromkeys(COUNTED, 0)
    try:
        server.start()
        admin = server.admin_token
        api = Api(server.host)
        warehouse, actor = setup(api, admin)
        for round_number in range(1, args.rounds + 1):
            if round_number > 1:
                server.start(same_port=True)
                api = Api(server.host)
                problems = verify(api, admin, warehouse, model)
                if problems:
                    failures += 1
                    print(f"round {round_number - 1}: VIOLATION after restart:\n  " + "\n  ".join(problems), flush=True)
            writers = Writers(api, admin, warehouse, actor, model, rng)
            threads = writers.run()
            delay = rng.uniform(args.min_delay, args.max_delay)
            time.sleep(delay)
            server.kill()
            writers.stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for key in totals:
                totals[key] += writers.counts[key]
            in_flight = (len(model.rows_pending) + (model.grant_pending is not None) + len(model.pats_pending)
                         + (model.vector_pending is not None) + (model.audited_pending is not None))
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
        if damage := integrity_problems(server):
            failures += 1
            print("metadata integrity check:\n  " + "\n  ".join(damage[:10]))
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
