"""A connection's life through the gateway's socket-free methods: open, start, end."""

from __future__ import annotations

from pm_ws import Admitted, Session, SessionState, close_codes
from pm_ws.admission import BROKER_UNAVAILABLE

from packages.pm_ws.tests.session_harness import (
    REMOTE,
    TENANT,
    Engine,
    RecordingSocket,
    RecordingTransport,
    kinds,
)


async def admit(engine: Engine) -> Admitted:
    outcome = await engine.gateway.admit({"Authorization": f"Bearer {engine.token()}"})
    assert isinstance(outcome, Admitted), outcome
    return outcome


async def test_an_opened_session_takes_the_admitted_slot_and_joins_its_tenants_stream() -> None:
    async with Engine() as engine:
        await engine.publish("p1")
        with await admit(engine) as admitted:
            session = await engine.gateway.open_session(
                admitted, transport=RecordingTransport(), socket=RecordingSocket(), remote=REMOTE
            )

            assert isinstance(session, Session)
            assert engine.gateway.registry.get(session.connection_id) is session
            assert session.describe().remote == REMOTE
            position = engine.gateway.broadcaster.position(TENANT)
            assert position is not None
            assert position.seq == 1
            await session.leave()

        assert engine.gateway.registry.get(session.connection_id) is None
        assert engine.gateway.registry.reserved == 0


async def test_with_the_broker_down_opening_is_refused_503_and_the_slot_goes_back() -> None:
    async with Engine() as engine:
        admitted = await admit(engine)
        await engine.broker.close()

        with admitted:
            refusal = await engine.gateway.open_session(
                admitted, transport=RecordingTransport(), socket=RecordingSocket(), remote=REMOTE
            )

            assert refusal is BROKER_UNAVAILABLE
            assert (refusal.status, refusal.code) == (503, "BROKER_UNAVAILABLE")
            assert engine.gateway.broadcaster.position(TENANT) is None

        assert engine.gateway.registry.reserved == 0
        assert engine.gateway.registry.count() == 0


async def test_a_started_session_is_counted_and_welcomed_first() -> None:
    async with Engine() as engine:
        conn = await engine.connect(read_welcome=False)

        assert kinds(await conn.received()) == ["welcome"]
        assert engine.metric("pm_ws_connections_opened_total") == 1
        assert engine.metric("pm_ws_connections_active") == 1


async def test_an_ended_session_leaves_its_stream_and_counts_under_its_close_reason() -> None:
    async with Engine() as engine:
        conn = await engine.connect()
        conn.session.close(close_codes.SLOW_CLIENT, notify=False)

        await engine.gateway.end_session(conn.session, peer_close_code=1000)

        assert conn.session.state is SessionState.CLOSED
        assert conn.session.finished
        assert engine.gateway.broadcaster.position(TENANT) is None, "no one listens any more"
        assert engine.metric("pm_ws_connections_closed_total", {"code": "4008"}) == 1
        assert engine.metric("pm_ws_connections_active") == 0


async def test_a_close_the_session_did_not_choose_counts_under_the_peers_code_or_1006() -> None:
    async with Engine() as engine:
        by_peer, vanished = await engine.connect(), await engine.connect()

        await engine.gateway.end_session(by_peer.session, peer_close_code=1000)
        await engine.gateway.end_session(vanished.session)

        assert engine.metric("pm_ws_connections_closed_total", {"code": "1000"}) == 1
        assert engine.metric("pm_ws_connections_closed_total", {"code": "1006"}) == 1


async def test_ending_a_session_twice_counts_it_once() -> None:
    async with Engine() as engine:
        conn = await engine.connect()

        await engine.gateway.end_session(conn.session, peer_close_code=1000)
        await engine.gateway.end_session(conn.session, peer_close_code=1000)

        assert engine.metric("pm_ws_connections_closed_total", {"code": "1000"}) == 1
        assert engine.metric("pm_ws_connections_active") == 0
