"""The `sql-functions` category of the attack suite (loaded by `run.py`): Unity Catalog SQL functions that read tables.

The functions run with definer's rights (the owner's grants, the caller's row filters and column masks), so every
case here attacks the seam between the two: a caller without SELECT reads through a function and must see exactly its
own filtered rows and masked values; a function body may not read what its owner cannot, and a non-owner (or a MANAGE
holder) may not swap the body to read with the owner's rights; a caller's argument may not smuggle a subquery into
the owner's rights; `IDENTIFIER(:p)` takes a name and never SQL; a caller without EXECUTE is refused with the
privilege named, and a function it cannot see fails like a missing one.

The world lives in its own catalog `fnsec` (nothing another category uses is touched):

    fnsec.data.orders   (id, owner, amount, customer); row filter `mine`: owner = current_user() or an admin;
                        mask `hide` on customer: clear for the `analysts` group (alice), `X***` for everyone else
    fnsec.data.secrets  read by the admin only
    fnsec.fn.*          functions owned by bob, who may SELECT orders (not secrets) and CREATE FUNCTION in fnsec.fn;
                        alice and carol may use the catalog and fnsec.fn, neither may SELECT orders; alice may
                        EXECUTE every function of bob's, carol only `orders_over`
    fnsec.hidden.*      a schema carol cannot use
"""

from __future__ import annotations

import json
import types

from run import case, check

FUNCTIONS = "sql-functions"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
C = "fnsec"
ORDERS = f"{C}.data.orders"
SECRETS = f"{C}.data.secrets"
SECRET_MARK = "fn-secret-value-7c1e"
TOTAL = f"{C}.fn.total_over"  # scalar: a scalar subquery over orders
TOP = f"{C}.fn.top_customer"  # scalar over the masked column
ORDERS_OVER = f"{C}.fn.orders_over"  # table function
LOOKUP = f"{C}.fn.lookup"  # table function: orders of a given owner
ORDER_ROWS = [
    (1, ALICE, 100, "Acme"),
    (2, ALICE, 250, "Globex"),
    (3, BOB, 70, "Umbrella"),
    (4, CAROL, 999, "Stark"),
    (5, "nobody@example.com", 5000, "Wayne"),
]


# ---- helpers ---------------------------------------------------------------------------------------------------------

def _users(ctx):
    """Fresh PATs for alice, bob and carol (earlier categories revoke some of theirs), CAN_USE on the warehouse for
    each again (an earlier category replaces its ACL)."""
    if not hasattr(ctx, "_fn_users"):
        ctx.grant_warehouse()
        ctx._fn_users = types.SimpleNamespace(**{
            who: ctx.pat_for(f"{who}@example.com") for who in ("alice", "bob", "carol")})
    return ctx._fn_users


