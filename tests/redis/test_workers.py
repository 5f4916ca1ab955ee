"""`pm-server --workers 2`: one port, shared Redis; a dead worker restarted alone, all drained."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import pm_proto as pb
import pytest
from pm_testkit import (
    WAIT_SECS,
    Client,
    RedisServer,
    ServerLauncher,
    ServerProcess,
    event_ids,
    wait_until,
)
from websockets.exceptions import ConnectionClosed

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


def start_workers(
    servers: ServerLauncher, redis_server: RedisServer, name: str = "workers", **options: Any
) -> ServerProcess:
    """A `--workers 2` supervisor on the module's Redis; it is stopped after the test."""
    return servers.start(
        {"BROKER_URL": redis_server.url},
        name=name,
        args=["--workers", str(WORKERS)],
        wait=False,
        **options,
    )


@pytest.fixture
def supervisor(servers: ServerLauncher, redis_server: RedisServer) -> ServerProcess:
    """A `--workers 2` supervisor, once both of its workers listen."""
    started = start_workers(servers, redis_server)
    started.wait_listening(count=WORKERS, within=STARTUP_SECS)
    return started


async def _worker_views(server: ServerProcess, tenant: str, expected: set[str]) -> list[set[str]]:
    """The tenant's connections (`expected`, by connection id) as each worker holds them.

    Each request goes over a new TCP connection, which the kernel hands to
    either worker; a worker's answer lists only its own connections. Asking
    until both workers have answered, within the deadline, tells them apart.
    """
    views: set[frozenset[str]] = set()

    async def both_answered() -> bool:
        path = f"/api/v1/connections?tenant_id={tenant}"
        answer = await server.get(path, bearer=server.admin_key)
        assert answer.status == 200
        views.add(frozenset(c["connection_id"] for c in answer.json()["connections"]))
        return len(views) >= WORKERS

    await wait_until(both_answered, poll=0, what=lambda: f"saw only {len(views)} workers: {views}")
    assert frozenset().union(*views) == expected
    assert sum(len(view) for view in views) == len(expected)  # no connection counted twice
    return [set(view) for view in views]


async def _clients_on_every_worker(
    server: ServerProcess, tenant: str, clients: Sequence[Client] = ()
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
        clients.append(await server.connect(tenant))


async def test_two_workers_share_one_port_deliver_across_workers_and_drain_on_sigterm(
    supervisor: ServerProcess, tenant: str
) -> None:
    clients, _ = await _clients_on_every_worker(supervisor, tenant)
    for client in clients:
        await client.subscribe(["p1"])

    published = [await supervisor.publish(tenant, "p1") for _ in range(4)]
    for client in clients:
        assert event_ids(await client.events(4)) == [p.event_id for p in published]

    supervisor.send_signal()
    for client in clients:
        [closing] = await client.expect_close(1001, "closing")
        assert closing.closing.code == "SERVER_SHUTDOWN"
    assert await supervisor.await_exit() == 0
    assert supervisor.stderr.count("Graceful shutdown complete") == WORKERS
    assert [p.seq for p in published] == [1, 2, 3, 4]


async def test_a_killed_worker_is_restarted_while_the_other_keeps_serving_and_sigterm_drains_all(
    supervisor: ServerProcess, tenant: str
) -> None:
    first = started_workers(supervisor)
    assert len(first) == WORKERS
    victim_slot, victim = "pm-server-1", first["pm-server-1"]
    survivor = first["pm-server-0"]
    assert parent_pid(victim) == parent_pid(survivor)  # both the supervisor's children
    clients, views = await _clients_on_every_worker(supervisor, tenant)
    for client in clients:
        await client.subscribe(["p1"])

    async with (
        LiveProbe(supervisor) as probe,
        Publisher(supervisor, tenant, "p1") as publisher,
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

        await supervisor.wait_log(
            re.escape(
                f"worker {victim_slot} (pid {victim}) died with signal SIGKILL; restarting in 0.5 s"
            )
        )
        await supervisor.wait_log("listening on", count=WORKERS + 1, within=STARTUP_SECS)
        back_at = time.monotonic()
        published_during = len(publisher.published) - published_before
        await publisher.wait_for(len(publisher.published) + 3)
        await wait_until(
            lambda: probe.answered_since(back_at) >= 3,
            what=lambda: f"/live probes: {probe.probes[-5:]}",
        )

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
    clients, _ = await _clients_on_every_worker(supervisor, tenant, survivors)
    for client in clients[len(survivors) :]:
        await client.subscribe(["p1"])
    after = [await supervisor.publish(tenant, "p1") for _ in range(2)]
    for client in clients:
        assert event_ids(await client.events(2)) == [p.event_id for p in after]

    supervisor.send_signal()
    for client in clients:
        await client.expect_close(1001, "closing")
    assert await supervisor.await_exit() == 0
    assert supervisor.stderr.count("Graceful shutdown complete") == WORKERS
    assert supervisor.stderr.count("restarting in") == 1


async def test_workers_that_can_never_start_make_the_supervisor_give_up_with_exit_1(
    servers: ServerLauncher, redis_server: RedisServer
) -> None:
    # Another program holds the port without SO_REUSEPORT: every worker's bind fails,
    # which configuration can't check in advance.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = start_workers(servers, redis_server, "crash-loop", port=port)
        # Backoff 0.5 + 1 + 2 + 4 s, plus five start-ups of a worker.
        code = await supervisor.await_exit(within=90)

    assert code == 1
    [giving_up] = [line for line in supervisor.stderr.lines if "giving up" in line]
    assert "exited with code 1: 5 deaths within 60 s, a crash loop" in giving_up
    assert "draining the other workers, then exiting 1" in giving_up
    for delay in ("0.5", "1", "2", "4"):
        assert supervisor.stderr.count(f"exited with code 1; restarting in {delay} s") >= 1
    assert supervisor.stderr.count("cannot listen on") >= 5
    assert "Traceback" not in supervisor.stderr.text


async def test_a_second_sigterm_kills_every_worker_at_once(supervisor: ServerProcess) -> None:
    workers = started_workers(supervisor)
    # A stopped worker can't drain: the supervisor is still waiting for it
    # when the second signal comes, however fast the other one drains.
    os.kill(workers["pm-server-1"], signal.SIGSTOP)

    supervisor.send_signal()
    await supervisor.wait_log(f"received SIGTERM: draining {WORKERS} workers")
    await supervisor.wait_log("Graceful shutdown complete")  # pm-server-0's
    supervisor.send_signal()

    assert await supervisor.await_exit() == 128 + signal.SIGTERM
    for pid in workers.values():
        await wait_gone(pid)
    assert supervisor.stderr.count("received SIGTERM again: killing") == 1
    assert supervisor.stderr.count("Graceful shutdown complete") == 1
    assert supervisor.stderr.count("restarting in") == 0


@pytest.mark.parametrize("broker_url", ["memory://", None])
def test_two_workers_without_a_shared_broker_are_refused_with_one_line(
    broker_url: str | None, servers: ServerLauncher
) -> None:
    settings = {"JWT_SECRET": servers.credentials.jwt_secret, "BROKER_URL": broker_url or ""}

    result = servers.run(settings, args=["--workers", "2"], within=WAIT_SECS)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pm-server: --workers: ")
    assert "redis://" in lines[0]
    assert "Traceback" not in result.stderr
