"""A real headless browser for the integration tests (test_90_browser): Debian's chromium
driven by playwright-core through tests/browser/driver.mjs, a JSON-lines RPC. pytest keeps
the brokers, the bridge and the assertions; the page runs the real clients/js library.

    def test_x(browser):
        p = browser.page("p1", "http://app.test/t.html", html=TEST_PAGE)
        browser.eval("p1", "1 + 1")                 # -> 2
        browser.wait("p1", "T.count >= 3", 10)      # until true (or fail)

playwright-core comes from npm (`npm ci` in tests/browser, run by scripts/setup.sh), chromium
from Debian. Every call is bounded."""

import json
import os
import subprocess

import pytest

from lineproc import LineProcess

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.normpath(os.path.join(HERE, "..", "browser"))
DRIVER = os.path.join(BROWSER_DIR, "driver.mjs")
CHROMIUM = os.environ.get("WSB_CHROMIUM", "/usr/bin/chromium")


def _missing():
    if not os.path.exists(CHROMIUM):
        return "chromium not installed (%s)" % CHROMIUM
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "playwright-core not installed (run `npm ci` in tests/browser)"
    if subprocess.run(["sh", "-c", "command -v node"], capture_output=True).returncode != 0:
        return "node not installed"
    return None


class BrowserError(AssertionError):
    pass


class Browser(LineProcess):
    def __init__(self, log_path, timeout=30.0):
        super().__init__(["node", DRIVER], log_path, cwd=BROWSER_DIR)
        self._id = 0
        hello = self._read(timeout)
        if hello is None:
            self.close()
            raise BrowserError("the browser driver did not start within %.0fs:\n%s"
                               % (timeout, self.logs()))
        self.version = hello.get("value")

    def _read(self, timeout):
        line = self.readline(timeout)
        return None if line is None else json.loads(line)

    def call(self, cmd, timeout=20.0, **kw):
        assert self.proc.poll() is None, "browser driver exited:\n%s" % self.logs()
        self._id += 1
        req = dict(kw, id=self._id, cmd=cmd)
        self.send(json.dumps(req))
        ans = self._read(timeout)
        if ans is None:
            raise BrowserError("browser: no answer to %s within %.0fs" % (cmd, timeout))
        assert ans.get("id") == self._id, ans
        if not ans.get("ok"):
            raise BrowserError("browser %s failed: %s" % (cmd, ans.get("error")))
        return ans.get("value")

    def page(self, name, url, html=None, timeout=15.0):
        kw = {"page": name, "url": url, "ms": int(timeout * 1000)}
        if html is not None:
            kw["html"] = html
        self.call("open", timeout=timeout + 5, **kw)
        return name

    def eval(self, page, expr, timeout=20.0):
        return self.call("eval", timeout=timeout, page=page, expr=expr)

    def wait(self, page, expr, timeout=10.0, what=None):
        """Waits until the page expression is truthy; returns its value. On timeout fails
        with `what` and the page's state (`describe` below)."""
        try:
            return self.call("wait", timeout=timeout + 5, page=page, expr=expr,
                             ms=int(timeout * 1000))
        except BrowserError as e:
            raise BrowserError("%s\nwaiting for: %s\npage state: %s\npage errors: %s"
                               % (what or e, expr, self.describe(page), self.errors(page)))

    def describe(self, page):
        try:
            return self.eval(page, "JSON.stringify(window.T ? {states: T.states, "
                             "errors: T.errors, n: T.msgs.length} : "
                             "(window.wsbDemo ? {count: wsbDemo.count} : null))", timeout=5)
        except (BrowserError, AssertionError) as e:
            return "<%s>" % e

    def errors(self, page):
        return self.call("errors", page=page, timeout=5)

    def screenshot(self, page, path):
        return self.call("screenshot", page=page, path=str(path), timeout=20)

    def close_page(self, page):
        self.call("close", page=page, timeout=10)

    def quit(self):
        try:
            self.call("quit", timeout=10)
        except (BrowserError, AssertionError, OSError):
            pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless chromium for the module. Skipped locally when chromium/playwright-core
    are missing; under CI (CI=true) their absence fails instead (setup.sh installs them)."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (scripts/setup.sh installs it)")
        pytest.skip(why)
    b = Browser(tmp_path_factory.mktemp("browser") / "driver.stderr")
    yield b
    b.close()
