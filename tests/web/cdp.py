"""A small Chrome DevTools Protocol client: headless Chromium driven over one websocket."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-port=0",
    "--window-size=1280,860",
]


def find_chromium() -> str | None:
    """The system Chromium (Debian's ``chromium``), if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium with one page, driven synchronously over CDP."""

    def __init__(self, binary: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="asyncjobs-chromium-")
        self._process = subprocess.Popen(
            [binary, *_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stderr is not None
        deadline = time.monotonic() + 30
        endpoint = None
        while endpoint is None and time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line and self._process.poll() is not None:
                raise RuntimeError("chromium exited before it listened for DevTools")
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                endpoint = match[1]
        if endpoint is None:
            raise RuntimeError("chromium did not announce its DevTools endpoint")
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self._browser = self._stack.enter_context(connect(endpoint, max_size=None, open_timeout=20))
        target = self.command("Target.createTarget", {"url": "about:blank"}, via=self._browser)
        attached = self.command(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            via=self._browser,
        )
        self._session = attached["sessionId"]
        self.command("Page.enable")
        self.command("Runtime.enable")

    def command(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        via: ClientConnection | None = None,
    ) -> Any:
        """Send one CDP command and return its result (events in between are skipped)."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if via is None:
            message["sessionId"] = self._session
        connection = via or self._browser
        connection.send(json.dumps(message))
        while True:
            reply = json.loads(connection.recv(timeout=30))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def navigate(self, url: str) -> None:
        """Load *url* and wait until its document is complete."""
        self.command("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll *expression* until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is between documents
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"never true in the page: {expression}")

    def screenshot(self, path: Path) -> None:
        """Save the viewport as a PNG."""
        data = self.command("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
