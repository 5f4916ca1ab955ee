"""Draining a process (SPEC §4): stop admitting, say goodbye with jitter, bounded, then cut."""

from __future__ import annotations

import asyncio
import random

import pytest
from pm_testkit import Changes
from pm_ws import close_codes
from pm_ws.close_codes import CloseReason
from pm_ws.exceptions import LimitExceeded
from pm_ws.registry import ConnectionRegistry
from pm_ws.session import Session
from pm_ws.shutdown import ShutdownCoordinator, ShutdownState

from packages.pm_ws.tests.session_harness import (
    TENANT,
    WAIT_SECS,
    Connection,
    Engine,
    RecordingSocket,
    kinds,
    subscribe,
)

SEED = 20240601


async def connections(engine: Engine, count: int, *, finish_on_close: bool) -> list[Connection]:
    return [
        await engine.connect(socket=RecordingSocket(finish_on_close=finish_on_close))
        for _ in range(count)
    ]


class Outstanding:
    """Closing handshakes started and not yet finished, and the most at any moment."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.changed = Changes()

    def started(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        self.changed.notify()


class CountingSocket(RecordingSocket):
    def __init__(self, outstanding: Outstanding) -> None:
        super().__init__()
        self._outstanding = outstanding

    def close(self, reason: CloseReason) -> None:
        super().close(reason)
        self._outstanding.started()


async def test_begin_is_idempotent_stops_admissions_and_closes_nothing() -> None:
    async with Engine() as engine:
        registry = engine.gateway.registry
        conn = await engine.connect()
        coordinator = ShutdownCoordinator(registry)
        assert not coordinator.draining

        coordinator.begin()
        coordinator.begin()

        assert coordinator.draining
        assert coordinator.state is ShutdownState.DRAINING
        with pytest.raises(LimitExceeded) as refused:
            registry.reserve(TENANT)
        assert refused.value.scope == "draining"
        assert conn.closed_with == []
        assert await conn.received() == []


async def test_drain_says_goodbye_to_every_connection_with_a_jittered_reconnect_delay() -> None:
    async with Engine() as engine:
        registry = engine.gateway.registry
        conns = await connections(engine, 4, finish_on_close=True)
        coordinator = ShutdownCoordinator(registry, rng=random.Random(SEED))

        cut = await asyncio.wait_for(coordinator.drain(), WAIT_SECS)
        answers = [await conn.received() for conn in conns]

    assert cut == 0
    assert coordinator.state is ShutdownState.STOPPED
    assert [kinds(messages) for messages in answers] == [["closing"]] * 4
    closings = [messages[0].closing for messages in answers]
    assert {closing.code for closing in closings} == {"SERVER_SHUTDOWN"}
    assert all(conn.closed_with == [close_codes.SERVER_SHUTDOWN] for conn in conns)
    assert close_codes.SERVER_SHUTDOWN.code == 1001
    delays = [closing.reconnect_after_ms for closing in closings]
    expected = random.Random(SEED)
    assert delays == [expected.randint(1_000, 5_000) for _ in conns]
    assert all(1_000 <= delay <= 5_000 for delay in delays)
    assert len(set(delays)) > 1, "every client would reconnect at once"


async def test_drain_flushes_queued_events_before_the_closing_message() -> None:
    async with Engine() as engine:
        registry = engine.gateway.registry
        (conn,) = await connections(engine, 1, finish_on_close=True)
        await conn.request(subscribe("s", projects=["p1"]))
        await engine.publish("p1")
        await engine.publish("p1")

        await asyncio.wait_for(ShutdownCoordinator(registry).drain(), WAIT_SECS)

        assert kinds(await conn.received()) == ["event", "event", "closing"]


async def test_drain_runs_at_most_concurrency_closing_handshakes_at_once() -> None:
    outstanding = Outstanding()
    async with Engine() as engine:
        registry = engine.gateway.registry
        conns = [await engine.connect(socket=CountingSocket(outstanding)) for _ in range(5)]
        coordinator = ShutdownCoordinator(registry, concurrency=2, timeout_secs=WAIT_SECS)

        draining = asyncio.ensure_future(coordinator.drain())
        for _ in conns:
            await outstanding.changed.wait_for(lambda: outstanding.now > 0)
            closing = next(c for c in conns if c.closed_with and not c.session.finished)
            closing.session.closed()
            outstanding.now -= 1
        cut = await asyncio.wait_for(draining, WAIT_SECS)

    assert cut == 0
    assert outstanding.most == 2
    assert all(conn.closed_with == [close_codes.SERVER_SHUTDOWN] for conn in conns)


async def test_the_deadline_cuts_every_connection_still_open_and_counts_them() -> None:
    async with Engine() as engine:
        registry = engine.gateway.registry
        (polite,) = await connections(engine, 1, finish_on_close=True)
        stuck = await connections(engine, 3, finish_on_close=False)
        coordinator = ShutdownCoordinator(registry, concurrency=2, timeout_secs=0.05)

        cut = await asyncio.wait_for(coordinator.drain(), WAIT_SECS)

    assert cut == 3
    assert coordinator.state is ShutdownState.STOPPED
    assert polite.socket.aborts == 0
    assert [conn.socket.aborts for conn in stuck] == [1, 1, 1]
    # One stuck connection holds a slot of the gate until the deadline: the last never
    # got its goodbye before being cut.
    assert stuck[-1].closed_with == []


async def test_concurrent_and_repeated_drains_share_one_drain() -> None:
    async with Engine() as engine:
        registry = engine.gateway.registry
        polite = await connections(engine, 2, finish_on_close=True)
        (stuck,) = await connections(engine, 1, finish_on_close=False)
        coordinator = ShutdownCoordinator(registry, timeout_secs=0.05)

        first, second = await asyncio.wait_for(
            asyncio.gather(coordinator.drain(), coordinator.drain()), WAIT_SECS
        )
        third = await asyncio.wait_for(coordinator.drain(), WAIT_SECS)
        answers = [await conn.received() for conn in [*polite, stuck]]

    assert first == second == third == 1
    assert stuck.socket.aborts == 1
    assert all(conn.closed_with == [close_codes.SERVER_SHUTDOWN] for conn in [*polite, stuck])
    assert [kinds(messages) for messages in answers] == [["closing"]] * 3


async def test_cancelling_one_caller_does_not_stop_the_drain() -> None:
    async with Engine() as engine:
        registry = engine.gateway.registry
        (conn,) = await connections(engine, 1, finish_on_close=False)
        coordinator = ShutdownCoordinator(registry, timeout_secs=WAIT_SECS)

        caller = asyncio.ensure_future(coordinator.drain())
        await conn.socket.wait_until(lambda: bool(conn.closed_with))
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        conn.session.closed()

        assert await asyncio.wait_for(coordinator.drain(), WAIT_SECS) == 0
        assert conn.socket.aborts == 0


async def test_draining_no_connections_finishes_at_once() -> None:
    coordinator = ShutdownCoordinator(
        ConnectionRegistry[Session](max_connections=100, max_connections_per_tenant=100)
    )

    assert await asyncio.wait_for(coordinator.drain(), WAIT_SECS) == 0
    assert coordinator.state is ShutdownState.STOPPED
