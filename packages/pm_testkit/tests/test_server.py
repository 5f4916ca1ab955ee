"""A real pm-server from the kit: started as the module's marker says, used, stopped, read."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from pm_testkit import ServerLauncher, ServerProcess, server_environment, subscribers

pytestmark = pytest.mark.pm_server({"HEARTBEAT_INTERVAL_SECS": "7", "HEARTBEAT_TIMEOUT_SECS": "7"})


def python(workdir: Path, code: str) -> ServerProcess:
    """Any program can be run as a server process: here a Python one-liner."""
    return ServerProcess(
        workdir,
        env=server_environment(),
        port=0,
        name="child",
        command=(sys.executable, "-c", code),
    ).start()


async def test_the_modules_marker_sets_the_servers_environment(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    assert client.welcome.heartbeat_interval_secs == 7


async def test_a_published_event_reaches_a_subscribed_client_and_nothing_else(
    server: ServerProcess, tenant: str
) -> None:
    [client] = await subscribers([server], tenant, ["p1"])

    published = await server.publish(tenant, "p1", payload=b"hello")

    [event] = await client.events(1)
    assert (event.event_id, event.payload) == (published.event_id, b"hello")
    assert published.seq == 1
    await client.expect_nothing_pending()


async def test_an_upgrade_without_a_token_is_refused(server: ServerProcess) -> None:
    answer = await server.refused()

    assert answer.status == 401
    assert answer.json()["code"]


def test_the_servers_log_is_a_file_in_its_working_directory(server: ServerProcess) -> None:
    line = server.wait_listening()

    assert f"127.0.0.1:{server.port}" in line
    assert line in server.stderr.path.read_text()
    assert server.stderr.path.parent == server.workdir


def test_sigterm_drains_and_exits_0(servers: ServerLauncher) -> None:
    server = servers.start()

    assert server.stop(signal.SIGTERM) == 0
    assert server.stderr.count("Graceful shutdown complete") == 1


def test_waiting_for_a_line_fails_at_once_when_the_process_exited(tmp_path: Path) -> None:
    child = python(tmp_path, "print('one'); print('two')")

    assert child.stdout.wait_for("two").string == "two"
    with pytest.raises(AssertionError, match=r"child stdout \(exited\) wrote no 1 lines"):
        child.stdout.wait_for("three")
    assert child.wait_exit() == 0


def test_a_traceback_on_stderr_is_found_once(tmp_path: Path) -> None:
    child = python(tmp_path, "1 / 0")
    child.wait_exit()

    [traceback] = child.new_tracebacks()

    assert "ZeroDivisionError" in traceback
    assert child.new_tracebacks() == []
