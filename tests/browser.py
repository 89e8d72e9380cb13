"""Headless Chromium driven over the DevTools protocol through a pipe: no extra packages, no open port.

Chromium started with --remote-debugging-pipe reads JSON commands from fd 3
and writes replies and events to fd 4, each message ended by a NUL byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")

# Text and images of a page, reaching into shadow roots (TensorBoard's Polymer dashboards live there).
PAGE_CONTENT = """(() => {
  const text = [], images = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const c of node.childNodes) {
      if (c.nodeType === Node.TEXT_NODE) text.push(c.textContent);
      else if (c.nodeType === Node.ELEMENT_NODE && !['STYLE', 'SCRIPT', 'TEMPLATE'].includes(c.tagName)) {
        if (c.tagName === 'IMG') images.push({src: c.src.slice(0, 80), loaded: c.complete && c.naturalWidth > 0,
                                               width: c.naturalWidth, height: c.naturalHeight});
        walk(c);
      }
    }
  };
  walk(document.documentElement);
  return {text: text.join(' ').replace(/\\s+/g, ' '), images};
})()"""


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


class Browser:
    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child: fd 3 reads our commands, fd 4 carries its replies
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)
            for fd in (3, 4):  # dup2 onto itself (a pipe that already was fd 3) keeps it close-on-exec
                os.set_inheritable(fd, True)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "--window-size=1280,2000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire_fds, close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id, self.buffer, self.session = 0, b"", None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout)

    def wait_for(self, expression: str, timeout: float = 30):
        """Poll a script until it returns something truthy; returns that value, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression[:80]}")
            time.sleep(0.25)

    def content(self) -> dict:
        """{"text": all visible text, "images": [{"src", "loaded", "width", "height"}]}, shadow roots included."""
        return self.evaluate(PAGE_CONTENT)

    def content_when(self, ready, timeout: float = 30) -> dict:
        """Poll content() until ready(content) holds; returns the last content either way (the test asserts)."""
        deadline = time.monotonic() + timeout
        while True:
            content = self.content()
            if ready(content) or time.monotonic() > deadline:
                return content
            time.sleep(0.25)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self.to_browser, self.from_browser):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
