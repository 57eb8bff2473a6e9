"""Plays the person at the browser for a client that opens one (`BROWSER` names a program that runs this file):
Python's `webbrowser` (the Databricks SDK's external-browser login) runs it with the authorization URL.

It returns at once, because the client only starts listening for the redirect after the browser program exits; a
detached child then follows the sign-in through Deputy and the test identity provider (submitting the provider's
login form as `PLAY_BROWSER_LOGIN` / `PLAY_BROWSER_PASSWORD`) up to the redirect to the client's loopback address,
and delivers that redirect once the client listens. The client's address is `PLAY_BROWSER_CLIENT` (default: the
SDK's `http://localhost:8020`). What the child saw goes to `PLAY_BROWSER_LOG` if set.
"""

import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idp import sign_in  # noqa: E402

DELIVERY_TIMEOUT_SECONDS = 30
SDK_REDIRECT = "http://localhost:8020"


def _log(line: str) -> None:
    path = os.environ.get("PLAY_BROWSER_LOG")
    if path:
        with open(path, "a") as log:
            log.write(line + "\n")


def play(url: str) -> None:
    session = requests.Session()
    response = sign_in(
        session,
        url,
        os.environ["PLAY_BROWSER_LOGIN"],
        os.environ["PLAY_BROWSER_PASSWORD"],
        stop_at=os.environ.get("PLAY_BROWSER_CLIENT", SDK_REDIRECT),
    )
    if not response.is_redirect:
        _log(f"stopped at {response.status_code} {response.url}: {response.text[:2000]}")
        return
    target = urllib.parse.urljoin(response.url, response.headers["Location"])
    _log(f"redirected to {target}")
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while True:
        try:
            delivered = session.get(target, timeout=10)
            _log(f"delivered: {delivered.status_code}")
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                _log("the client never listened")
                return
            time.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        play(sys.argv[2])
    else:
        subprocess.Popen(
            [sys.executable, __file__, "--child", sys.argv[-1]],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
