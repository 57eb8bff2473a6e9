"""The `sql-functions` category of the attack suite (loaded by `run.py`): Unity Catalog SQL functions that read tables.

The functions run with definer's rights (the owner's grants, the caller's row filters and column masks), so every
case here attacks the seam between the two: a caller without SELECT reads through a function and must see exactly its
own filtered rows and masked values; a function body may not read what its owner cannot, and a non-owner (or a MANAGE
holder) may not swap the body to read with the owner's rights; a caller's argument may not smuggle a subquery into
the owner's rights; `IDENTIFIER(:p)` takes a name and never SQL; a caller without EXECUTE is refused with the
privilege named, and a function it cannot see fails like a missing one. Failing closed: a row filter or mask
whose body reads data (replaced by its owner, or attached) fails every read of its table; a stored spec that does not
parse, or whose body was changed behind the server's back (`StoredSpec`), fails the call, still with the owner's
rights; cycles and chains past the nesting bound are refused with a clear error; a token without the SQL scope
cannot reach a function through the statement API.

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

from run import StoredSpec, case, check, expect_api_error, stored_spec

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
MINE = f"{C}.data.mine"  # the row filter on orders
HIDE = f"{C}.data.hide"  # the mask on orders.customer
MINE_SIGNATURE = f"{MINE}(owner STRING) RETURNS BOOLEAN"
MINE_BODY = "owner = current_user() OR is_account_group_member('admins')"
HIDE_SIGNATURE = f"{HIDE}(customer STRING) RETURNS STRING"
HIDE_BODY = ("CASE WHEN is_account_group_member('analysts') THEN customer "
             "ELSE concat(substr(customer, 1, 1), '***') END")
ORDER_ROWS = [
    (1, ALICE, 100, "Acme"),
    (2, ALICE, 250, "Globex"),
    (3, BOB, 70, "Umbrella"),
    (4, CAROL, 999, "Stark"),
    (5, "nobody@example.com", 5000, "Wayne"),
]


# ---- helpers ---------------------------------------------------------------------------------------------------------

def _users(ctx):
    return ctx.fresh_users("sql-functions")


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
        f"CREATE FUNCTION {MINE_SIGNATURE} RETURN {MINE_BODY}",
        f"CREATE FUNCTION {HIDE_SIGNATURE} RETURN {HIDE_BODY}",
        f"ALTER TABLE {ORDERS} SET ROW FILTER {MINE} ON (owner)",
        f"ALTER TABLE {ORDERS} ALTER COLUMN customer SET MASK {HIDE}",
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


# ---- policies that read data, stored specs that do not parse or were changed behind the server's back ---------------

PROTECTED = [customer for *_, customer in ORDER_ROWS] + [SECRET_MARK]
READS_DATA = "reads data; a row filter or column mask must be an expression over its arguments"


def _fails_closed(ctx, token, statement, error_code, phrase, parameters=None) -> dict:
    """`_refused`, and no protected value (a customer, the secret) anywhere in the reply."""
    body = _status(ctx, token, statement, parameters)
    error = _refused(ctx, token, statement, error_code, phrase, parameters)
    text = json.dumps(body)
    for value in PROTECTED:
        check(value not in text, f"{statement}: {value!r} came back with the refusal: {text[:800]}")
    return error


def _reads_of_orders(ctx, users):
    """Every way of reading orders the suite's users have: bob directly (SELECT), alice and carol through bob's
    functions (EXECUTE only), the admin directly."""
    return [
        ("bob", users.bob, f"SELECT * FROM {ORDERS}"),
        ("bob", users.bob, f"SELECT count(*) FROM {ORDERS}"),
        ("bob", users.bob, f"SELECT id, customer FROM {ORDERS} WHERE owner <> current_user()"),
        ("alice", users.alice, f"SELECT {TOTAL}(0), {TOP}(0)"),
        ("alice", users.alice, f"SELECT * FROM {ORDERS_OVER}(0)"),
        ("carol", users.carol, f"SELECT * FROM {ORDERS_OVER}(0)"),
        ("admin", ctx.admin, f"SELECT * FROM {ORDERS}"),
    ]


def _orders_as_before(ctx, users):
    check(ctx.sql_ok(users.bob, f"SELECT * FROM {ORDERS}") == [["3", BOB, "70", "U***"]], "bob's row after restore")
    check(ctx.sql_ok(users.alice, f"SELECT {TOTAL}(0), {TOP}(0)") == [["350", "Globex"]], "alice's call after restore")
    got = ctx.sql_ok(users.carol, f"SELECT * FROM {ORDERS_OVER}(0)")
    check(got == [["4", "S***", "999"]], f"carol's call after restore: {got}")


def _edited_spec(ctx, full_name: str, **changes) -> str:
    """The stored spec of `full_name` (JSON) with `changes` applied, for `StoredSpec`."""
    spec = json.loads(stored_spec(ctx.server, full_name))
    check(all(key in spec for key in changes), f"{full_name}: the stored spec has no {list(changes)}: {spec}")
    spec.update(changes)
    return json.dumps(spec)


@case(FUNCTIONS, "a row filter or mask replaced by its owner with a body that reads a table fails every read, "
                 "never returns rows")
def _(ctx):
    users = _world(ctx)
    for name, signature, body, reading in [
        (MINE, MINE_SIGNATURE, MINE_BODY, f"EXISTS (SELECT 1 FROM {SECRETS} WHERE k = owner)"),
        (MINE, MINE_SIGNATURE, MINE_BODY, f"owner IN (SELECT owner FROM {ORDERS})"),
        (MINE, MINE_SIGNATURE, MINE_BODY, f"{HIDE}(owner) IS NOT NULL"),  # calls a function, which may change
        (HIDE, HIDE_SIGNATURE, HIDE_BODY, f"(SELECT max(v) FROM {SECRETS})"),
        (HIDE, HIDE_SIGNATURE, HIDE_BODY, f"CASE WHEN EXISTS (SELECT 1 FROM {SECRETS}) THEN customer END"),
    ]:
        # the owner (the admin) may replace its own function with a body it can read; the table keeps the policy
        try:
            ctx.sql_ok(ctx.admin, f"CREATE OR REPLACE FUNCTION {signature} RETURN {reading}")
            for _who, token, statement in _reads_of_orders(ctx, users):
                _fails_closed(ctx, token, statement, "BAD_REQUEST", f"`{name}` {READS_DATA}")
        finally:
            ctx.sql_ok(ctx.admin, f"CREATE OR REPLACE FUNCTION {signature} RETURN {body}")
    _orders_as_before(ctx, users)


@case(FUNCTIONS, "a function that reads data (or calls another function) cannot be attached as a row filter or mask")
def _(ctx):
    users = _world(ctx)
    ledger = f"{C}.data.ledger"
    for statement in [
        f"CREATE TABLE {ledger} (owner STRING, note STRING)",
        f"INSERT INTO {ledger} VALUES ('{ALICE}', 'a-note'), ('{CAROL}', 'c-note')",
        f"CREATE FUNCTION {C}.data.reads_exists(owner STRING) RETURNS BOOLEAN "
        f"RETURN EXISTS (SELECT 1 FROM {SECRETS} WHERE k = owner)",
        f"CREATE FUNCTION {C}.data.reads_in(owner STRING) RETURNS BOOLEAN "
        f"RETURN owner IN (SELECT owner FROM {ORDERS})",
        f"CREATE FUNCTION {C}.data.reads_scalar(note STRING) RETURNS STRING RETURN (SELECT max(v) FROM {SECRETS})",
        f"CREATE FUNCTION {C}.data.calls_mine(owner STRING) RETURNS BOOLEAN RETURN {MINE}(owner)",
        f"CREATE FUNCTION {C}.data.calls_hide(note STRING) RETURNS STRING RETURN {HIDE}(note)",
        f"GRANT USE SCHEMA ON SCHEMA {C}.data TO `{ALICE}`",
        f"GRANT SELECT ON TABLE {ledger} TO `{ALICE}`",
    ]:
        ctx.sql_ok(ctx.admin, statement)
    for function in ("reads_exists", "reads_in", "calls_mine", "reads_scalar"):
        _refused(ctx, ctx.admin, f"ALTER TABLE {ledger} SET ROW FILTER {C}.data.{function} ON (owner)",
                 "BAD_REQUEST", f"`{C}.data.{function}` {READS_DATA}")
    for function in ("reads_scalar", "calls_hide", "reads_exists"):
        _refused(ctx, ctx.admin, f"ALTER TABLE {ledger} ALTER COLUMN note SET MASK {C}.data.{function}",
                 "BAD_REQUEST", f"`{C}.data.{function}` {READS_DATA}")
    # a table function (bob's, reading orders) is no row filter either
    _refused(ctx, ctx.admin, f"ALTER TABLE {ledger} SET ROW FILTER {ORDERS_OVER} ON (owner)", "BAD_REQUEST",
             f"`{ORDERS_OVER}` {READS_DATA}")
    described = expect_ok_table(ctx, ledger)
    check(not described.get("row_filter"), f"a refused row filter was attached: {described.get('row_filter')}")
    check(not any(column.get("mask") for column in described.get("columns", [])),
          f"a refused mask was attached: {described.get('columns')}")
    got = ctx.sql_ok(users.alice, f"SELECT owner, note FROM {ledger} ORDER BY owner")
    check(got == [[ALICE, "a-note"], [CAROL, "c-note"]], f"the ledger after the refused policies: {got}")


def expect_ok_table(ctx, full_name: str) -> dict:
    reply = ctx.api.get(f"/api/2.1/unity-catalog/tables/{full_name}", ctx.admin)
    check(reply.status == 200, f"GET table {full_name}: {reply!r}")
    return reply.body


GARBAGE_SPECS = ["{not json", "[]", "null", '{"routine_definition": 5}', ""]


@case(FUNCTIONS, "a function whose stored spec does not parse fails the call (INTERNAL_ERROR) and returns nothing")
def _(ctx):
    users = _world(ctx)
    twice = f"{C}.fn.total_twice"
    ctx.sql_ok(users.bob, f"CREATE FUNCTION {twice}(x INT) RETURNS INT RETURN {TOTAL}(x) * 2")
    ctx.sql_ok(users.bob, f"GRANT EXECUTE ON FUNCTION {twice} TO `{ALICE}`")
    check(ctx.sql_ok(users.alice, f"SELECT {twice}(0)") == [["700"]], "control: alice calls total_twice")
    for garbage in GARBAGE_SPECS:
        with StoredSpec(ctx, TOTAL, garbage):
            for token in (users.alice, users.bob):
                _fails_closed(ctx, token, f"SELECT {TOTAL}(0)", "INTERNAL_ERROR", "failed inside the engine")
                _fails_closed(ctx, token, "SELECT IDENTIFIER(:f)(0)", "INTERNAL_ERROR", "failed inside the engine",
                              [{"name": "f", "value": TOTAL}])
            # and so does a function whose body calls it
            _fails_closed(ctx, users.alice, f"SELECT {twice}(0)", "INTERNAL_ERROR", "failed inside the engine")
            check(ctx.server.healthy(), f"the server stopped answering with {TOTAL}'s spec {garbage!r}")
        with StoredSpec(ctx, ORDERS_OVER, garbage):
            for token in (users.alice, users.carol, ctx.admin):
                _fails_closed(ctx, token, f"SELECT * FROM {ORDERS_OVER}(0)", "INTERNAL_ERROR",
                              "failed inside the engine")
                _fails_closed(ctx, token, f"SELECT count(*) FROM {ORDERS_OVER}(0)", "INTERNAL_ERROR",
                              "failed inside the engine")
            check(ctx.server.healthy(), f"the server stopped answering with {ORDERS_OVER}'s spec {garbage!r}")
    check(ctx.sql_ok(users.alice, f"SELECT {twice}(0)") == [["700"]], "total_twice after restore")
    _orders_as_before(ctx, users)


@case(FUNCTIONS, "a table whose row filter's or mask's stored spec does not parse refuses every read, never rows")
def _(ctx):
    users = _world(ctx)
    for name in (MINE, HIDE):
        for garbage in GARBAGE_SPECS:
            with StoredSpec(ctx, name, garbage):
                for who, token, statement in _reads_of_orders(ctx, users):
                    _fails_closed(ctx, token, statement, "INTERNAL_ERROR", "failed inside the engine")
                check(ctx.server.healthy(), f"the server stopped answering with {name}'s spec {garbage!r}")
    _orders_as_before(ctx, users)


@case(FUNCTIONS, "a stored body changed behind the server's back runs with the owner's rights: "
                 "what the owner cannot read fails like a missing table")
def _(ctx):
    users = _world(ctx)
    migrated = f"{C}.fn.migrated"
    ctx.sql_ok(users.bob, f"CREATE FUNCTION {migrated}(x INT) RETURNS STRING "
                          f"RETURN (SELECT max(customer) FROM {ORDERS} WHERE amount >= x)")
    ctx.sql_ok(users.bob, f"GRANT EXECUTE ON FUNCTION {migrated} TO `{ALICE}`")
    check(ctx.sql_ok(users.alice, f"SELECT {migrated}(0)") == [["Globex"]], "control: alice calls bob's function")
    for function, statement, body in [
        (migrated, f"SELECT {migrated}(0)", f"(SELECT max(v) FROM {SECRETS})"),
        (migrated, f"SELECT {migrated}(0)", f"(SELECT max(v) FROM {SECRETS} WHERE v LIKE 'fn-%')"),
        (migrated, f"SELECT {migrated}(0)", f"CAST(EXISTS (SELECT 1 FROM {SECRETS}) AS STRING)"),
        (ORDERS_OVER, f"SELECT * FROM {ORDERS_OVER}(0)", f"SELECT 1 AS id, v AS customer, 2 AS amount FROM {SECRETS}"),
        (ORDERS_OVER, f"SELECT * FROM {ORDERS_OVER}(0)",
         f"SELECT id, customer, amount FROM {ORDERS} WHERE EXISTS (SELECT 1 FROM {SECRETS})"),
    ]:
        hidden = _edited_spec(ctx, function, routine_definition=body)
        missing = _edited_spec(ctx, function, routine_definition=body.replace(SECRETS, f"{C}.data.nothing"))
        for token in (users.alice, users.bob, ctx.admin):  # the admin may read secrets, but bob owns the function
            with StoredSpec(ctx, function, hidden):
                error = _fails_closed(ctx, token, statement, "NOT_FOUND",
                                      f"the table or view `{SECRETS}` cannot be found")
            with StoredSpec(ctx, function, missing):
                absent = _fails_closed(ctx, token, statement, "NOT_FOUND", "cannot be found")
            check(error["message"].replace("secrets", "X") == absent["message"].replace("nothing", "X"),
                  f"{body}: an unreadable and a missing table differ: {error} vs {absent}")
    check(ctx.sql_ok(users.alice, f"SELECT {migrated}(0)") == [["Globex"]], "the restored body")
    _orders_as_before(ctx, users)


# ---- cycles, nesting -------------------------------------------------------------------------------------------------

CALLS_ITSELF = "calls itself"


@case(FUNCTIONS, "a cycle closed by CREATE OR REPLACE is refused at replace time; the bodies are unchanged")
def _(ctx):
    users = _world(ctx)
    f, g = f"{C}.fn.cyc_f", f"{C}.fn.cyc_g"
    tf, tg = f"{C}.fn.cyc_tf", f"{C}.fn.cyc_tg"
    rows, count = f"{C}.fn.cyc_rows", f"{C}.fn.cyc_count"
    for statement in [
        f"CREATE FUNCTION {g}(x INT) RETURNS INT RETURN x + 1",
        f"CREATE FUNCTION {f}(x INT) RETURNS INT RETURN {g}(x) * 2",
        f"CREATE FUNCTION {tg}(x INT) RETURNS TABLE (y INT) RETURN SELECT x AS y",
        f"CREATE FUNCTION {tf}(x INT) RETURNS TABLE (y INT) RETURN SELECT y FROM {tg}(x)",
        f"CREATE FUNCTION {rows}() RETURNS TABLE (x BIGINT) RETURN SELECT 1 AS x",
        f"CREATE FUNCTION {count}() RETURNS BIGINT RETURN (SELECT count(*) FROM {rows}())",
    ]:
        ctx.sql_ok(users.bob, statement)
    expected = [(f"SELECT {f}(1), {g}(1)", [["4", "2"]]), (f"SELECT * FROM {tf}(1)", [["1"]]),
                (f"SELECT {count}(), (SELECT count(*) FROM {rows}())", [["1", "1"]])]
    for statement, rows_expected in expected:
        check(ctx.sql_ok(users.bob, statement) == rows_expected, f"control: {statement}")
    for statement, closing in [
        (f"CREATE OR REPLACE FUNCTION {g}(x INT) RETURNS INT RETURN {f}(x) + 1", f"function `{g}` {CALLS_ITSELF}"),
        (f"CREATE OR REPLACE FUNCTION {g}(x INT) RETURNS INT RETURN {g}(x - 1) + 1", f"function `{g}` {CALLS_ITSELF}"),
        (f"CREATE OR REPLACE FUNCTION {tg}(x INT) RETURNS TABLE (y INT) RETURN SELECT y + 1 AS y FROM {tf}(x)",
         f"function `{tg}` {CALLS_ITSELF}"),
        (f"CREATE OR REPLACE FUNCTION {rows}() RETURNS TABLE (x BIGINT) RETURN SELECT {count}() AS x",
         f"function `{rows}` {CALLS_ITSELF}"),
    ]:
        error = _refused(ctx, users.bob, statement, "BAD_REQUEST", closing)
        check(error["message"].startswith("[ANALYSIS_ERROR]"), f"{statement}: {error}")
    for statement, rows_expected in expected:
        got = ctx.sql_ok(users.bob, statement)
        check(got == rows_expected, f"a refused replace changed a body: {statement} -> {got}")
    check(ctx.server.healthy(), "the server stopped answering")


@case(FUNCTIONS, "a cycle planted in the store behind the server's back fails the call, never hangs or crashes")
def _(ctx):
    users = _world(ctx)
    f, g = f"{C}.fn.planted_f", f"{C}.fn.planted_g"
    tf, tg = f"{C}.fn.planted_tf", f"{C}.fn.planted_tg"
    for statement in [
        f"CREATE FUNCTION {g}(x INT) RETURNS INT RETURN x + 1",
        f"CREATE FUNCTION {f}(x INT) RETURNS INT RETURN {g}(x) * 2",
        f"CREATE FUNCTION {tg}(x INT) RETURNS TABLE (y INT) RETURN SELECT x AS y",
        f"CREATE FUNCTION {tf}(x INT) RETURNS TABLE (y INT) RETURN SELECT y FROM {tg}(x)",
        f"GRANT EXECUTE ON FUNCTION {f} TO `{ALICE}`",
        f"GRANT EXECUTE ON FUNCTION {tf} TO `{ALICE}`",
    ]:
        ctx.sql_ok(users.bob, statement)
    for function, body, calls in [
        (g, f"{f}(x) + 1", [(users.bob, f"SELECT {f}(1)"), (users.bob, f"SELECT {g}(1)"),
                            (users.alice, f"SELECT {f}(1)")]),
        (g, f"{g}(x) + 1", [(users.bob, f"SELECT {g}(1)"), (users.bob, f"SELECT {f}(1)")]),
        (tg, f"SELECT y + 1 AS y FROM {tf}(x)", [(users.bob, f"SELECT * FROM {tf}(1)"),
                                                 (users.bob, f"SELECT * FROM {tg}(1)"),
                                                 (users.alice, f"SELECT * FROM {tf}(1)")]),
    ]:
        with StoredSpec(ctx, function, _edited_spec(ctx, function, routine_definition=body)):
            for token, call in calls:
                _refused(ctx, token, call, "BAD_REQUEST", CALLS_ITSELF)
        check(ctx.server.healthy(), f"the server stopped answering after the planted cycle through {function}")
    check(ctx.sql_ok(users.bob, f"SELECT {f}(1), {g}(1)") == [["4", "2"]], "the restored bodies")
    check(ctx.sql_ok(users.alice, f"SELECT * FROM {tf}(1)") == [["1"]], "the restored table bodies")


NESTING = "nests views and functions more than"


def _chain(ctx, token, create, levels=10):
    """Creates level 0 .. `levels` with `create(level)`; returns (deepest created level, the refusal's error or None).
    A refusal must be the nesting bound, past a few levels."""
    for level in range(levels + 1):
        body = _status(ctx, token, create(level))
        if body["status"]["state"] != "SUCCEEDED":
            error = body["status"].get("error") or {}
            check(error.get("error_code") == "BAD_REQUEST" and NESTING in error.get("message", ""),
                  f"level {level} refused with something else than the nesting bound: {body['status']}")
            check(level > 3, f"level {level} refused already: {error}")
            return level - 1, error
    return levels, None


@case(FUNCTIONS, "a chain of 10 nested functions stops at the nesting bound with a clear error, not a crash")
def _(ctx):
    users = _world(ctx)
    scalar = lambda level: f"{C}.fn.nest{level}"  # noqa: E731
    table = lambda level: f"{C}.fn.tnest{level}"  # noqa: E731
    deepest, error = _chain(ctx, users.bob, lambda level: (
        f"CREATE FUNCTION {scalar(0)}() RETURNS INT RETURN 0" if level == 0 else
        f"CREATE FUNCTION {scalar(level)}() RETURNS INT RETURN {scalar(level - 1)}() + 1"))
    check(error is not None, f"10 nested scalar functions were all created; calling the last must fail instead")
    check(ctx.sql_ok(users.bob, f"SELECT {scalar(3)}(), {scalar(deepest)}()") == [["3", str(deepest)]],
          "the chain below the bound works")
    for level in range(deepest + 1, 11):
        _refused(ctx, users.bob, f"SELECT {scalar(level)}()", "NOT_FOUND", f"`{scalar(level)}` cannot be found")
    tdeepest, terror = _chain(ctx, users.bob, lambda level: (
        f"CREATE FUNCTION {table(0)}(x INT) RETURNS TABLE (y INT) RETURN SELECT x AS y" if level == 0 else
        f"CREATE FUNCTION {table(level)}(x INT) RETURNS TABLE (y INT) "
        f"RETURN SELECT y + 1 AS y FROM {table(level - 1)}(x)"))
    check(terror is not None, "10 nested table functions were all created")
    got = ctx.sql_ok(users.bob, f"SELECT * FROM {table(tdeepest)}(0)")
    check(got == [[str(tdeepest)]], f"the table chain below the bound: {got}")
    # deeper than the bound at call time, without a cycle: the bottom of the chain, replaced behind the server's
    # back, calls the top of a second, separate chain of the same length
    other = lambda level: f"{C}.fn.nest_b{level}"  # noqa: E731
    for level in range(deepest + 1):
        ctx.sql_ok(users.bob, f"CREATE FUNCTION {other(0)}() RETURNS INT RETURN 0" if level == 0 else
                   f"CREATE FUNCTION {other(level)}() RETURNS INT RETURN {other(level - 1)}() + 1")
    with StoredSpec(ctx, scalar(0), _edited_spec(ctx, scalar(0), routine_definition=f"{other(deepest)}()")):
        for call in (f"SELECT {scalar(deepest)}()", f"SELECT {scalar(deepest)}() FROM {ORDERS_OVER}(0)"):
            _refused(ctx, users.bob, call, "BAD_REQUEST", NESTING)
    check(ctx.sql_ok(users.bob, f"SELECT {scalar(deepest)}()") == [[str(deepest)]], "the restored chain")
    check(ctx.server.healthy(), "the server stopped answering after the chains")


# ---- scopes ---------------------------------------------------------------------------------------------------------

@case(FUNCTIONS, "a token without the SQL scope cannot call a function through the statement API (403, scope named)")
def _(ctx):
    _world(ctx)
    tokens = {f"PAT {scopes}": ctx.pat_for(ALICE, scopes=scopes)
              for scopes in (["catalog.functions"], ["unity-catalog"], ["sql.warehouses"], ["mcp.functions"],
                             ["mcp.sql"], ["catalog.functions", "catalog.tables", "sql.warehouses"])}
    tokens["JWT catalog.functions"] = ctx.jwt(ctx.pat_for(ALICE), scope="catalog.functions")
    for label, token in tokens.items():
        for statement, parameters in [(f"SELECT {TOTAL}(0)", None), (f"SELECT * FROM {ORDERS_OVER}(0)", None),
                                      ("SELECT IDENTIFIER(:f)(0)", [{"name": "f", "value": TOTAL}])]:
            reply = ctx.sql(token, statement, parameters)
            expect_api_error(reply, 403, "PERMISSION_DENIED",
                             "does not hold the API scope `sql.statement-execution`")
            check("350" not in json.dumps(reply.body) and "Acme" not in json.dumps(reply.body),
                  f"{label}: data with the refusal: {reply!r}")
    check(ctx.sql_ok(ctx.pat_for(ALICE, scopes=["sql"]), f"SELECT {TOTAL}(0)") == [["350"]],
          "control: a `sql` token calls the function")
