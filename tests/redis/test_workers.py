"""`pm-server --workers 2`: one port, shared Redis; a dead worker restarted alone, all drained."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pm_proto as pb
import pytest
from websockets.exceptions import ConnectionClosed

from tests.redis.harness import (
    ADMIN_KEY,
    WAIT_SECS,
    Client,
    ClientFactory,
    RedisProcess,
    ServerProcess,
    event_ids,
    eventually,
    free_port,
    new_tenant,
    publish,
    server_environment,
)
from tests.redis.worker_chaos import (
    LiveProbe,
    Publisher,
    parent_pid,
    started_workers,
    wait_gone,
)

WORKERS = 2
# A worker's start-up is mostly imports: seconds when both cores are busy, and
# two start at once. Waits for it get longer than the harness's WAIT_SECS.
STARTUP_SECS = 30.0


async def _worker_views(server: ServerProcess, tenant: str, expected: set[str]) -> list[set[str]]:
    """The tenant's connections (`expected`, by connection id) as each worker holds them.

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
    return [set(view) for view in views]


async def _clients_on_every_worker(
    server: ServerProcess, connect: ClientFactory, tenant: str, clients: Sequence[Client] = ()
) -> tuple[list[Client], list[set[str]]]:
    """Connect clients of `tenant` until every worker holds at least one of them.

    The kernel picks a worker per connection; `clients` already connected count.
    Returns every client and each worker's connection ids.
    """
    clients = list(clients)
    while True:
        # Fewer clients than workers can't be on every worker (and all-empty views look alike).
        if len(clients) >= WORKERS:
            ids = {c.welcome.connection_id for c in clients}
            views = await _worker_views(server, tenant, ids)
            if all(views):
                return clients, views
        assert len(clients) < 32, "every connection went to the same worker"
        clients.append(await connect(server, tenant))


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
        supervisor.wait_for_log("listening on", count=WORKERS, timeout=STARTUP_SECS)
        tenant = new_tenant()
        clients, _ = await _clients_on_every_worker(supervisor, redis_clients, tenant)
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


