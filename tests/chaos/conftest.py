"""Fixtures of the chaos tests: per module, a Redis that may be broken and two gateways on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.chaos.faults import ChaosRedis
from tests.redis.harness import REDIS_BINARY, ServerProcess, running_servers

# Large enough that history reaches back over every test's whole load: a resume
# is then recoverable unless Redis itself lost the events.
HISTORY_SIZE = 20_000


@pytest.fixture(scope="module")
def chaos_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosRedis]:
    """A redis-server of this module alone: its tests kill, pause and cut it."""
    if not os.access(REDIS_BINARY, os.X_OK):
        pytest.skip("redis-server is not installed")
    server = ChaosRedis(tmp_path_factory.mktemp("chaos-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateways(
    chaos_redis: ChaosRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two pm-server processes, A and B, sharing the module's Redis."""
    workdir = tmp_path_factory.mktemp("chaos-gateways")
    env = {"BROKER_URL": chaos_redis.url(), "HISTORY_SIZE": str(HISTORY_SIZE)}
    servers = [ServerProcess(name, workdir / name, env) for name in ("A", "B")]
    with running_servers(servers) as (a, b):
        yield a, b


@pytest.fixture(autouse=True)
def _servers_raise_nothing() -> Iterator[None]:
    """Fail the test when any server process logged a traceback while it ran."""
    for server in ServerProcess.running:
        server.new_tracebacks()
    yield
    found = [trace for server in list(ServerProcess.running) for trace in server.new_tracebacks()]
    assert not found, "a server logged a traceback:\n" + "\n\n".join(found)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
