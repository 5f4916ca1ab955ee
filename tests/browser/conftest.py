"""Browser tests' fixtures: a real `pm-server --dev` (from the kit) and the system's Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pm_testkit import ServerLauncher, ServerProcess, free_port

CHROMIUM = Path("/usr/bin/chromium")
# The system Chromium, never a downloaded one; flags keep it off the network and quiet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class DevServer:
    """A running `pm-server --dev`, where it serves, and the publish key its banner printed."""

    process: ServerProcess
    url: str
    publish_key: str

    def publish(self, event_type: str, payload: dict[str, Any], project_id: str = "p1") -> None:
        """Publish as the demo's backend would (protobuf-JSON); the browser test is synchronous."""
        body = {
            "tenantId": "dev-tenant",
            "type": event_type,
            "scope": {"projectId": project_id},
            "payload": base64.b64encode(json.dumps(payload).encode()).decode(),
            "actorUserId": "browser-test",
        }
        # Playwright's sync API keeps an event loop running in this thread: publish from another.
        with ThreadPoolExecutor(max_workers=1) as thread:
            answer = thread.submit(
                lambda: asyncio.run(
                    self.process.post_publish(
                        json.dumps(body), "application/json", key=self.publish_key
                    )
                )
            ).result()
        assert answer.status == 200, answer.body

    def stop(self) -> int:
        """SIGTERM (the graceful drain of SPEC §4), then the exit code."""
        return self.process.stop()


@pytest.fixture(autouse=True)
def _close_clients() -> None:
    """Replaces the kit's async client cleanup: these tests are sync and open none."""


@pytest.fixture
def port() -> int:
    """A free port on 127.0.0.1, for servers that must come back on the same one."""
    return free_port()


@pytest.fixture
def dev_servers(servers: ServerLauncher) -> Callable[[int], DevServer]:
    """Starts `pm-server --dev` on a port, again after a stop; the kit stops what still runs."""

    def start(port: int) -> DevServer:
        server = servers.start(
            {"LOG_LEVEL": "info", "LOG_FORMAT": "text"},
            args=["--dev"],
            auth=False,
            api_keys=False,
            port=port,
        )
        key = server.stdout.wait_for(r"^\s+Publish key\s+(\S+)$").group(1)
        return DevServer(server, server.url, key)

    return start


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Chromium from /usr/bin/chromium through Playwright (never a downloaded build)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
