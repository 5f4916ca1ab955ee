"""Browser tests' fixtures: a real `pm-server --dev` process and the system's headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from pm_server.config import VARIABLES

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
START_TIMEOUT_SECS = 20.0
STOP_TIMEOUT_SECS = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class DevServer:
    """A running `python -m pm_server --dev`, with what its banner printed."""

    port: int
    process: subprocess.Popen[str]
    publish_key: str
    token: str
    output: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def publish(self, event_type: str, payload: dict[str, Any], project_id: str = "p1") -> Any:
        """Publish through the HTTP API (protobuf-JSON body) and return its JSON answer."""
        body = {
            "tenantId": "dev-tenant",
            "type": event_type,
            "scope": {"projectId": project_id},
            "payload": base64.b64encode(json.dumps(payload).encode()).decode(),
            "actorUserId": "browser-test",
        }
        status, answer = self.request(
            "POST",
            "/api/v1/publish",
            json.dumps(body).encode(),
            {"Authorization": f"Bearer {self.publish_key}", "Content-Type": "application/json"},
        )
        assert status == 200, answer
        return json.loads(answer)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One HTTP request straight to the server (no proxy from the environment in between)."""
        connection = HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stop(self) -> int:
        """SIGTERM (the graceful drain of SPEC §4), then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECS)
        finally:
            self._release()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECS)
        self._release()

    def _release(self) -> None:
        # The readers close the pipes themselves at end of file, which the exit brought.
        for reader in self.readers:
            reader.join(timeout=STOP_TIMEOUT_SECS)


def start_dev_server(port: int, workdir: Path) -> DevServer:
    """Start `python -m pm_server --dev` on `port` and return once it accepts connections.

    Readiness is read from the process itself: the banner on stdout (publish key,
    token) and the `listening on` log line on stderr, under one deadline; a
    single `GET /live` confirms it. The process runs in `workdir` so that no
    `.env` of the developer's is read.
    """
    # Nothing of the developer's pm-server settings may change what --dev does here.
    read_by_server = {variable.name for variable in VARIABLES}
    env = {name: value for name, value in os.environ.items() if name not in read_by_server}
    env.update(
        BIND_ADDR=f"127.0.0.1:{port}",
        LOG_LEVEL="info",
        LOG_FORMAT="text",
        LOG_COLORED="false",
        SHUTDOWN_TIMEOUT_SECS="5",
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pm_server", "--dev"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump(stream: Any, tag: str) -> None:
        with stream:
            for raw in stream:
                line = f"{tag}: {raw.rstrip()}"
                output.append(line)
                lines.put(line)
        lines.put(None)

    readers = [
        threading.Thread(target=pump, args=(stream, tag), daemon=True)
        for stream, tag in ((process.stdout, "out"), (process.stderr, "err"))
    ]
    for reader in readers:
        reader.start()

    facts: dict[str, str] = {}
    listening = False
    closed_streams = 0
    deadline = time.monotonic() + START_TIMEOUT_SECS
    server = DevServer(port, process, publish_key="", token="", output=output, readers=readers)
    try:
        while not (listening and "Publish key" in facts and "Token" in facts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"pm-server did not start within {START_TIMEOUT_SECS} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                closed_streams += 1
                if closed_streams == 2:
                    raise RuntimeError(f"pm-server exited with {process.wait()}")
                continue
            if match := re.match(r"out:\s+(Token|Publish key)\s+(\S+)$", line):
                facts[match[1]] = match[2]
            if "listening on" in line:
                listening = True
        assert server.request("GET", "/live") == (200, b"OK")
    except BaseException as error:
        server.kill()
        raise RuntimeError("pm-server --dev failed to start:\n" + "\n".join(output)) from error
    server.publish_key = facts["Publish key"]
    server.token = facts["Token"]
    return server


@pytest.fixture(autouse=True)
def _close_clients() -> None:
    """Replaces the parent conftest's async client cleanup: these tests are sync and open none."""


@pytest.fixture
def port() -> int:
    """A free port on 127.0.0.1, for servers that must come back on the same one."""
    return _free_port()


@pytest.fixture
def dev_servers(tmp_path: Path) -> Iterator[Callable[[int], DevServer]]:
    """Starts dev servers on demand; whatever is still running at the end is killed."""
    started: list[DevServer] = []

    def start(port: int) -> DevServer:
        server = start_dev_server(port, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


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
