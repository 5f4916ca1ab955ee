"""What the in-process broker adds to the broker contract."""

from __future__ import annotations

import logging

import pytest
from pm_ws.brokers.broker import DisconnectRequest
from pm_ws.brokers.memory_broker import MemoryBroker, history_read
from pm_ws.events import Event, EventDraft, Scope, StreamPosition, TenantId

from packages.pm_ws.tests.conftest import ManualClock, RecordingSink

ACME = TenantId("acme")


def draft(event_id: str) -> EventDraft:
    return EventDraft(
        tenant_id=ACME,
        event_id=event_id,
        type="work_item.created",
        scope=Scope(project_id="p1"),
        payload=b"",
        actor_user_id="u1",
        occurred_at_ms=0,
    )


def broker_on(clock: ManualClock, *, history_ttl_secs: float = 300) -> MemoryBroker:
    return MemoryBroker(
        history_ttl_secs=history_ttl_secs, clock=clock.monotonic, wall_clock_ns=clock.time_ns
    )


class ExplodingSink(RecordingSink):
    def deliver(self, event: Event) -> None:
        raise RuntimeError("sink bug")

    def disconnect(self, request: DisconnectRequest) -> None:
        raise RuntimeError("sink bug")


async def test_publish_has_delivered_to_every_sink_when_it_returns(clock: ManualClock) -> None:
    broker = broker_on(clock)
    first, second = RecordingSink(), RecordingSink()
    await broker.subscribe(ACME, first)
    await broker.subscribe(ACME, second)

    result = await broker.publish(draft("e1"))

    assert [e.position for e in first.events] == [result.position]
    assert [e.position for e in second.events] == [result.position]


async def test_a_failing_sink_neither_fails_the_publish_nor_starves_the_others(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_on(clock)
    healthy = RecordingSink()
    await broker.subscribe(ACME, ExplodingSink())
    await broker.subscribe(ACME, healthy)

    with caplog.at_level(logging.ERROR, logger="pm_ws.brokers.memory_broker"):
        await broker.publish(draft("e1"))
        await broker.publish_disconnect(DisconnectRequest(ACME))

    assert healthy.seqs == [1]
    assert healthy.disconnects == [DisconnectRequest(ACME)]
    assert len(caplog.records) == 2


async def test_an_event_expires_when_its_age_reaches_the_ttl(clock: ManualClock) -> None:
    broker = broker_on(clock, history_ttl_secs=10)
    first = await broker.publish(draft("e1"))
    start = StreamPosition(first.position.epoch, 0)

    clock.advance(9.999)
    before = await broker.read_after(ACME, start)
    clock.advance(0.001)
    after = await broker.read_after(ACME, start)

    assert before.complete
    assert [e.event_id for e in before.events] == ["e1"]
    assert not after.complete
    assert list(after.events) == []


async def test_each_broker_instance_starts_new_epochs(clock: ManualClock) -> None:
    before_restart = await broker_on(clock).position(ACME)
    after_restart = await broker_on(clock).position(ACME)

    assert before_restart.seq == after_restart.seq == 0
    assert before_restart.epoch != after_restart.epoch


async def test_a_closed_broker_drops_its_sinks(clock: ManualClock) -> None:
    broker = broker_on(clock)
    sink = RecordingSink()
    await broker.subscribe(ACME, sink)

    await broker.close()
    await broker.unsubscribe(ACME, sink)

    assert sink.events == []


@pytest.mark.parametrize(("size", "ttl"), [(0, 300), (1000, 0), (1000, -1)])
def test_settings_out_of_range_are_refused(size: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="history"):
        MemoryBroker(history_size=size, history_ttl_secs=ttl)


def numbered(epoch: str, *seqs: int) -> list[Event]:
    return [
        Event.from_draft(draft(f"e{seq}"), StreamPosition(epoch, seq), published_at_ns=0)
        for seq in seqs
    ]


@pytest.mark.parametrize(
    ("held", "after", "current", "expected_seqs", "complete"),
    [
        ((3, 4, 5), 2, 5, [3, 4, 5], True),
        ((3, 4, 5), 0, 5, [3, 4, 5], False),
        ((3, 5), 2, 5, [5], False),
        ((3, 4), 2, 5, [3, 4], False),
        ((), 5, 5, [], True),
        ((), 0, 0, [], True),
        ((1, 2), 4, 2, [], False),
    ],
)
def test_history_read_is_complete_only_for_the_whole_run_after_the_position(
    held: tuple[int, ...], after: int, current: int, expected_seqs: list[int], complete: bool
) -> None:
    read = history_read(
        numbered("e", *held), StreamPosition("e", after), StreamPosition("e", current)
    )

    assert [e.position.seq for e in read.events] == expected_seqs
    assert read.complete is complete
    assert read.position == StreamPosition("e", current)
