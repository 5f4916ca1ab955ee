"""`pm-server --workers 2`: two processes on one port, sharing Redis, drained together."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.redis.harness import (
    ADMIN_KEY,
    WAIT_SECS,
    Client,
    ClientFactory,
    RedisProcess,
    ServerProcess,
    event_ids,
    free_port,
    new_tenant,
    publish,
    server_environment,
)

WORKERS = 2


async def _connections_by_worker(server: ServerProcess, tenant: str, expected: set[str]) -> int:
    """How many workers hold the tenant's connections (`expected`, by connection id).

    Each request goes over a new TCP connection, which the kernel hands to
    either worker; a worker's answer lists only its own connections. Asking
    until both workers have answered, within the deadline, tells them apart.
    """
    views: set[frozenset[str]] = set()
    deadline = time.monotonic() + WAIT_SECS
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while len(views) < WORKERS:
            assert time.monotonic() < deadline, f"saw only {len(views)} workers: {views}"
            async with http.get(
                f"{server.base_url}/api/v1/connections",
                params={"tenant_id": tenant},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            ) as response:
                assert response.status == 200
                answer = await response.json()
            views.add(frozenset(c["connection_id"] for c in answer["connections"]))
    assert frozenset().union(*views) == expected
    assert sum(len(view) for view in views) == len(expected)  # no connection counted twice
    return sum(1 for view in views if view)


async def test_two_workers_share_one_port_deliver_across_workers_and_drain_on_sigterm(
    redis_server: RedisProcess,
    tmp_path: Path,
    redis_clients: ClientFactory,
    redis_http: aiohttp.ClientSession,
) -> None:
    supervisor = ServerProcess(
        "workers", tmp_path, {"BROKER_URL": redis_server.url()}, args=["--workers", str(WORKERS)]
    )
    try:
        supervisor.start()
        supervisor.wait_until_listening(count=WORKERS)
        tenant = new_tenant()
        clients: list[Client] = []
        # The kernel picks a worker per connection: connect until both hold clients.
        while (
            len(clients) < 2
            or await _connections_by_worker(
                supervisor, tenant, {c.welcome.connection_id for c in clients}
            )
            < WORKERS
        ):
            assert len(clients) < 32, "every connection went to the same worker"
            clients.append(await redis_clients(supervisor, tenant))
        for client in clients:
            await client.subscribe("p1")

        published = [await publish(redis_http, supervisor, tenant, "p1") for _ in range(4)]
        for client in clients:
            assert event_ids(await client.events(4)) == [p.event_id for p in published]

        supervisor.signal()
        for client in clients:
            code, before_close = await client.closed()
            assert code == 1001
            assert [m.WhichOneof("payload") for m in before_close] == ["closing"]
            assert before_close[0].closing.code == "SERVER_SHUTDOWN"
        assert await supervisor.await_exit() == 0
        assert supervisor.count("Graceful shutdown complete") == WORKERS
        assert [p.seq for p in published] == [1, 2, 3, 4]
    finally:
        supervisor.close()


@pytest.mark.parametrize("broker_url", ["memory://", None])
def test_two_workers_without_a_shared_broker_are_refused_with_one_line(
    broker_url: str | None, tmp_path: Path
) -> None:
    env = server_environment({"BIND_ADDR": f"127.0.0.1:{free_port()}"})
    if broker_url is not None:
        env["BROKER_URL"] = broker_url

    result = subprocess.run(
        [sys.executable, "-m", "pm_server", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_SECS,
        check=False,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pm-server: --workers: ")
    assert "redis://" in lines[0]
    assert "Traceback" not in result.stderr
