"""The per-connection protocol logic, driven with no socket (SPEC §2, §3, §4).

Timers: the heartbeat and expiry deadlines run on a real `DeadlineWheel` on the
test's loop. Where the wall clock decides (expiry), the clock is a `WallClock` the
test moves; a few tests run the expiry check (`Session._expire`, private) or the
heartbeat (`Session._ping`) directly, because the loop's own clock cannot be moved
from a test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pm_proto as pb
import pytest
from pm_auth import RateLimiterFactory
from pm_ws import close_codes
from pm_ws.brokers.broker import DisconnectRequest, HistoryRead
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.codec import event_frame
from pm_ws.commands import CommandContext
from pm_ws.events import StreamPosition, TenantId, UserId
from pm_ws.exceptions import BrokerUnavailable, ProtocolError
from pm_ws.limits import GatewayLimits
from pm_ws.registry import ConnectionInfo
from pm_ws.session import Session, SessionState

from packages.pm_ws.tests.session_harness import (
    NOW,
    OTHER_TENANT,
    TENANT,
    USER,
    WAIT_SECS,
    Connection,
    Engine,
    RecordingSocket,
    kinds,
    make_token,
    ping,
    seqs,
    subscribe,
    unsubscribe,
)

PING_FRAME = b"\x89\x00"


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine() as engine:
        yield engine


@pytest.fixture
async def conn(engine: Engine) -> Connection:
    return await engine.connect()


class GatedHistoryBroker(MemoryBroker):
    """A MemoryBroker whose history read waits for the test's go-ahead: a slow read.

    With `read_first`, history is read before waiting (events published meanwhile
    are not in it); otherwise after (they are).
    """

    def __init__(self, *, read_first: bool) -> None:
        super().__init__()
        self.read_first = read_first
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def read_after(self, tenant_id: TenantId, position: StreamPosition) -> HistoryRead:
        early = await super().read_after(tenant_id, position) if self.read_first else None
        self.reading.set()
        await self.go.wait()
        return early or await super().read_after(tenant_id, position)


class HistoryDownBroker(MemoryBroker):
    """A MemoryBroker whose history cannot be read."""

    async def read_after(self, tenant_id: TenantId, position: StreamPosition) -> HistoryRead:
        raise BrokerUnavailable("event broker unavailable")


def fire_expiry_timer(session: Session) -> None:
    """Run the pending expiry check now, as the deadline wheel would when its slot comes."""
    assert session._expiry is not None, "no expiry check is pending"
    session._expire()


def refresh(request_id: str, token: str) -> pb.ClientMessage:
    return pb.ClientMessage(request_id=request_id, refresh_token=pb.RefreshToken(token=token))


def command(request_id: str, name: str, body: bytes = b"") -> pb.ClientMessage:
    return pb.ClientMessage(request_id=request_id, command=pb.Command(name=name, body=body))


def error_of(message: pb.ServerMessage) -> pb.Error:
    assert message.WhichOneof("payload") == "error", message
    return message.error


async def still_open(conn: Connection) -> None:
    assert conn.closed_with == []
    assert conn.session.state is SessionState.OPEN
    answer = await conn.request(ping("still-open"))
    assert answer.WhichOneof("payload") == "pong"


async def test_welcome_comes_first_and_describes_the_connection() -> None:
    limits = GatewayLimits(
        max_message_bytes=4096,
        rate_limit_max_requests=50,
        rate_limit_window_secs=30.5,
        max_subscriptions=20,
        heartbeat_interval_secs=12.5,
    )
    async with Engine(limits=limits) as engine:
        await engine.publish("p1")
        last = await engine.publish("p2")
        conn = await engine.connect(read_welcome=False, expires_in=600)

        messages = await conn.received()

    assert kinds(messages) == ["welcome"]
    assert messages[0].request_id == ""
    assert messages[0].welcome == pb.Welcome(
        connection_id=conn.session.connection_id,
        tenant_id=TENANT,
        user_id=USER,
        server_time_ms=int(NOW * 1000),
        heartbeat_interval_secs=13,
        token_expires_at_ms=int(NOW + 600) * 1000,
        position=pb.StreamPosition(epoch=last.position.epoch, seq=2),
        limits=pb.Limits(
            max_message_bytes=4096,
            rate_limit_max_requests=50,
            rate_limit_window_secs=31,
            max_subscriptions=20,
        ),
    )


async def test_ping_is_answered_with_pong_echoing_request_id_and_client_time(
    engine: Engine, conn: Connection
) -> None:
    engine.clock.advance(5)

    answer = await conn.request(ping("r-1", client_time_ms=1234))

    assert answer == pb.ServerMessage(
        request_id="r-1",
        pong=pb.Pong(client_time_ms=1234, server_time_ms=int((NOW + 5) * 1000)),
    )


async def test_subscribe_and_unsubscribe_are_acked_with_request_id_and_tenant_position(
    engine: Engine, conn: Connection
) -> None:
    published = await engine.publish("p9")

    subscribed = await conn.request(subscribe("s-1", projects=["p1"]))
    unsubscribed = await conn.request(unsubscribe("u-1", projects=["p1"]))

    position = pb.StreamPosition(epoch=published.position.epoch, seq=1)
    assert subscribed == pb.ServerMessage(request_id="s-1", ack=pb.Ack(position=position))
    assert unsubscribed == pb.ServerMessage(request_id="u-1", ack=pb.Ack(position=position))


async def test_command_is_answered_with_the_handlers_result(
    engine: Engine, conn: Connection
) -> None:
    @engine.gateway.commands.command("board.echo")
    async def echo(context: CommandContext, body: bytes) -> bytes:
        return f"{context.tenant.user_id}@{context.connection_id}:".encode() + body[::-1]

    answer = await conn.request(command("c-1", "board.echo", b"abc"))

    assert answer == pb.ServerMessage(
        request_id="c-1",
        command_result=pb.CommandResult(body=f"alice@{conn.session.connection_id}:cba".encode()),
    )


async def test_unknown_command_is_answered_with_an_error_naming_the_field(
    conn: Connection,
) -> None:
    answer = await conn.request(command("c-2", "board.nothing"))

    assert answer.request_id == "c-2"
    assert error_of(answer).code == "UNKNOWN_COMMAND"
    assert error_of(answer).field == "command.name"
    await still_open(conn)


async def test_a_failing_command_handler_is_answered_with_internal_error_leaking_nothing(
    engine: Engine, conn: Connection
) -> None:
    @engine.gateway.commands.command("board.crash")
    async def crash(context: CommandContext, body: bytes) -> bytes:
        raise RuntimeError("password=hunter2 in /srv/app/handlers.py")

    @engine.gateway.commands.command("board.refuse")
    async def refuse(context: CommandContext, body: bytes) -> bytes:
        raise ProtocolError("you may not move this card", code="FORBIDDEN", field="card")

    crashed = await conn.request(command("c-3", "board.crash"))
    refused = await conn.request(command("c-4", "board.refuse"))

    assert crashed.request_id == "c-3"
    assert error_of(crashed).code == "INTERNAL_ERROR"
    assert "hunter2" not in error_of(crashed).message
    assert "/srv" not in error_of(crashed).message
    assert refused == pb.ServerMessage(
        request_id="c-4",
        error=pb.Error(code="FORBIDDEN", message="you may not move this card", field="card"),
    )
    await still_open(conn)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.ClientMessage(request_id="r-9", subscribe=pb.Subscribe()), "project_ids"),
        (pb.ClientMessage(request_id="r-9"), "payload"),
        (pb.ClientMessage(request_id="r-9", command=pb.Command(name="Board Move")), "command.name"),
        (
            pb.ClientMessage(request_id="r-9", unsubscribe=pb.Unsubscribe(sprint_ids=["x" * 129])),
            "sprint_ids",
        ),
        (
            pb.ClientMessage(request_id="r-9", refresh_token=pb.RefreshToken(token="")),
            "refresh_token.token",
        ),
    ],
    ids=["no-ids", "empty-oneof", "bad-command-name", "id-too-long", "empty-token"],
)
async def test_an_invalid_message_is_answered_with_an_error_echoing_its_request_id(
    engine: Engine, conn: Connection, message: pb.ClientMessage, field: str
) -> None:
    answer = await conn.request(message)

    assert answer.request_id == "r-9"
    assert error_of(answer).code == "INVALID_MESSAGE"
    assert error_of(answer).field == field
    assert engine.metric("pm_ws_errors_total", {"code": "INVALID_MESSAGE"}) == 1
    await still_open(conn)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("subscribe me", "INVALID_MESSAGE"),
        (b"", "INVALID_MESSAGE"),
        (b"\xff\xff\xff", "DECODE_ERROR"),
    ],
    ids=["text", "empty", "undecodable"],
)
async def test_text_empty_and_undecodable_frames_get_an_error_and_the_connection_stays_open(
    conn: Connection, frame: bytes | str, code: str
) -> None:
    answer = await conn.request(frame)

    assert answer.request_id == ""
    assert error_of(answer).code == code
    await still_open(conn)


NO_PAYLOAD = pb.ClientMessage(request_id="r").SerializeToString()
BAD_FRAMES: list[bytes | str] = ["text", b"", b"\xff\xff\xff", NO_PAYLOAD]


async def test_ten_violations_in_a_row_close_with_policy_violation(conn: Connection) -> None:
    for i in range(9):
        answer = await conn.request(BAD_FRAMES[i % len(BAD_FRAMES)])
        assert error_of(answer).code in {"INVALID_MESSAGE", "DECODE_ERROR"}
    assert conn.closed_with == []

    await conn.send(b"\xff\xff\xff")
    messages = await conn.received()

    assert kinds(messages) == ["error", "closing"]
    assert messages[1].closing.code == "POLICY_VIOLATION"
    assert conn.closed_with == [close_codes.POLICY_VIOLATION]
    assert close_codes.POLICY_VIOLATION.code == 1008


async def test_a_valid_frame_resets_the_violation_count(conn: Connection) -> None:
    for _ in range(9):
        await conn.request(b"")
    assert (await conn.request(ping("ok"))).WhichOneof("payload") == "pong"
    for _ in range(9):
        await conn.request(b"")
    assert conn.closed_with == []

    await conn.send(b"")

    assert kinds(await conn.received()) == ["error", "closing"]
    assert conn.closed_with == [close_codes.POLICY_VIOLATION]


async def test_frames_over_the_rate_limit_are_refused_with_their_request_id_and_not_processed() -> (
    None
):
    limits = GatewayLimits(rate_limit_max_requests=3, rate_limit_window_secs=60)
    async with Engine(limits=limits) as engine:
        conn = await engine.connect()
        for i in range(3):
            assert (await conn.request(ping(f"p-{i}"))).WhichOneof("payload") == "pong"

        refused = await conn.request(subscribe("over", projects=["p1"]))
        await engine.publish("p1")
        after = await conn.received()

        assert refused.request_id == "over"
        assert error_of(refused).code == "RATE_LIMIT_EXCEEDED"
        assert len(conn.session.subscriptions) == 0
        assert after == []
        assert engine.metric("pm_ws_rate_limited_frames_total") == 1
        assert conn.closed_with == []


async def test_invalid_frames_count_against_the_rate_limit() -> None:
    limits = GatewayLimits(rate_limit_max_requests=3, rate_limit_window_secs=60)
    async with Engine(limits=limits) as engine:
        conn = await engine.connect()
        for _ in range(3):
            assert error_of(await conn.request(b"")).code == "INVALID_MESSAGE"

        refused = await conn.request(ping("p-1"))

        assert refused.request_id == "p-1"
        assert error_of(refused).code == "RATE_LIMIT_EXCEEDED"


async def test_a_connection_that_keeps_sending_over_the_rate_limit_is_closed_with_closing() -> None:
    limits = GatewayLimits(
        rate_limit_max_requests=2, rate_limit_window_secs=60, max_consecutive_rate_limited=5
    )
    async with Engine(limits=limits) as engine:
        conn = await engine.connect()
        for i in range(2):
            await conn.request(ping(f"ok-{i}"))
        for i in range(4):
            assert error_of(await conn.request(ping(f"over-{i}"))).code == "RATE_LIMIT_EXCEEDED"
        assert conn.closed_with == []

        await conn.send(ping("over-4"))

        answers = await conn.received()
        assert kinds(answers) == ["error", "closing"]
        assert answers[1].closing.code == "POLICY_VIOLATION"
        assert conn.closed_with == [close_codes.POLICY_VIOLATION]
        assert engine.metric("pm_ws_rate_limited_frames_total") == 5


async def test_a_frame_within_the_rate_limit_resets_the_count_of_refusals_in_a_row() -> None:
    limits = GatewayLimits(
        rate_limit_max_requests=1, rate_limit_window_secs=60, max_consecutive_rate_limited=3
    )
    async with Engine(limits=limits) as engine:
        conn = await engine.connect()
        await conn.request(ping("ok-0"))
        for i in range(2):
            await conn.request(ping(f"over-{i}"))
        conn.session._rate_limiter = RateLimiterFactory(1, 60).create()  # a token comes back
        assert (await conn.request(ping("ok-1"))).WhichOneof("payload") == "pong"
        for i in range(2):
            await conn.request(ping(f"over-again-{i}"))

        assert conn.closed_with == []


async def test_subscriptions_past_the_limit_are_refused_and_not_applied() -> None:
    async with Engine(limits=GatewayLimits(max_subscriptions=3)) as engine:
        conn = await engine.connect()
        first = await conn.request(subscribe("a", projects=["p1"], sprints=["s1"]))
        # p1 is held already: only w1 is new, which makes three of every kind together.
        second = await conn.request(subscribe("b", projects=["p1"], work_items=["w1"]))

        refused = await conn.request(subscribe("c", sprints=["s2"]))
        await engine.publish("p9", sprint_id="s2")
        after = await conn.received()

        assert kinds([first, second]) == ["ack", "ack"]
        assert refused.request_id == "c"
        assert error_of(refused).code == "SUBSCRIPTION_LIMIT"
        assert conn.session.subscriptions.sprint_ids == {"s1"}
        assert after == []
        await still_open(conn)


async def test_events_reach_the_connection_by_project_sprint_or_work_item_each_once(
    engine: Engine, conn: Connection
) -> None:
    await conn.request(subscribe("s", projects=["p1"], sprints=["s1"], work_items=["w1"]))

    first = await engine.publish("p1", sprint_id="s1", work_item_id="w1")
    await engine.publish("p2", sprint_id="s1")
    await engine.publish("p3", work_item_id="w1")
    await engine.publish("p2", sprint_id="s2", work_item_id="w2")
    messages = await conn.received()

    assert seqs(messages) == [1, 2, 3]
    assert messages[0] == pb.ServerMessage(
        event=pb.Event(
            event_id=first.event_id,
            type="work_item.updated",
            scope=pb.Scope(project_id="p1", sprint_id="s1", work_item_id="w1"),
            position=pb.StreamPosition(epoch=first.position.epoch, seq=1),
            occurred_at_ms=int(NOW * 1000),
            actor_user_id="bob",
            payload=b'{"title":"Ship it"}',
        )
    )


async def test_no_event_crosses_tenants(engine: Engine, conn: Connection) -> None:
    other = await engine.connect(tenant=OTHER_TENANT)
    await conn.request(subscribe("s", projects=["p1"]))
    await other.request(subscribe("s", projects=["p1"]))

    await engine.publish("p1", tenant=OTHER_TENANT)
    await engine.publish("p1", tenant=OTHER_TENANT)
    await engine.publish("p1")

    assert [m.event.scope.project_id for m in await conn.received()] == ["p1"]
    assert seqs(await other.received()) == [1, 2]


async def test_unsubscribed_ids_stop_delivery(engine: Engine, conn: Connection) -> None:
    await conn.request(subscribe("s", projects=["p1", "p2"]))
    await conn.request(unsubscribe("u", projects=["p1"]))

    await engine.publish("p1")
    await engine.publish("p2")

    assert seqs(await conn.received()) == [2]


async def test_resume_replays_missed_matching_events_before_live_ones(engine: Engine) -> None:
    seen = await engine.publish("p1")
    await engine.publish("p1", sprint_id="s1")
    await engine.publish("p2")
    await engine.publish("p1")
    conn = await engine.connect()

    await conn.send(subscribe("r", projects=["p1"], resume_from=seen.position))
    await engine.publish("p1")
    messages = await conn.received()

    assert kinds(messages) == ["ack", "event", "event", "event"]
    assert messages[0] == pb.ServerMessage(
        request_id="r",
        ack=pb.Ack(
            recovered=True,
            replayed=2,
            position=pb.StreamPosition(epoch=seen.position.epoch, seq=4),
        ),
    )
    assert seqs(messages) == [2, 4, 5]
    assert engine.metric("pm_ws_history_replays_total", {"recovered": "true"}) == 1


async def test_resume_from_the_current_position_is_recovered_with_nothing_to_replay(
    engine: Engine,
) -> None:
    last = await engine.publish("p1")
    conn = await engine.connect()

    ack = await conn.request(subscribe("r", projects=["p1"], resume_from=last.position))

    assert ack.ack.recovered
    assert ack.ack.replayed == 0


async def test_resume_from_further_back_than_history_reaches_is_not_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pm_ws.session")
    async with Engine(broker=MemoryBroker(history_size=2)) as engine:
        seen = await engine.publish("p1")
        for _ in range(4):
            await engine.publish("p1")
        conn = await engine.connect()

        await conn.send(subscribe("r", projects=["p1"], resume_from=seen.position))
        messages = await conn.received()

        assert kinds(messages)[0] == "ack"
        assert not messages[0].ack.recovered
        assert messages[0].ack.position.seq == 5
        # What history still holds is replayed, but the client is told to refetch.
        assert seqs(messages) == [4, 5]
        assert engine.metric("pm_ws_history_replays_total", {"recovered": "false"}) == 1
        assert "history no longer reaches back to seq 2 (the oldest event kept is seq 4)" in (
            caplog.text
        )


@pytest.mark.parametrize("resume_from", ["another-epoch", "ahead"])
async def test_resume_from_another_epoch_or_ahead_of_the_stream_is_not_recovered(
    engine: Engine, resume_from: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pm_ws.session")
    await engine.publish("p1")
    last = await engine.publish("p1")
    position = (
        StreamPosition("a-previous-epoch", 1)
        if resume_from == "another-epoch"
        else StreamPosition(last.position.epoch, 99)
    )
    conn = await engine.connect()

    await conn.send(subscribe("r", projects=["p1"], resume_from=position))
    await engine.publish("p1")
    messages = await conn.received()

    assert messages[0] == pb.ServerMessage(
        request_id="r",
        ack=pb.Ack(
            recovered=False,
            replayed=0,
            position=pb.StreamPosition(epoch=last.position.epoch, seq=2),
        ),
    )
    assert seqs(messages) == [3]
    reason = (
        "the stream restarted its numbering"
        if resume_from == "another-epoch"
        else "the position is ahead of the stream, which is at seq 2"
    )
    assert f"not recovered: {reason}" in caplog.text


async def test_resume_while_history_is_unreachable_is_not_recovered_and_live_events_flow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pm_ws.session")
    async with Engine(broker=HistoryDownBroker()) as engine:
        await engine.publish("p1")
        conn = await engine.connect()

        await conn.send(subscribe("r", projects=["p1"], resume_from=StreamPosition("e", 0)))
        await engine.publish("p1")
        messages = await conn.received()

        assert kinds(messages) == ["ack", "event"]
        assert not messages[0].ack.recovered
        assert messages[0].ack.replayed == 0
        assert seqs(messages) == [2]
        assert "not recovered: the broker was unreachable" in caplog.text


@pytest.mark.parametrize("read_first", [True, False], ids=["read-then-wait", "wait-then-read"])
async def test_live_events_published_during_the_replay_follow_it_without_duplicates(
    read_first: bool,
) -> None:
    broker = GatedHistoryBroker(read_first=read_first)
    async with Engine(broker=broker) as engine:
        seen = await engine.publish("p1")
        await engine.publish("p1")
        await engine.publish("p1")
        conn = await engine.connect()
        resuming = asyncio.ensure_future(
            conn.send(subscribe("r", projects=["p1"], resume_from=seen.position))
        )
        await asyncio.wait_for(broker.reading.wait(), WAIT_SECS)

        await engine.publish("p1")
        await engine.publish("p2")
        await engine.publish("p1")
        during = await conn.received()
        broker.go.set()
        await asyncio.wait_for(resuming, WAIT_SECS)
        await engine.publish("p1")
        messages = await conn.received()

    assert during == [], "a live event overtook the replay"
    assert kinds(messages)[0] == "ack"
    assert messages[0].ack.recovered
    assert seqs(messages) == [2, 3, 4, 6, 7]


async def test_push_event_skips_events_already_sent(engine: Engine, conn: Connection) -> None:
    await conn.request(subscribe("s", projects=["p1"]))
    await engine.publish("p1")
    await engine.publish("p1")
    assert seqs(await conn.received()) == [1, 2]
    epoch = (await engine.broker.position(TENANT)).epoch
    history = await engine.broker.read_after(TENANT, StreamPosition(epoch, 0))

    for event in history.events:
        conn.session.push_event(event, event_frame(event))

    assert await conn.received() == []


async def test_no_event_held_back_during_the_read_follows_an_ack_whose_position_covers_it() -> None:
    broker = GatedHistoryBroker(read_first=False)
    async with Engine(broker=broker) as engine:
        conn = await engine.connect()
        resuming = asyncio.ensure_future(
            conn.send(
                subscribe("r", projects=["p1"], resume_from=StreamPosition("a-lost-epoch", 7))
            )
        )
        await asyncio.wait_for(broker.reading.wait(), WAIT_SECS)
        for _ in range(2):  # held back while history is read, and covered by the Ack
            await engine.publish("p1")
        broker.go.set()
        await asyncio.wait_for(resuming, WAIT_SECS)
        await engine.publish("p1")
        messages = await conn.received()

        assert kinds(messages)[0] == "ack"
        assert not messages[0].ack.recovered
        assert messages[0].ack.position.seq == 2
        assert seqs(messages) == [3]


async def test_a_replay_buffer_overflow_closes_a_slow_client() -> None:
    broker = GatedHistoryBroker(read_first=False)
    async with Engine(broker=broker, limits=GatewayLimits(send_queue_size=3)) as engine:
        conn = await engine.connect()
        start = await broker.position(TENANT)
        resuming = asyncio.ensure_future(
            conn.send(subscribe("r", projects=["p1"], resume_from=start))
        )
        await asyncio.wait_for(broker.reading.wait(), WAIT_SECS)

        for _ in range(4):
            await engine.publish("p1")
        broker.go.set()
        await asyncio.wait_for(resuming, WAIT_SECS)
        messages = await conn.received()

        assert conn.closed_with == [close_codes.SLOW_CLIENT]
        assert close_codes.SLOW_CLIENT.code == 4008
        assert messages == []
        assert engine.metric("pm_ws_slow_client_disconnects_total") == 1


async def test_a_send_queue_overflow_closes_a_slow_client_without_a_closing_message() -> None:
    async with Engine(limits=GatewayLimits(send_queue_size=2)) as engine:
        conn = await engine.connect()
        await conn.request(subscribe("s", projects=["p1"]))

        for _ in range(3):
            await engine.publish("p1")
        messages = await conn.received()

        assert conn.closed_with == [close_codes.SLOW_CLIENT]
        assert messages == []


async def test_answers_that_overflow_the_send_queue_close_a_slow_client_once() -> None:
    async with Engine(limits=GatewayLimits(send_queue_size=2)) as engine:
        conn = await engine.connect()

        for request_id in ("a", "b", "c", "d"):  # no flush between: the answers pile up
            await conn.send(ping(request_id))
        messages = await conn.received()

        assert conn.closed_with == [close_codes.SLOW_CLIENT]
        assert messages == []
        assert engine.metric("pm_ws_slow_client_disconnects_total") == 1


async def test_a_second_resume_sends_no_event_twice_nor_out_of_seq_order(engine: Engine) -> None:
    start = await engine.broker.position(TENANT)
    await engine.publish("p1")
    await engine.publish("p2")
    await engine.publish("p1")
    conn = await engine.connect()

    await conn.send(subscribe("a", projects=["p1"], resume_from=start))
    await conn.send(subscribe("b", projects=["p2"], resume_from=start))
    messages = await conn.received()

    events = seqs(messages)
    assert events == sorted(set(events)), f"events resent or out of seq order: {events}"
    second_ack = next(m.ack for m in messages if m.request_id == "b")
    assert second_ack.recovered == (2 in events), "recovered must say whether seq 2 was lost"


async def test_lagged_sends_broadcast_lagged_then_closes_4011(
    engine: Engine, conn: Connection
) -> None:
    await conn.request(subscribe("s", projects=["p1"]))

    engine.gateway.broadcaster.lagged(TENANT)
    messages = await conn.received()

    assert kinds(messages) == ["error", "closing"]
    assert messages[0].request_id == ""
    assert error_of(messages[0]).code == "BROADCAST_LAGGED"
    assert messages[1].closing.code == "BROADCAST_LAGGED"
    assert conn.closed_with == [close_codes.BROADCAST_LAGGED]
    assert close_codes.BROADCAST_LAGGED.code == 4011
    assert engine.metric("pm_ws_lagged_disconnects_total") == 1


async def test_operator_disconnect_closes_4010_once(engine: Engine, conn: Connection) -> None:
    request = DisconnectRequest(TENANT, user_id=UserId(USER))

    first = engine.gateway.broadcaster.disconnect_local(request)
    second = engine.gateway.broadcaster.disconnect_local(request)
    messages = await conn.received()

    assert (first, second) == (1, 0)
    assert conn.session.disconnect_by_operator() is False
    assert conn.closed_with == [close_codes.OPERATOR_DISCONNECT]
    assert close_codes.OPERATOR_DISCONNECT.code == 4010
    assert kinds(messages) == ["closing"]
    assert messages[0].closing.code == "DISCONNECTED_BY_OPERATOR"


async def test_token_expiry_closes_4001_only_once_exp_plus_leeway_has_passed_on_the_clock(
    engine: Engine,
) -> None:
    exp = int(NOW) - 29  # plus the 30 s leeway: the connection may live until NOW + 1
    engine.clock.now = NOW + 1 - 0.05  # so the expiry timer is armed 50 ms ahead
    conn = await engine.connect(exp=exp)

    engine.clock.read.clear()
    await asyncio.wait_for(engine.clock.read.wait(), WAIT_SECS)
    early = await conn.received()
    assert conn.closed_with == [], "closed before exp + leeway by the wall clock"
    assert early == []

    engine.clock.now = NOW + 1
    await conn.socket.wait_until(lambda: bool(conn.closed_with))
    messages = await conn.received()

    assert conn.closed_with == [close_codes.TOKEN_EXPIRED]
    assert close_codes.TOKEN_EXPIRED.code == 4001
    assert kinds(messages) == ["closing"]
    assert messages[0].closing.code == "TOKEN_EXPIRED"


async def test_an_expiry_timer_firing_early_rearms_instead_of_closing(
    engine: Engine, conn: Connection
) -> None:
    engine.clock.advance(3600 + 30 - 1)

    fire_expiry_timer(conn.session)

    assert conn.closed_with == []
    expiry = conn.session._expiry
    assert expiry is not None  # re-armed for the real deadline
    assert expiry.pending

    engine.clock.advance(1)
    fire_expiry_timer(conn.session)

    assert conn.closed_with == [close_codes.TOKEN_EXPIRED]


async def test_refresh_with_a_valid_token_is_acked_and_moves_the_expiry(engine: Engine) -> None:
    conn = await engine.connect(expires_in=60)
    engine.clock.advance(10)

    answer = await conn.request(refresh("t-1", engine.token(expires_in=600)))

    assert answer.request_id == "t-1"
    assert answer.WhichOneof("payload") == "ack"
    assert conn.session.context.expires_at == NOW + 610
    engine.clock.advance(50 + 30)  # past the old token's exp + leeway
    fire_expiry_timer(conn.session)
    assert conn.closed_with == []
    engine.clock.advance(600 - 50)  # exactly the new token's exp + leeway
    fire_expiry_timer(conn.session)
    assert conn.closed_with == [close_codes.TOKEN_EXPIRED]


@pytest.mark.parametrize(("sub", "tenant"), [("mallory", TENANT), (USER, OTHER_TENANT)])
async def test_refresh_for_another_user_or_tenant_closes_4003(
    engine: Engine, conn: Connection, sub: str, tenant: str
) -> None:
    await conn.send(refresh("t-1", engine.token(sub=sub, tenant=tenant)))
    messages = await conn.received()

    assert kinds(messages) == ["error", "closing"]
    assert messages[0].request_id == "t-1"
    assert messages[0].error.code == "INVALID_CLAIM"
    assert messages[1].closing.code == "IDENTITY_CHANGED"
    assert conn.closed_with == [close_codes.IDENTITY_CHANGED]
    assert close_codes.IDENTITY_CHANGED.code == 4003
    assert conn.session.context.user_id == USER
    assert conn.session.context.tenant_id == TENANT


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("garbage", "JWT_DECODE_FAILED"),
        ("other-secret", "JWT_DECODE_FAILED"),
        ("expired", "TOKEN_EXPIRED"),
        ("not-yet-valid", "INVALID_TOKEN"),
    ],
)
async def test_refresh_with_a_bad_token_is_answered_with_the_auth_code_and_stays_open(
    engine: Engine, conn: Connection, kind: str, code: str
) -> None:
    before = conn.session.context
    token = {
        "garbage": "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "other-secret": make_token(exp=NOW + 600, secret="another-secret-that-is-32-bytes-long"),
        "expired": engine.token(expires_in=-31),
        "not-yet-valid": make_token(exp=NOW + 7200, iat=NOW + 3600),
    }[kind]

    answer = await conn.request(refresh("t-1", token))

    assert answer.request_id == "t-1"
    assert error_of(answer).code == code
    assert token not in error_of(answer).message
    assert conn.session.context == before
    await still_open(conn)


async def test_a_peer_that_never_answers_pings_is_closed_4009_without_a_closing_message() -> None:
    limits = GatewayLimits(heartbeat_interval_secs=0.01, heartbeat_timeout_secs=0.02)
    async with Engine(limits=limits) as engine:
        conn = await engine.connect()

        await conn.socket.wait_until(lambda: bool(conn.closed_with))
        messages = await conn.received()

        assert conn.closed_with == [close_codes.HEARTBEAT_TIMEOUT]
        assert close_codes.HEARTBEAT_TIMEOUT.code == 4009
        assert conn.socket.controls
        assert set(conn.socket.controls) == {PING_FRAME}
        assert messages == []
        assert engine.metric("pm_ws_heartbeat_timeouts_total") == 1


async def test_a_peer_answering_pings_stays_connected() -> None:
    limits = GatewayLimits(heartbeat_interval_secs=0.01, heartbeat_timeout_secs=0.03)
    async with Engine(limits=limits) as engine:
        socket = RecordingSocket(answer_pings=True)
        conn = await engine.connect(socket=socket)

        # Ten pings take at least 0.1 s: more than three timeouts without an answer.
        await socket.wait_until(lambda: len(socket.controls) >= 10)

        assert conn.closed_with == []


async def test_closed_sets_finished_and_later_deadlines_do_nothing(
    engine: Engine, conn: Connection
) -> None:
    session = conn.session
    session._ping()  # the heartbeat's callback: sends a ping, awaits a pong
    pings = len(conn.socket.controls)

    session.closed()
    engine.clock.advance(10 * 3600)
    session._ping()
    session._expire()
    session._check_pong()

    assert session.finished
    assert session.state is SessionState.CLOSED
    assert len(conn.socket.controls) == pings
    assert conn.closed_with == []


async def test_a_closed_session_leaves_nothing_on_the_deadline_wheel(
    engine: Engine, conn: Connection
) -> None:
    wheel = conn.session.services.deadlines
    conn.session._ping()  # heartbeat, pong check and expiry all pending
    assert len(wheel) == 3

    conn.session.closed()

    assert len(wheel) == 0
    assert wheel.timers == 0


async def test_close_flushes_queued_events_then_closing_and_nothing_is_written_after(
    engine: Engine, conn: Connection
) -> None:
    await conn.request(subscribe("s", projects=["p1"]))
    await engine.publish("p1")

    conn.session.close(close_codes.NORMAL, "bye")
    messages = await conn.received()
    await engine.publish("p1")
    await conn.send(ping("late"))
    conn.session.lagged()
    conn.session.slow_client()
    conn.session.close(close_codes.INTERNAL_ERROR, "again")
    conn.session.closed()

    assert kinds(messages) == ["event", "closing"]
    assert messages[1].closing == pb.Closing(code="NORMAL", message="bye")
    assert await conn.received() == []
    assert conn.closed_with == [close_codes.NORMAL]
    assert conn.session.close_reason == close_codes.NORMAL


async def test_a_command_answered_after_the_connection_closed_writes_nothing(
    engine: Engine, conn: Connection
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @engine.gateway.commands.command("board.slow")
    async def slow(context: CommandContext, body: bytes) -> bytes:
        started.set()
        await release.wait()
        return b"done"

    answering = asyncio.ensure_future(conn.send(command("c-1", "board.slow")))
    await asyncio.wait_for(started.wait(), WAIT_SECS)
    conn.session.disconnect_by_operator()
    release.set()
    await asyncio.wait_for(answering, WAIT_SECS)

    assert kinds(await conn.received()) == ["closing"]


async def test_describe_shows_the_connection_as_the_admin_endpoint_does(
    engine: Engine, conn: Connection
) -> None:
    await conn.request(subscribe("s", projects=["p2", "p1"], sprints=["s1"]))

    assert conn.session.describe() == ConnectionInfo(
        connection_id=conn.session.connection_id,
        tenant_id=TENANT,
        user_id=USER,
        remote="203.0.113.7:50000",
        connected_at_ms=int(NOW * 1000),
        project_ids=("p1", "p2"),
        sprint_ids=("s1",),
        work_item_ids=(),
        queue_depth=0,
    )


async def test_a_resume_replaying_more_than_the_send_queue_holds_does_not_close_a_fast_client() -> (
    None
):
    async with Engine(limits=GatewayLimits(send_queue_size=4)) as engine:
        start = await engine.broker.position(TENANT)
        for _ in range(4):
            await engine.publish("p1")
        conn = await engine.connect()

        # The client reads everything (the transport never pushes back); only the
        # replay's own burst exceeds the queue.
        await conn.send(subscribe("r", projects=["p1"], resume_from=start))
        messages = await conn.received()

        assert conn.closed_with == [], "a client that reads fast was closed as slow"
        assert seqs(messages) == [1, 2, 3, 4]
