"""Headless Chromium driven over the DevTools protocol: the page as a user's browser renders it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Iterator

import httpx

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,4000",
]  # tall: lists render only the rows in view


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws, self.n = ws, 0

    def call(self, method: str, **params: Any) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def text(self) -> str:
        return self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True
        )["result"].get("value", "")

    def open(self, url: str, *expected: str, timeout: float = 60) -> str:
        """Navigate and wait until every expected text shows (real time: the UI polls its API)."""
        self.call("Page.navigate", url=url)
        return self.wait(url, *expected, timeout=timeout)

    def click(self, label: str, *expected: str, timeout: float = 60) -> str:
        """Click the tab / button / link labelled `label`, then wait for the expected texts."""
        js = (
            "(() => { const e = [...document.querySelectorAll('button, [role=tab], a, li')]"
            f".find(e => e.innerText && e.innerText.trim() === {json.dumps(label)});"
            " if (e) { e.click(); return true; } return false; })()"
        )
        deadline = time.monotonic() + timeout
        while not self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get("value"):
            assert time.monotonic() < deadline, f"no {label!r} to click"
            time.sleep(0.5)
        return self.wait(label, *expected, timeout=timeout)

    def wait(self, where: str, *expected: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(e in text for e in expected):
                return text
            time.sleep(0.5)
        raise AssertionError(f"{where} never showed {[e for e in expected if e not in text]}; it shows:\n{text[:3000]}")


@contextmanager
def chromium(port: int) -> Iterator[Page]:
    from websockets.sync.client import connect

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:  # the `browser` marker's tests fail, not skip, without it
        raise AssertionError("no chromium on PATH (a bare root sandbox: scripts/sandbox/prepare.sh installs it)")
    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen(
        [exe, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
                break
            except (httpx.HTTPError, StopIteration, ValueError):
                assert time.monotonic() < deadline and proc.poll() is None, "chromium did not start"
                time.sleep(0.3)
        with connect(ws_url, max_size=None, open_timeout=30) as ws:
            yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