async def test_a_killed_worker_is_restarted_while_the_other_keeps_serving_and_sigterm_drains_all(
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
        supervisor.wait_for_log("listening on", count=WORKERS, timeout=STARTUP_SECS)
        first = started_workers(supervisor)
        assert len(first) == WORKERS
        victim_slot, victim = "pm-server-1", first["pm-server-1"]
        survivor = first["pm-server-0"]
        assert parent_pid(victim) == parent_pid(survivor)  # both the supervisor's children
        tenant = new_tenant()
        clients, views = await _clients_on_every_worker(supervisor, redis_clients, tenant)
        for client in clients:
            await client.subscribe("p1")

        async with (
            LiveProbe(supervisor.base_url) as probe,
            Publisher(supervisor.base_url, tenant, "p1") as publisher,
        ):
            await publisher.wait_for(3)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            await wait_gone(victim)
            gone_at = time.monotonic()
            published_before = len(publisher.published)

            # The victim's clients lost their connection; the others did not notice.
            kept, lost = set(), set()
            for client in clients:
                try:
                    await client.request(pb.ClientMessage(ping=pb.Ping(client_time_ms=1)))
                    kept.add(client.welcome.connection_id)
                except ConnectionClosed:
                    lost.add(client.welcome.connection_id)
            assert sorted([kept, lost], key=sorted) == sorted(views, key=sorted)
            survivors = [c for c in clients if c.welcome.connection_id in kept]

            await supervisor.await_log(
                f"worker {victim_slot} (pid {victim}) died with signal SIGKILL; restarting in 0.5 s"
            )
            await supervisor.await_log("listening on", count=WORKERS + 1, within=STARTUP_SECS)
            back_at = time.monotonic()
            published_during = len(publisher.published) - published_before
            await publisher.wait_for(len(publisher.published) + 3)

            async def probed_since_back() -> bool:
                return probe.answered_since(back_at) >= 3

            await eventually(probed_since_back, lambda: f"/live probes: {probe.probes[-5:]}")

        # The port answered throughout: only a probe under way while the victim died failed.
        failed = [p for p in probe.failures() if not p.overlaps(killed_at, gone_at)]
        assert failed == [], f"killed at {killed_at}, gone at {gone_at}"
        assert probe.answered_since(gone_at) >= 3
        # Events published before, during and after the gap all reached the survivors, once each.
        assert published_during > 0
        published = publisher.published
        assert [p.seq for p in published] == list(range(1, len(published) + 1))
        for client in survivors:
            assert event_ids(await client.events(len(published))) == [p.event_id for p in published]

        replacement = started_workers(supervisor)[victim_slot]
        assert replacement != victim
        assert parent_pid(replacement) == parent_pid(survivor)
        # The replacement serves: new connections land on it too, and it delivers.
        clients, _ = await _clients_on_every_worker(supervisor, redis_clients, tenant, survivors)
        for client in clients[len(survivors) :]:
            await client.subscribe("p1")
        after = [await publish(redis_http, supervisor, tenant, "p1") for _ in range(2)]
        for client in clients:
            assert event_ids(await client.events(2)) == [p.event_id for p in after]

        supervisor.signal()
        for client in clients:
            code, before_close = await client.closed()
            assert code == 1001
            assert [m.WhichOneof("payload") for m in before_close] == ["closing"]
        assert await supervisor.await_exit() == 0
        assert supervisor.count("Graceful shutdown complete") == WORKERS
        assert supervisor.count("restarting in") == 1
    finally:
        supervisor.close()


async def test_workers_that_can_never_start_make_the_supervisor_give_up_with_exit_1(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    # Another program holds the port without SO_REUSEPORT: every worker's bind fails,
    # which configuration can't check in advance.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        supervisor = ServerProcess(
            "crash-loop",
            tmp_path,
            {"BROKER_URL": redis_server.url()},
            args=["--workers", str(WORKERS)],
            port=taken.getsockname()[1],
        )
        try:
            supervisor.start()
            # Backoff 0.5 + 1 + 2 + 4 s, plus five start-ups of a worker.
            code = await supervisor.await_exit(within=90)
        finally:
            supervisor.close()

    assert code == 1
    [giving_up] = [line for line in supervisor.lines if "giving up" in line]
    assert "exited with code 1: 5 deaths within 60 s, a crash loop" in giving_up
    assert "draining the other workers, then exiting 1" in giving_up
    for delay in ("0.5", "1", "2", "4"):
        assert supervisor.count(f"exited with code 1; restarting in {delay} s") >= 1
    assert supervisor.count("cannot listen on") >= 5
    assert "Traceback" not in supervisor.log


async def test_a_second_sigterm_kills_every_worker_at_once(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    supervisor = ServerProcess(
        "workers", tmp_path, {"BROKER_URL": redis_server.url()}, args=["--workers", str(WORKERS)]
    )
    try:
        supervisor.start()
        supervisor.wait_for_log("listening on", count=WORKERS, timeout=STARTUP_SECS)
        workers = started_workers(supervisor)
        # A stopped worker can't drain: the supervisor is still waiting for it
        # when the second signal comes, however fast the other one drains.
        os.kill(workers["pm-server-1"], signal.SIGSTOP)

        supervisor.signal()
        await supervisor.await_log(f"received SIGTERM: draining {WORKERS} workers")
        await supervisor.await_log("Graceful shutdown complete")  # pm-server-0's
        supervisor.signal()

        assert await supervisor.await_exit() == 128 + signal.SIGTERM
        for pid in workers.values():
            await wait_gone(pid)
        assert supervisor.count("received SIGTERM again: killing") == 1
        assert supervisor.count("Graceful shutdown complete") == 1
        assert supervisor.count("restarting in") == 0
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
