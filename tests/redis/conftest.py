"""Fixtures of the Redis scale-out tests: a redis-server and two pm-servers per module."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.redis.harness import (
    REDIS_BINARY,
    Client,
    ClientFactory,
    RedisProcess,
    ServerProcess,
    open_client,
    running_servers,
)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server of this module alone: its tests may stop, restart or cut it."""
    if not os.access(REDIS_BINARY, os.X_OK):
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway_pair(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two pm-server processes, A and B, sharing the module's Redis."""
    workdir = tmp_path_factory.mktemp("gateways")
    env = {"BROKER_URL": redis_server.url()}
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
async def redis_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def redis_clients() -> AsyncIterator[ClientFactory]:
    """Opens WebSocket clients (`await redis_clients(server, tenant, user)`); closes them after."""
    opened: list[Client] = []

    async def connect(server: ServerProcess, tenant: str, user: str = "u1") -> Client:
        client = await open_client(server.ws_url, tenant, user)
        opened.append(client)
        return client

    yield connect
    await asyncio.gather(*(client.ws.close() for client in opened), return_exceptions=True)
