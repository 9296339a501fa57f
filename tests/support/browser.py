"""A real headless Chromium driven over WebDriver with plain HTTP calls to chromedriver.

Debian's ``chromium`` and ``chromium-driver`` (``make tools``); nothing is downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import Process, free_port
from tests.support.tools import require

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1024"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Browser:
    """One WebDriver session. Every call has a timeout; errors raise with the reply."""

    def __init__(self) -> None:
        driver = require("chromedriver")
        binary = require("chromium")
        self._profile = tempfile.mkdtemp(prefix="redrive-chromium-")
        self.port = free_port()
        self._driver = Process([driver, f"--port={self.port}"], name="chromedriver")
        self._base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromedriver not ready:\n{self._driver.output()[-2000:]}")
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary,
                                   "args": [*CHROMIUM_FLAGS,
                                            f"--user-data-dir={self._profile}"]}}}}
        self.session = self._call("POST", "/session", caps, timeout=60)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            with exc:
                raise RuntimeError(f"webdriver {method} {path}: {exc.code} "
                                   f"{exc.read()[:500]!r}") from None

    def _session(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def source(self) -> str:
        return str(self._session("GET", "/source"))

    def find(self, css: str) -> str:
        return str(self._session("POST", "/element", {"using": "css selector",
                                                      "value": css})[ELEMENT])

    def click(self, css: str) -> None:
        self._session("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self._session("POST", f"/element/{self.find(css)}/value", {"text": text})

    def current_url(self) -> str:
        return str(self._session("GET", "/url"))

    def wait_for_text(self, text: str, timeout: float = 20, reload: bool = False) -> str:
        deadline = time.monotonic() + timeout
        while True:
            page = self.source()
            if text in page:
                return page
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not on the page within {timeout}s:\n"
                                   f"{page[:3000]}")
            time.sleep(0.3)
            if reload:
                self._session("POST", "/refresh", {})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._call("DELETE", f"/session/{self.session}", timeout=10)
        self._driver.stop()
        shutil.rmtree(self._profile, ignore_errors=True)
