"""A real browser for the web console's tests: headless Chromium driven by Selenium, one fresh profile per person.

Debian's `chromium` and `chromium-driver` packages are used as installed (`/usr/bin/chromium`, `/usr/bin/chromedriver`;
`CHROMIUM_BIN` / `CHROMEDRIVER_BIN` override them): the driver's path is given, so Selenium Manager never downloads
anything. Every wait is bounded, and a wait that times out fails with what the page showed.
"""

import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
WIDTH, HEIGHT = 1280, 900
MAX_SCREENSHOT_HEIGHT = 3000
WAIT_SECONDS = 30
# The offline machine's Chromium: no sandbox (root in a container), no network of its own (updates, sync, QUIC).
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--window-size={WIDTH},{HEIGHT}",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Browser:
    """One person's Chromium (its own temporary profile: no cookies shared with anyone else's)."""

    def __init__(self, host: str, person: str):
        for path in (CHROMIUM, CHROMEDRIVER):
            if not Path(path).is_file():
                pytest.fail(f"{path} is missing: the console tests need `apt-get install chromium chromium-driver`")
        self.host = host
        self.person = person
        self._profile = tempfile.mkdtemp(prefix=f"deputy-chromium-{person}-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        self.log_path = Path(self._profile) / "chromedriver.log"
        self.driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER, log_output=str(self.log_path)), options=options
        )
        # Asking the agent is one synchronous POST: the small model answers within seconds, a cold worker in more.
        self.driver.set_page_load_timeout(300)
        self.driver.set_script_timeout(30)

    def quit(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    # Navigation and reading.

    def url(self, path: str) -> str:
        return f"{self.host}{path}"

    def get(self, path: str):
        self.driver.get(self.url(path))

    @property
    def path(self) -> str:
        """The current URL's path and query, when it is on Deputy; the whole URL otherwise."""
        current = self.driver.current_url
        if current.startswith(self.host):
            return current[len(self.host):]
        return current

    def describe(self) -> str:
        """What the page shows, for failure messages."""
        try:
            body = self.driver.find_element(By.TAG_NAME, "body").text
        except Exception:  # noqa: BLE001 - diagnostics only
            body = self.driver.page_source
        return f"[{self.person} at {self.driver.current_url}] {body[:3000]}"

    def wait(self, condition, what: str, timeout: float = WAIT_SECONDS):
        """Waits (at most `timeout` s) until `condition(driver)` is truthy and returns its value; fails with the page."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)
        except TimeoutException:
            pytest.fail(f"waited {timeout} s for {what}; the page shows:\n{self.describe()}")

    def wait_for(self, css: str, what: str | None = None, timeout: float = WAIT_SECONDS):
        """The first element matching `css`, once present."""
        return self.wait(
            lambda driver: (driver.find_elements(By.CSS_SELECTOR, css) or [None])[0], what or css, timeout
        )

    def wait_for_path(self, prefix: str, timeout: float = WAIT_SECONDS):
        self.wait(lambda driver: self.path.startswith(prefix), f"a page under {prefix}", timeout)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, element) -> str:
        """All the element's text, shown or not (e.g. inside a closed <details>), with runs of blanks as one."""
        return " ".join((element.get_attribute("textContent") or "").split())

    def submit(self, form_css: str):
        """Presses the submit button of the form `form_css` (fails if there is none)."""
        form = self.wait_for(form_css)
        form.find_element(By.CSS_SELECTOR, "button[type=submit], button:not([type]), input[type=submit]").click()

    def fill(self, form_css: str, name: str, value: str):
        """Sets the field `name` of the form `form_css`, whether it is a text input, a textarea or a select."""
        field = self.wait_for(f'{form_css} [name="{name}"]', f"the field {name} of {form_css}")
        if field.tag_name.lower() == "select":
            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)

    # Session.

    def cookies(self) -> dict:
        return {cookie["name"]: cookie for cookie in self.driver.get_cookies()}

    def requests_session(self) -> requests.Session:
        """A `requests` session holding this browser's cookies (for looking at statuses and headers)."""
        session = requests.Session()
        for cookie in self.driver.get_cookies():
            session.cookies.set(cookie["name"], cookie["value"], path=cookie.get("path", "/"))
        return session

    def sign_in(self, login: str, password: str):
        """The console's sign-in as a person does it: the console's Sign in link, Deputy's authorization endpoint,
        the identity provider's login form, and back to the console's agents page."""
        self.get("/console/")
        self.wait_for("a#sign-in", "the console's Sign in link").click()
        field = self.wait_for("input[name=login]", "the identity provider's login form")
        field.clear()
        field.send_keys(login)
        self.find("input[name=password]").send_keys(password)
        self.submit("form:has(input[name=password])")
        self.wait_for_path("/console/agents")
        self.wait_for("span#whoami", "the signed-in user's name")

    # Pictures.

    def screenshot(self, directory: Path, name: str) -> Path:
        """A PNG of the whole page (the window grown to the page's height, up to a limit) at `directory/name.png`."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        height = self.driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)"
        )
        self.driver.set_window_size(WIDTH, min(max(HEIGHT, int(height or HEIGHT)), MAX_SCREENSHOT_HEIGHT))
        try:
            assert self.driver.save_screenshot(str(path)), f"no screenshot at {path}"
        finally:
            self.driver.set_window_size(WIDTH, HEIGHT)
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"{path} is not a PNG ({len(data)} bytes)"
        return path


def form_action_selector(form_class: str, action: str) -> str:
    """A CSS selector for `form.<form_class>` whose action ends with `action` (relative or absolute URLs)."""
    return f'form.{form_class}[action$="{action}"]'


def query(path: str, **params) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"
