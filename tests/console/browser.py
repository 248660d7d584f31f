"""Headless Debian Chromium driven by Selenium, and `agentrun serve --http-listen` in a child
process, for the console's browser tests and benchmarks/console.py.

Chromium runs as root here, so it needs --no-sandbox; the networking flags keep it from
calling home on a machine without outside network; each browser gets a fresh profile.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.server.subprocess_server import ServerProcess, free_port

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
# Screenshots of the browser tests (git-ignored; CI may keep them).
ARTIFACTS = ROOT / "artifacts" / "console"


def shot(browser: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def replace_text(element: Any, text: str) -> None:
    """Types over a field's whole content, as a person would (select all, type)."""
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def node_state(browser: Any, node: str) -> str | None:
    """The state a graph node shows (`data-state`), None when it is not drawn."""
    found = browser.find_elements("css selector", f'g[data-node-id="{node}"]')
    return found[0].get_attribute("data-state") if found else None


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver), or None when either is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(profile: Path | None = None) -> Any:
    """A new headless Chromium with an empty profile; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("chromium and chromedriver are needed (scripts/ensure-test-tools.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile or tempfile.mkdtemp(prefix='chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(paths[1]))


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Polls `check` until it returns something truthy (ignoring exceptions meanwhile)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f": {last!r}" if last else "")
    )


class ConsoleServer:
    """`agentrun serve` with its HTTP port on; `call` speaks Connect JSON as curl would."""

    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.process = ServerProcess(
            workdir, env=env, args=["--http-listen", f"127.0.0.1:{self.http_port}"]
        )
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.key: str | None = None

    def start(self) -> ConsoleServer:
        self.process.start(timeout=60)
        wait_for(
            lambda: httpx.get(self.url + "/", timeout=5).status_code == 200, 60, "the HTTP port"
        )
        return self

    def stop(self) -> None:
        self.process.stop()

    def call(self, service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        response = httpx.post(
            f"{self.url}/agentrun.v1.{service}/{method}", json=body, headers=headers, timeout=60
        )
        assert response.status_code == 200, response.text
        return response.json()

    def create_workflow(self, source: str) -> None:
        self.call("WorkflowService", "CreateWorkflow", {"source": source})

    def start_execution(self, workflow: str, data: Any = None) -> str:
        started = self.call(
            "ExecutionService", "StartExecution", {"workflow": workflow, "input": data or {}}
        )
        return started["execution"]["name"].removeprefix("executions/")

    def execution(self, ident: str) -> dict[str, Any]:
        return self.call("ExecutionService", "GetExecution", {"name": f"executions/{ident}"})[
            "execution"
        ]
