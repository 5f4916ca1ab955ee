"""The console scripts as users run them: separate processes against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from pm_testkit import ServerProcess

# Fixtures and helpers live in conftest.py (test modules cannot import each other).
Api = Any
MakeToken = Any

SECRET = "pm-token-functional-secret-0123456789-xyz"
WAIT_SECS = 10.0


def script(name: str) -> list[str]:
    """The installed console script, or the same entry point through this interpreter."""
    installed = Path(sys.executable).with_name(name)
    if installed.exists():
        return [str(installed)]
    function = {"pm-token": "mint_token_main", "pm-listen": "listen_main"}[name]
    return [sys.executable, "-c", f"from pm_client.tools import {function}; {function}()"]


def test_the_pm_token_command_prints_a_token_pyjwt_accepts() -> None:
    result = subprocess.run(
        [*script("pm-token"), "--secret-env", "K", "--tenant", "t1", "--user", "u1"],
        env={**os.environ, "K": SECRET},
        capture_output=True,
        text=True,
        timeout=WAIT_SECS,
        check=True,
    )
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["tenant_id"], claims["sub"]) == ("t1", "u1")


class Listener:
    """`pm-listen` as a child process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.notes: list[str] = []

    async def note(self, containing: str) -> str:
        """The next stderr line containing `containing`."""
        assert self.process.stderr is not None

        async def find() -> str:
            assert self.process.stderr is not None
            while line := (await self.process.stderr.readline()).decode():
                self.notes.append(line)
                if containing in line:
                    return line
            raise AssertionError(f"pm-listen ended before {containing!r}: {self.notes}")

        return await asyncio.wait_for(find(), WAIT_SECS)

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), WAIT_SECS)
        document: dict[str, Any] = json.loads(raw)
        return document

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.process.wait(), WAIT_SECS)


@pytest.fixture
async def listen(server: ServerProcess, make_token: MakeToken) -> AsyncIterator[Any]:
    started: list[Listener] = []

    async def start(*args: str) -> Listener:
        process = await asyncio.create_subprocess_exec(
            *script("pm-listen"),
            "--url",
            server.ws_url,
            *args,
            env={**os.environ, "PM_TOKEN": make_token()},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        listener = Listener(process)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        if listener.process.returncode is None:
            listener.process.kill()
            await listener.process.wait()


async def test_pm_listen_prints_a_published_event_as_a_json_line_and_exits_0_on_ctrl_c(
    server: ServerProcess, api: Api, listen: Any
) -> None:
    listener = await listen("--project", "p1", "--project", "p2")
    await listener.note("subscribed")
    published = await api.publish(server, "p2", 7)
    line = await listener.line()
    assert line["kind"] == "event"
    assert line["event_id"] == published.event_id
    assert line["type"] == "card.moved"
    assert line["scope"]["project_id"] == "p2"
    assert line["position"] == {"epoch": published.position.epoch, "seq": 1}
    assert line["actor_user_id"] == "u0"
    assert line["payload_json"] == {"n": 7}
    assert isinstance(line["occurred_at_ms"], int)
    listener.process.send_signal(signal.SIGINT)
    assert await listener.exit_code() == 0


async def test_pm_listen_reports_a_terminal_close_on_stderr_and_exits_1(
    server: ServerProcess, api: Api, listen: Any
) -> None:
    listener = await listen("--work-item", "w1")
    await listener.note("subscribed")
    assert await api.disconnect(server, tenant_id="t1") == 1
    note = await listener.note("4010")
    assert "closed for good" in note
    assert await listener.exit_code() == 1