def _world(ctx):
    if getattr(ctx, "_fn_world", False):
        return _users(ctx)
    users = _users(ctx)
    rows = ", ".join(f"({i}, '{owner}', {amount}, '{customer}')" for i, owner, amount, customer in ORDER_ROWS)
    for statement in [
        f"CREATE CATALOG {C}",
        f"CREATE SCHEMA {C}.data",
        f"CREATE SCHEMA {C}.fn",
        f"CREATE SCHEMA {C}.hidden",
        f"CREATE TABLE {ORDERS} (id INT, owner STRING, amount INT, customer STRING)",
        f"INSERT INTO {ORDERS} VALUES {rows}",
        f"CREATE TABLE {SECRETS} (k STRING, v STRING)",
        f"INSERT INTO {SECRETS} VALUES ('key', '{SECRET_MARK}')",
        f"CREATE FUNCTION {C}.data.mine(owner STRING) RETURNS BOOLEAN "
        "RETURN owner = current_user() OR is_account_group_member('admins')",
        f"CREATE FUNCTION {C}.data.hide(customer STRING) RETURNS STRING "
        "RETURN CASE WHEN is_account_group_member('analysts') THEN customer "
        "ELSE concat(substr(customer, 1, 1), '***') END",
        f"ALTER TABLE {ORDERS} SET ROW FILTER {C}.data.mine ON (owner)",
        f"ALTER TABLE {ORDERS} ALTER COLUMN customer SET MASK {C}.data.hide",
        f"CREATE FUNCTION {C}.hidden.peek(x INT) RETURNS INT RETURN x + 1",
        f"GRANT USE CATALOG ON CATALOG {C} TO `{ALICE}`",
        f"GRANT USE CATALOG ON CATALOG {C} TO `{BOB}`",
        f"GRANT USE CATALOG ON CATALOG {C} TO `{CAROL}`",
        f"GRANT USE SCHEMA ON SCHEMA {C}.fn TO `{ALICE}`",
        f"GRANT USE SCHEMA ON SCHEMA {C}.fn TO `{CAROL}`",
        f"GRANT USE SCHEMA, CREATE FUNCTION ON SCHEMA {C}.fn TO `{BOB}`",
        f"GRANT USE SCHEMA ON SCHEMA {C}.data TO `{BOB}`",
        f"GRANT SELECT ON TABLE {ORDERS} TO `{BOB}`",
    ]:
        ctx.sql_ok(ctx.admin, statement)
    for statement in [
        f"CREATE FUNCTION {TOTAL}(min_amount INT) RETURNS INT "
        f"RETURN (SELECT CAST(sum(amount) AS INT) FROM {ORDERS} WHERE amount >= min_amount)",
        f"CREATE FUNCTION {TOP}(min_amount INT) RETURNS STRING "
        f"RETURN (SELECT max(customer) FROM {ORDERS} WHERE amount >= min_amount)",
        f"CREATE FUNCTION {ORDERS_OVER}(min_amount INT) RETURNS TABLE (id INT, customer STRING, amount INT) "
        f"RETURN SELECT id, customer, amount FROM {ORDERS} WHERE amount >= min_amount",
        f"CREATE FUNCTION {LOOKUP}(who STRING) RETURNS TABLE (id INT, owner STRING) "
        f"RETURN SELECT id, owner FROM {ORDERS} WHERE owner = who",
        *[f"GRANT EXECUTE ON FUNCTION {f} TO `{ALICE}`" for f in (TOTAL, TOP, ORDERS_OVER, LOOKUP)],
        f"GRANT EXECUTE ON FUNCTION {ORDERS_OVER} TO `{CAROL}`",
    ]:
        ctx.sql_ok(users.bob, statement)
    ctx._fn_world = True
    return users


def _status(ctx, token, statement, parameters=None) -> dict:
    """The statement's status, whatever it is; HTTP must be 200."""
    reply = ctx.sql(token, statement, parameters)
    check(reply.status == 200, f"{statement}: HTTP {reply!r}")
    return reply.body


def _refused(ctx, token, statement, error_code, phrase, parameters=None) -> dict:
    """The statement FAILED with `error_code` and `phrase` in its message, and no result came back."""
    body = _status(ctx, token, statement, parameters)
    status = body["status"]
    error = status.get("error") or {}
    check(status.get("state") == "FAILED" and error.get("error_code") == error_code
          and phrase.lower() in str(error.get("message", "")).lower(),
          f"{statement}\n    expected FAILED {error_code} containing {phrase!r}\n    got {json.dumps(body)[:800]}")
    check(not (body.get("result") or {}).get("data_array"), f"{statement}: data came with the refusal: {body}")
    return error


# ---- definer's rights, the caller's policies -------------------------------------------------------------------------

@case(FUNCTIONS, "control: a caller without SELECT reads only its own rows through bob's scalar functions")
def _(ctx):
    users = _world(ctx)
    _refused(ctx, users.alice, f"SELECT * FROM {ORDERS}", "NOT_FOUND", f"`{ORDERS}` cannot be found")
    # alice owns orders 1 and 2 (100 + 250); she is an analyst, so the mask shows her the customer in clear.
    check(ctx.sql_ok(users.alice, f"SELECT {TOTAL}(0)") == [["350"]], "alice's total")
    check(ctx.sql_ok(users.alice, f"SELECT {TOP}(0)") == [["Globex"]], "alice's top customer")
    # the owner's own call sees the owner's rows, masked (bob is no analyst): the policy follows the caller.
    check(ctx.sql_ok(users.bob, f"SELECT {TOTAL}(0), {TOP}(0)") == [["70", "U***"]], "bob's own call")


@case(FUNCTIONS, "a table function answers each caller with its own filtered rows and masked values")
def _(ctx):
    users = _world(ctx)
    statement = f"SELECT * FROM {ORDERS_OVER}(0) ORDER BY id"
    got = ctx.sql_ok(users.alice, statement)
    check(got == [["1", "Acme", "100"], ["2", "Globex", "250"]], f"alice: {got}")
    got = ctx.sql_ok(users.carol, statement)
    check(got == [["4", "S***", "999"]], f"carol (EXECUTE, no SELECT, no analyst): {got}")
    got = ctx.sql_ok(ctx.admin, f"SELECT count(*), max(customer) FROM {ORDERS_OVER}(0)")
    check(got == [["5", "W***"]], f"admin (every row, masked: no analyst): {got}")


