"""What the README's walkthrough must print: alice's answer grounded in engineering's documents, bob's in sales', carol
answered without documents because she may not read the index, the token path (narrowed scopes, revocation), and the
web console's address with each demo user's password.

Used by test_demo.py and, on the output of `./scripts/demo.sh --exit` in a fresh clone, by .ci/run:

    python3 tests/python/demo_output.py OUTPUT_FILE
"""

import re
import sys


def check_walkthrough(out: str) -> None:
    sources = dict(re.findall(r"\n   (\w+)@example.com\n     answer: .*\n     sources: (.*)", out))
    assert {"alice", "bob", "carol"} <= sources.keys(), out
    assert "Falcon launch plan" in sources["alice"] and "Acme" not in sources["alice"], out
    assert "Acme renewal" in sources["bob"] and "Falcon" not in sources["bob"], out
    assert sources["carol"] == "none" and "document search skipped: PermissionDenied" in out, out
    assert "scope = serving.serving-endpoints vectorsearch.vector-search-indexes" in out, out
    assert "PERMISSION_DENIED" in out and "access token has been revoked" in out, out
    assert re.search(r"\n== The web console: http://\S+/console/\n", out), out
    for user in ("alice", "bob", "carol"):
        assert re.search(rf"\n     {user}@example.com +[A-Za-z0-9_-]{{20}}\n", out), out


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as output:
        check_walkthrough(output.read())
    print("the walkthrough printed what the README promises")
