"""What the in-process broker adds to the broker contract."""

from __future__ import annotations

import pytest
from pm_ws.brokers.broker import DisconnectRequest
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.events import StreamPosition
from pm_ws.exceptions import BrokerUnavailable

from packages.pm_ws.tests.conftest import ACME, ManualClock, RecordingSink, draft


def broker_on(clock: ManualClock, *, history_ttl_secs: float = 300) -> MemoryBroker:
    return MemoryBroker(
        history_ttl_secs=history_ttl_secs, clock=clock.monotonic, wall_clock_ns=clock.time_ns
    )


async def test_publish_has_delivered_to_the_sink_when_it_returns(clock: ManualClock) -> None:
    broker = broker_on(clock)
    sink = RecordingSink()
    broker.attach(sink)
    await broker.listen(ACME)

    result = await broker.publish(draft("e1"))
    await broker.publish_disconnect(DisconnectRequest(ACME))

    assert [e.position for e in sink.events] == [result.position]
    assert sink.disconnects == [DisconnectRequest(ACME)]


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


async def test_a_closed_broker_stops_delivering(clock: ManualClock) -> None:
    broker = broker_on(clock)
    sink = RecordingSink()
    broker.attach(sink)
    await broker.listen(ACME)

    await broker.close()
    await broker.unlisten(ACME)

    with pytest.raises(BrokerUnavailable):
        await broker.listen(ACME)
    assert sink.events == []


@pytest.mark.parametrize(("size", "ttl"), [(0, 300), (1000, 0), (1000, -1)])
def test_settings_out_of_range_are_refused(size: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="history"):
        MemoryBroker(history_size=size, history_ttl_secs=ttl)