@case(FUNCTIONS, "a predicate on the filtered column inside the body does not reach other users' rows")
def _(ctx):
    users = _world(ctx)
    for who in (CAROL, BOB, "nobody@example.com"):
        got = ctx.sql_ok(users.alice, f"SELECT * FROM {LOOKUP}('{who}')")
        check(got == [], f"alice looking up {who}: {got}")
        got = ctx.sql_ok(users.alice, f"SELECT * FROM {LOOKUP}(who => :w)", [{"name": "w", "value": who}])
        check(got == [], f"alice looking up {who} by a named parameter: {got}")
    got = ctx.sql_ok(users.alice, f"SELECT id FROM {LOOKUP}(:w) ORDER BY id", [{"name": "w", "value": ALICE}])
    check(got == [["1"], ["2"]], f"control: alice's own rows: {got}")


@case(FUNCTIONS, "an argument's subquery is planned with the caller's rights, never the owner's")
def _(ctx):
    users = _world(ctx)
    _refused(ctx, users.alice, f"SELECT * FROM {LOOKUP}((SELECT max(v) FROM {SECRETS}))", "NOT_FOUND",
             f"`{SECRETS}` cannot be found")
    _refused(ctx, users.alice, f"SELECT {TOTAL}((SELECT max(amount) FROM {ORDERS}))", "NOT_FOUND",
             f"`{ORDERS}` cannot be found")
    _refused(ctx, users.carol, f"SELECT * FROM {ORDERS_OVER}((SELECT min(amount) FROM {ORDERS}))", "NOT_FOUND",
             f"`{ORDERS}` cannot be found")


@case(FUNCTIONS, "EXPLAIN of a call shows the body over the guarded scan and no data")
def _(ctx):
    users = _world(ctx)
    text = json.dumps(ctx.sql_ok(users.alice, f"EXPLAIN SELECT * FROM {ORDERS_OVER}(0)"))
    check("DeputyPolicyExec" in text, f"no policy node under the inlined body: {text[:600]}")
    for value in ("Stark", "Wayne", "Umbrella", SECRET_MARK):
        check(value not in text, f"the plan shows {value!r}")


# ---- who may create and replace ------------------------------------------------------------------------------------

@case(FUNCTIONS, "a body reading a table its owner cannot read is refused at creation, like a missing table")
def _(ctx):
    users = _world(ctx)
    for name, body in [
        ("steal_scalar", f"(x INT) RETURNS STRING RETURN (SELECT max(v) FROM {SECRETS})"),
        ("steal_table", f"(x INT) RETURNS TABLE (k STRING, v STRING) RETURN SELECT k, v FROM {SECRETS}"),
        ("steal_exists", f"(x INT) RETURNS BOOLEAN RETURN EXISTS (SELECT 1 FROM {SECRETS} WHERE v LIKE 'fn-%')"),
    ]:
        error = _refused(ctx, users.bob, f"CREATE FUNCTION {C}.fn.{name}{body}", "NOT_FOUND",
                         f"the table or view `{SECRETS}` cannot be found")
        missing = _refused(ctx, users.bob, f"CREATE FUNCTION {C}.fn.{name}{body}".replace(SECRETS, f"{C}.data.nothing"),
                           "NOT_FOUND", "cannot be found")
        check(error["message"].replace("secrets", "X") == missing["message"].replace("nothing", "X"),
              f"hidden and missing tables differ: {error} vs {missing}")
        _refused(ctx, users.bob, f"SELECT {C}.fn.{name}(1)", "NOT_FOUND", "cannot be found")


@case(FUNCTIONS, "a non-owner cannot CREATE OR REPLACE someone else's function; the body is unchanged")
def _(ctx):
    users = _world(ctx)
    for token in (users.alice, users.carol):
        _refused(ctx, token, f"CREATE OR REPLACE FUNCTION {ORDERS_OVER}(min_amount INT) "
                             "RETURNS TABLE (id INT, customer STRING, amount INT) RETURN SELECT 1, 'x', 2",
                 "PERMISSION_DENIED", f"only the owner of function `{ORDERS_OVER}` may replace it")
        _refused(ctx, token, f"CREATE OR REPLACE FUNCTION {TOTAL}(min_amount INT) RETURNS INT RETURN 1",
                 "PERMISSION_DENIED", f"only the owner of function `{TOTAL}` may replace it")
    check(ctx.sql_ok(users.alice, f"SELECT {TOTAL}(0)") == [["350"]], "the scalar body changed")
    got = ctx.sql_ok(users.carol, f"SELECT * FROM {ORDERS_OVER}(0)")
    check(got == [["4", "S***", "999"]], f"the table body changed: {got}")


