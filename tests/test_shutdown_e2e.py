"""Stopping a real pm-server: the graceful drain of SPEC §4, its deadline, and impatience."""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import pm_proto as pb
import pytest

STUCK_PAYLOAD = b"z" * 60_000


async def stuck_client(server: Any, tenant: str) -> Any:
    """A client that stopped reading while events kept coming, so its TCP buffers are full.

    The server's writes to it back up: its queue holds frames (the admin API shows
    `queue_depth` > 0) and its closing handshake cannot complete, which keeps a
    drain going until `SHUTDOWN_TIMEOUT_SECS`.
    """
    client = await server.connect(tenant, "stuck")
    await client.subscribe(["p1"])
    client.stop_reading()
    for _ in range(2000):
        await server.publish(tenant, "p1", payload=STUCK_PAYLOAD)
        listing = await server.get(
            f"/api/v1/connections?tenant_id={tenant}", bearer=server.admin_key
        )
        [connection] = listing.json()["connections"]
        if connection["queue_depth"] > 0:
            return client
    raise AssertionError("the server never had to queue for a client that does not read")


async def test_sigterm_flushes_events_then_says_closing_and_closes_1001(servers: Any) -> None:
    server = servers.start()
    acme = await server.connect("acme")
    globex = await server.connect("globex")
    await acme.subscribe(["p1"])
    await globex.subscribe(["p1"])
    for n in range(5):
        await server.publish("acme", "p1", payload=f"acme {n}".encode())
    await server.publish("globex", "p1", payload=b"globex 0")

    exit_code = await server.stop_async(signal.SIGTERM)
    acme_code, acme_seen = await acme.until_closed()
    globex_code, globex_seen = await globex.until_closed()

    assert [m.event.payload for m in acme_seen[:-1]] == [f"acme {n}".encode() for n in range(5)]
    assert [m.event.payload for m in globex_seen[:-1]] == [b"globex 0"]
    for code, seen in ((acme_code, acme_seen), (globex_code, globex_seen)):
        assert code == 1001
        closing = seen[-1]
        assert closing.WhichOneof("payload") == "closing", seen
        assert closing.closing.code == "SERVER_SHUTDOWN"
        assert 100 <= closing.closing.reconnect_after_ms <= 60_000
    assert exit_code == 0
    assert "Graceful shutdown complete" in server.stderr.text


async def test_sigint_without_connections_exits_0_gracefully(servers: Any) -> None:
    server = servers.start()

    assert await server.stop_async(signal.SIGINT) == 0
    assert "Graceful shutdown complete" in server.stderr.text


async def test_readiness_and_new_upgrades_answer_503_while_draining(servers: Any) -> None:
    server = servers.start({"SHUTDOWN_TIMEOUT_SECS": "60"})
    await stuck_client(server, "acme")

    server.send_signal(signal.SIGTERM)
    await server.wait_log("received SIGTERM")
    try:
        ready = await server.get("/ready")
    except aiohttp.ClientConnectorError as refused:
        pytest.fail(f"/ready is unreachable while draining: the listener closed first ({refused})")
    health = await server.get("/health")
    live = await server.get("/live")
    upgrade = await server.refused(server.token("globex"))

    assert (ready.status, ready.text) == (503, "Not Ready: draining")
    assert health.status == 503
    assert health.json()["status"] == "draining"
    assert health.json()["checks"]["shutdown"]["status"] == "draining"
    assert live.status == 200
    assert upgrade.status == 503
    assert upgrade.json()["code"] == "SERVER_SHUTTING_DOWN"


async def test_connections_still_open_at_the_shutdown_deadline_are_cut(servers: Any) -> None:
    server = servers.start({"SHUTDOWN_TIMEOUT_SECS": "1"})
    await stuck_client(server, "acme")

    exit_code = await server.stop_async(signal.SIGTERM)

    assert exit_code == 0
    assert "cut 1 connections" in server.stderr.text
    assert "Graceful shutdown complete" in server.stderr.text


async def test_a_second_signal_during_a_long_drain_exits_at_once(servers: Any) -> None:
    server = servers.start({"SHUTDOWN_TIMEOUT_SECS": "60"})
    await stuck_client(server, "acme")
    server.send_signal(signal.SIGTERM)
    await server.wait_log("received SIGTERM")

    exit_code = await server.stop_async(signal.SIGINT, within=10)

    assert exit_code != 0
    assert "Graceful shutdown complete" not in server.stderr.text


async def test_a_client_resuming_after_a_restart_is_told_it_lost_events(servers: Any) -> None:
    before = servers.start()
    client = await before.connect("acme")
    await client.subscribe(["p1"])
    await before.publish("acme", "p1")
    [seen] = await client.events(1)
    assert await before.stop_async() == 0
    code, _ = await client.until_closed()
    assert code == 1001

    after = servers.start(
        {"JWT_SECRET": before.secret, "PUBLISH_API_KEY": before.publish_key},
        port=before.port,
    )
    resumed = await after.connect("acme")
    ack = await resumed.subscribe(["p1"], resume_from=seen.position)

    assert not ack.recovered
    assert ack.replayed == 0
    assert ack.position.epoch != seen.position.epoch
    # Right for an in-memory broker, whose history died with the process; and said.
    await after.wait_log(r"not recovered: the stream restarted its numbering")
    await after.publish("acme", "p1", payload=b"fresh")
    assert [e.payload for e in await resumed.events(1)] == [b"fresh"]


async def test_pings_keep_flowing_until_the_drain_closes_a_client(servers: Any) -> None:
    server = servers.start()
    client = await server.connect("acme")

    answer = await client.request(pb.ClientMessage(ping=pb.Ping(client_time_ms=7)))
    exit_code = await server.stop_async()
    code, _ = await client.until_closed()

    assert answer.pong.client_time_ms == 7
    assert (exit_code, code) == (0, 1001)
