#!/usr/bin/env python3
"""Logs in through the real form in headless Chromium and checks that production cookies work.

scripts/docker-check runs this against the compose stack on http://localhost:PORT: the site
runs with APP_ENV=production, so its cookies are `Secure` and `__Host-` prefixed, which browsers
accept over plain HTTP on localhost only. A browser that dropped them would be sent back to
/login after logging in; this checks that it is not. WebDriver over plain HTTP to chromedriver,
with the standard library only.

Usage: browser-login.py BASE_URL EMAIL PASSWORD  (the account must exist)
Environment: CHROMEDRIVER, CHROMIUM (default: found on PATH).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# The flags of tests/api/browser.rs (CHROMIUM_ARGS): headless as root, and no attempt to reach
# the network beyond loopback, without which Chromium hangs on a machine with no way out.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
SESSION_COOKIE = "__Host-latchkey_session"


class CheckFailed(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response).get("value")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise CheckFailed(f"WebDriver {method} {path}: {error.code} {detail}") from None

    def start(self, chromium, profile):
        options = {"args": CHROMIUM_ARGS + [f"--user-data-dir={profile}"]}
        if chromium:
            options["binary"] = chromium
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = value["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def goto(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def url(self):
        return self.call("GET", self.s("/url"))

    def title(self):
        return self.call("GET", self.s("/title"))

    def source(self):
        return self.call("GET", self.s("/source"))

    def find(self, css):
        value = self.call("POST", self.s("/element"), {"using": "css selector", "value": css})
        return value[ELEMENT]

    def type(self, css, text):
        self.call("POST", self.s(f"/element/{self.find(css)}/value"), {"text": text})

    def click(self, css):
        self.call("POST", self.s(f"/element/{self.find(css)}/click"), {})

    def cookies(self):
        return self.call("GET", self.s("/cookie"))

    def wait_for_path(self, predicate, what, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.url()
            if predicate(current):
                return current
            time.sleep(0.2)
        raise CheckFailed(f"timed out waiting for {what}; the browser is at {self.url()}")

    def quit(self):
        if self.session:
            try:
                self.call("DELETE", self.s(""), timeout=20)
            except (CheckFailed, OSError):
                pass
            self.session = None


def check(driver, base, email, password):
    driver.goto(f"{base}/login")
    if not driver.title().startswith("Log in"):
        raise CheckFailed(f"/login shows {driver.title()!r}")
    driver.type("#email", email)
    driver.type("#password", password)
    driver.click('form[action="/login"] button[type="submit"]')
    landed = driver.wait_for_path(lambda u: "/login" not in u, "the login to leave /login")
    print(f"logged in through the form; landed on {landed}")

    session = [c for c in driver.cookies() if c.get("name") == SESSION_COOKIE]
    if not session:
        names = [c.get("name") for c in driver.cookies()]
        raise CheckFailed(f"the browser kept no {SESSION_COOKIE} cookie (it has {names})")
    cookie = session[0]
    if not cookie.get("secure") or not cookie.get("httpOnly"):
        raise CheckFailed(f"{SESSION_COOKIE} is not Secure and HttpOnly: {cookie}")
    print(f"{SESSION_COOKIE} kept by the browser: Secure, HttpOnly, SameSite={cookie.get('sameSite')}")

    driver.goto(f"{base}/account")
    current = driver.url()
    if not current.rstrip("/").endswith("/account") or email not in driver.source():
        raise CheckFailed(f"/account was not served to the logged-in browser (at {current})")
    print(f"/account served: {driver.title()!r} for {email}")

    driver.goto(f"{base}/logout")
    driver.click('form[action="/logout"] button[type="submit"]')
    driver.wait_for_path(lambda u: "logged_out=1" in u, "the logout to land on /?logged_out=1")
    driver.goto(f"{base}/account")
    if "/login" not in driver.url():
        raise CheckFailed(f"after logging out /account did not send the browser to /login ({driver.url()})")
    print("logged out through the form; /account now sends the browser to /login")


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base, email, password = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    chromedriver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromedriver:
        print("browser-login: chromedriver not found (apt-get install chromium-driver)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="latchkey-browser.") as tmp:
        port = free_port()
        log_path = os.path.join(tmp, "chromedriver.log")
        process = subprocess.Popen(
            [chromedriver, f"--port={port}", f"--log-path={log_path}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        driver = WebDriver(port)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if driver.call("GET", "/status", timeout=2).get("ready"):
                        break
                except (OSError, CheckFailed):
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed("chromedriver did not start")
                time.sleep(0.1)
            driver.start(chromium, os.path.join(tmp, "profile"))
            check(driver, base, email, password)
            return 0
        except (CheckFailed, OSError, KeyError) as error:
            print(f"browser-login: {error}", file=sys.stderr)
            try:
                with open(log_path, encoding="utf-8", errors="replace") as log:
                    print("chromedriver log (last lines):", *log.readlines()[-15:], sep="\n", file=sys.stderr)
            except OSError:
                pass
            return 1
        finally:
            driver.quit()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    sys.exit(main())