@case(FUNCTIONS, "CREATE OR REPLACE of a function in a schema the caller cannot see answers like a missing one")
def _(ctx):
    users = _world(ctx)
    hidden = _status(ctx, users.carol, f"CREATE OR REPLACE FUNCTION {C}.hidden.peek(x INT) RETURNS INT RETURN 1")
    missing = _status(ctx, users.carol, f"CREATE OR REPLACE FUNCTION {C}.hidden.nothing(x INT) RETURNS INT RETURN 1")
    check(hidden["status"]["state"] == missing["status"]["state"] == "FAILED", f"{hidden} / {missing}")
    check(hidden["status"]["error"]["message"].replace("peek", "X") ==
          missing["status"]["error"]["message"].replace("nothing", "X"),
          "a hidden function's existence shows: "
          f"{hidden['status']['error']} vs {missing['status']['error']}")


@case(FUNCTIONS, "MANAGE on a function does not let its holder read with the owner's rights (replace body)")
def _(ctx):
    users = _world(ctx)
    name = f"{C}.fn.admin_managed"
    ctx.sql_ok(ctx.admin, f"CREATE FUNCTION {name}(x INT) RETURNS INT RETURN x + 1")
    ctx.sql_ok(ctx.admin, f"GRANT EXECUTE, MANAGE ON FUNCTION {name} TO `{BOB}`")
    check(ctx.sql_ok(users.bob, f"SELECT {name}(1)") == [["2"]], "control: bob calls the admin's function")
    replaced = _status(ctx, users.bob,
                       f"CREATE OR REPLACE FUNCTION {name}(x INT) RETURNS STRING RETURN (SELECT max(v) FROM {SECRETS})")
    called = _status(ctx, users.bob, f"SELECT {name}(1)")
    check(SECRET_MARK not in json.dumps(called),
          f"bob (MANAGE + EXECUTE, no SELECT on {SECRETS}) replaced the body and read the admin's table:\n"
          f"    replace -> {replaced['status']}\n    call -> {called['status']}, "
          f"data {(called.get('result') or {}).get('data_array')}")
    check(replaced["status"]["state"] == "FAILED", f"the replace with the owner's rights went through: {replaced}")


@case(FUNCTIONS, "giving a function away (owner -> admin) and replacing it does not read with the new owner's rights")
def _(ctx):
    users = _world(ctx)
    name = f"{C}.fn.gift"
    ctx.sql_ok(users.bob, f"CREATE FUNCTION {name}(x INT) RETURNS INT RETURN x")
    steps = [("grant MANAGE to himself", _status(ctx, users.bob, f"GRANT MANAGE ON FUNCTION {name} TO `{BOB}`"))]
    reply = ctx.api.patch(f"/api/2.1/unity-catalog/functions/{name}", users.bob, {"owner": "admin"})
    steps.append(("PATCH owner=admin", {"http": reply.status, "owner": reply.get("owner")}))
    steps.append(("replace", _status(ctx, users.bob, f"CREATE OR REPLACE FUNCTION {name}(x INT) RETURNS STRING "
                                                     f"RETURN (SELECT max(v) FROM {SECRETS})")))
    steps.append(("grant EXECUTE to himself",
                  _status(ctx, users.bob, f"GRANT EXECUTE ON FUNCTION {name} TO `{BOB}`")))
    called = _status(ctx, users.bob, f"SELECT {name}(1)")
    steps.append(("call", called))
    check(SECRET_MARK not in json.dumps(called),
          f"bob read {SECRETS} (which he may not SELECT) through a function he gave to the admin:\n" +
          "\n".join(f"    {label}: {json.dumps(step.get('status', step))[:300]}" for label, step in steps) +
          f"\n    data: {(called.get('result') or {}).get('data_array')}")


# ---- carol without EXECUTE, IDENTIFIER(), scopes ---------------------------------------------------------------------

