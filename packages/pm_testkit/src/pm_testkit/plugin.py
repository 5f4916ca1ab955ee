"""The pytest plugin of the kit: shared fixtures for servers, Redis, proxies and clients.

Loaded by the `pytest11` entry point of pm-testkit in every pytest run of the
workspace. Servers and Redis live per module where tests can share them
(tests keep apart by tenant or key prefix), per test where a test stops or
breaks them. After each test, the WebSocket clients it opened through the
kit's servers are closed, and no server the kit started may have logged a
traceback meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import pytest_asyncio

from pm_testkit.client import OpenClients
from pm_testkit.proxy import TcpProxy
from pm_testkit.redis import REDIS_SERVER, RedisServer
from pm_testkit.server import ServerLauncher, ServerPair, ServerProcess
from pm_testkit.tokens import new_tenant
from pm_testkit.waiting import WAIT_SECS

_OPEN_CLIENTS: Final = pytest.StashKey[OpenClients]()
_LAUNCHERS: Final = pytest.StashKey[list[ServerLauncher]]()

_MARKER: Final = "pm_server"


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's marker and the session's registries of clients and servers."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(settings=None, *, args=(), auth=True, api_keys=True): how the test module's "
        "pm-server (`server`, `server_pair`) is started; `settings` are its environment",
    )
    config.stash[_OPEN_CLIENTS] = OpenClients()
    config.stash[_LAUNCHERS] = []


def _launch(request: pytest.FixtureRequest, workdir: Path) -> Iterator[ServerLauncher]:
    launcher = ServerLauncher(workdir, clients=request.config.stash[_OPEN_CLIENTS])
    launchers = request.config.stash[_LAUNCHERS]
    launchers.append(launcher)
    try:
        yield launcher
    finally:
        launchers.remove(launcher)
        launcher.close_all()
    _assert_no_tracebacks([launcher])


def _assert_no_tracebacks(launchers: list[ServerLauncher]) -> None:
    found = [
        trace
        for launcher in launchers
        for server in launcher.started
        for trace in server.new_tracebacks()
    ]
    assert not found, "a server logged a traceback:\n" + "\n\n".join(found)


def _marked(request: pytest.FixtureRequest) -> tuple[dict[str, str], dict[str, Any]]:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return {}, {}
    settings = dict(marker.args[0]) if marker.args else {}
    return settings, dict(marker.kwargs)


@pytest.fixture(scope="module")
def module_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerLauncher]:
    """Servers that live for the whole test module (its tests use distinct tenants)."""
    yield from _launch(request, tmp_path_factory.mktemp("servers"))


@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerLauncher]:
    """Servers of one test: for start-up, shutdown and crash behaviour."""
    yield from _launch(request, tmp_path)


@pytest.fixture(scope="module")
def module_server(request: pytest.FixtureRequest, module_servers: ServerLauncher) -> ServerProcess:
    """The module's pm-server, started as the module's `pm_server` marker says."""
    settings, options = _marked(request)
    return module_servers.start(settings, **options)


@pytest.fixture
def server(module_server: ServerProcess) -> ServerProcess:
    """The module's pm-server, checked to be still running."""
    module_server.assert_running()
    return module_server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module alone: its tests may stop, restart, kill or pause it."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, for faults the module's others must not see."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path).start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest_asyncio.fixture
async def redis_proxy(own_redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    """A `TcpProxy` in front of `own_redis_server` (its `url` is a Redis URL)."""
    async with TcpProxy(own_redis_server.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def server_pair(
    request: pytest.FixtureRequest, module_servers: ServerLauncher, redis_server: RedisServer
) -> ServerPair:
    """Two pm-servers, A and B, sharing the module's Redis (and the `pm_server` settings)."""
    settings, _ = _marked(request)
    a, b = module_servers.start_all(("A", "B"), {"BROKER_URL": redis_server.url, **settings})
    return a, b


@pytest.fixture
def tenant() -> str:
    """A tenant id no other test uses, so tests can share a server."""
    return new_tenant()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session whose every request has a deadline."""
    timeout = aiohttp.ClientTimeout(total=WAIT_SECS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


@pytest_asyncio.fixture(autouse=True)
async def _close_clients(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Close every WebSocket client the test opened through a server, whatever happened in it."""
    yield
    await request.config.stash[_OPEN_CLIENTS].close_all()


@pytest.fixture(autouse=True)
def _servers_log_no_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which a server of the kit logged a traceback: that is a bug."""
    launchers = request.config.stash[_LAUNCHERS]
    for launcher in launchers:
        for server in launcher.started:
            server.new_tracebacks()
    yield
    _assert_no_tracebacks(launchers)