@case(FUNCTIONS, "carol without EXECUTE is refused naming the privilege; a hidden schema's function is not found")
def _(ctx):
    users = _world(ctx)
    for statement, name in [(f"SELECT {TOTAL}(0)", TOTAL), (f"SELECT {TOP}(0)", TOP),
                            (f"SELECT * FROM {LOOKUP}('{CAROL}')", LOOKUP),
                            (f"SELECT count(*) FROM (SELECT {TOTAL}(0) AS t) x", TOTAL),
                            (f"WITH c AS (SELECT * FROM {LOOKUP}('x')) SELECT count(*) FROM c", LOOKUP)]:
        _refused(ctx, users.carol, statement, "PERMISSION_DENIED",
                 f"[INSUFFICIENT_PERMISSIONS] EXECUTE on function `{name}` is required")
    _refused(ctx, users.carol, "SELECT IDENTIFIER(:f)(0)", "PERMISSION_DENIED",
             f"EXECUTE on function `{TOTAL}` is required", [{"name": "f", "value": TOTAL}])
    for statement in [f"SELECT {C}.hidden.peek(1)", f"SELECT * FROM {C}.hidden.peek(1)"]:
        hidden = _refused(ctx, users.carol, statement, "NOT_FOUND", f"the function `{C}.hidden.peek` cannot be found")
        missing = _refused(ctx, users.carol, statement.replace("peek", "nothing"), "NOT_FOUND", "cannot be found")
        check(hidden["message"].replace("peek", "X") == missing["message"].replace("nothing", "X"),
              f"hidden and missing functions differ: {hidden} vs {missing}")


INJECTED_NAMES = [
    f"{TOTAL}(1); DROP TABLE {ORDERS}",
    f"{TOTAL}(0) UNION SELECT v FROM {SECRETS} --",
    "a.b.c.d",
    f"{C}.fn.total over",
    f"{C}.fn.`total_over`",
    "`x`",
    f"{TOTAL})(0); --",
    f"{C}.fn.total_over\n",
    "",
    "fnsec..total_over",
    "fnsec.fn.tоtal_over",  # Cyrillic o
]


@case(FUNCTIONS, "IDENTIFIER(:p) with injected values is refused with INVALID_PARAMETER_VALUE and changes nothing")
def _(ctx):
    users = _world(ctx)
    check(ctx.sql_ok(users.alice, "SELECT IDENTIFIER(:f)(0)", [{"name": "f", "value": TOTAL}]) == [["350"]],
          "control: IDENTIFIER(:f) names the scalar function")
    got = ctx.sql_ok(users.alice, "SELECT id FROM IDENTIFIER(:f)(0) ORDER BY id", [{"name": "f", "value": ORDERS_OVER}])
    check(got == [["1"], ["2"]], f"control: IDENTIFIER(:f) names the table function: {got}")
    for value in INJECTED_NAMES:
        shown = value.replace("\n", "")
        for statement in ["SELECT IDENTIFIER(:f)(0)", "SELECT * FROM IDENTIFIER(:f)(0)"]:
            error = _refused(ctx, users.alice, statement, "BAD_REQUEST", "is not a name IDENTIFIER() accepts",
                             [{"name": "f", "value": value}])
            check(error["message"].startswith("[INVALID_PARAMETER_VALUE]"), f"{value!r}: {error}")
            check(shown[:20] in error["message"].replace("\n", ""), f"{value!r}: the message does not show it: {error}")
    _refused(ctx, users.alice, f"SELECT IDENTIFIER('{TOTAL}(1); DROP TABLE {ORDERS}')(0)", "BAD_REQUEST",
             "is not a name IDENTIFIER() accepts")
    _refused(ctx, users.alice, "SELECT IDENTIFIER(:missing)(0)", "BAD_REQUEST", "no value for parameter `missing`",
             [{"name": "f", "value": TOTAL}])
    check(ctx.sql_ok(ctx.admin, f"SELECT count(*) FROM {ORDERS}") == [["5"]], "orders damaged")
    check(ctx.sql_ok(ctx.admin, f"SELECT count(*) FROM {SECRETS}") == [["1"]], "secrets damaged")
    check(ctx.sql_ok(users.alice, f"SELECT {TOTAL}(0)") == [["350"]], "the function changed")


@case(FUNCTIONS, "IDENTIFIER(:p) naming a table the caller cannot read answers like a missing table")
def _(ctx):
    users = _world(ctx)
    _refused(ctx, users.alice, "SELECT * FROM IDENTIFIER(:t)", "NOT_FOUND", f"`{ORDERS}` cannot be found",
             [{"name": "t", "value": ORDERS}])
    _refused(ctx, users.alice, "SELECT * FROM IDENTIFIER(:t)", "NOT_FOUND", f"`{SECRETS}` cannot be found",
             [{"name": "t", "value": SECRETS}])
