"""The contract every broker backend keeps, run against memory:// and redis://."""

from __future__ import annotations

import sys

import pytest
from pm_ws.brokers.broker import Broker, DisconnectRequest, PublishResult
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.brokers.redis_broker import RedisBroker
from pm_ws.brokers.url import open_broker
from pm_ws.events import ConnectionId, StreamPosition, TenantId, UserId
from pm_ws.exceptions import BrokerUnavailable, UnsupportedBrokerUrl

from packages.pm_ws.tests.conftest import (
    ACME,
    GLOBEX,
    BrokerFactory,
    ManualClock,
    RecordingSink,
    draft,
)


async def publish_all(broker: Broker, *event_ids: str) -> list[PublishResult]:
    return [await broker.publish(draft(event_id)) for event_id in event_ids]


async def listening(broker: Broker, *tenants: TenantId) -> RecordingSink:
    """Attach a recording sink to `broker` and listen to `tenants`."""
    sink = RecordingSink()
    broker.attach(sink)
    for tenant in tenants:
        await broker.listen(tenant)
    return sink


def seqs_of(sink: RecordingSink, tenant: TenantId) -> list[int]:
    return [e.position.seq for e in sink.events if e.tenant_id == tenant]


async def test_first_event_gets_seq_1_and_later_ones_follow_without_gaps(broker: Broker) -> None:
    results = await publish_all(broker, "e1", "e2", "e3", "e4", "e5")

    assert [r.position.seq for r in results] == [1, 2, 3, 4, 5]
    assert len({r.position.epoch for r in results}) == 1
    assert [r.event_id for r in results] == ["e1", "e2", "e3", "e4", "e5"]
    assert not any(r.duplicate for r in results)
    assert await broker.position(ACME) == results[-1].position


async def test_empty_stream_is_at_seq_0_and_keeps_its_epoch(broker: Broker) -> None:
    empty = await broker.position(ACME)

    assert empty.seq == 0
    assert empty.epoch
    assert await broker.position(ACME) == empty
    first = await broker.publish(draft("e1"))
    assert first.position == StreamPosition(empty.epoch, 1)


async def test_each_tenant_has_its_own_stream(broker: Broker) -> None:
    acme_first = await broker.publish(draft("e1", ACME))
    globex_first = await broker.publish(draft("e1", GLOBEX))
    acme_second = await broker.publish(draft("e2", ACME))

    assert acme_first.position.seq == 1
    assert globex_first.position.seq == 1
    assert not globex_first.duplicate
    assert acme_second.position.seq == 2
    assert (await broker.position(GLOBEX)).seq == 1


async def test_republishing_an_event_id_returns_the_original_position_and_delivers_nothing(
    broker: Broker,
) -> None:
    sink = await listening(broker, ACME)
    first = await broker.publish(draft("e1"))

    again = await broker.publish(draft("e1", payload=b"retried"))
    await broker.publish(draft("e2"))
    await sink.wait_for_events(2)

    assert again == PublishResult("e1", first.position, duplicate=True)
    assert sink.seqs == [1, 2]
    assert (await broker.position(ACME)).seq == 2


async def test_history_keeps_only_the_last_history_size_events(make_broker: BrokerFactory) -> None:
    broker = await make_broker(history_size=3)
    results = await publish_all(broker, "e1", "e2", "e3", "e4", "e5")
    epoch = results[0].position.epoch

    from_start = await broker.read_after(ACME, StreamPosition(epoch, 0))
    from_second = await broker.read_after(ACME, StreamPosition(epoch, 2))

    assert [e.position.seq for e in from_start.events] == [3, 4, 5]
    assert not from_start.complete
    assert [e.position.seq for e in from_second.events] == [3, 4, 5]
    assert from_second.complete
    assert from_second.position == StreamPosition(epoch, 5)


async def test_an_event_id_that_left_history_can_be_published_again(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(history_size=2)
    await publish_all(broker, "e1", "e2", "e3")

    again = await broker.publish(draft("e1"))
    still_held = await broker.publish(draft("e3"))

    assert again.position.seq == 4
    assert not again.duplicate
    assert still_held.duplicate
    assert still_held.position.seq == 3


async def test_events_leave_history_once_the_ttl_has_passed(
    make_broker: BrokerFactory, clock: ManualClock
) -> None:
    broker = await make_broker(history_ttl_secs=10)
    results = await publish_all(broker, "e1", "e2")
    clock.advance(6)
    await broker.publish(draft("e3"))
    clock.advance(5)
    epoch = results[0].position.epoch

    from_start = await broker.read_after(ACME, StreamPosition(epoch, 0))
    from_second = await broker.read_after(ACME, StreamPosition(epoch, 2))
    expired_again = await broker.publish(draft("e1"))
    fresh_again = await broker.publish(draft("e3"))

    assert [e.position.seq for e in from_start.events] == [3]
    assert not from_start.complete
    assert [e.position.seq for e in from_second.events] == [3]
    assert from_second.complete
    assert expired_again == PublishResult("e1", StreamPosition(epoch, 4), duplicate=False)
    assert fresh_again == PublishResult("e3", StreamPosition(epoch, 3), duplicate=True)


async def test_reading_after_the_current_position_is_complete_and_empty(broker: Broker) -> None:
    results = await publish_all(broker, "e1", "e2")

    read = await broker.read_after(ACME, results[-1].position)

    assert read.complete
    assert list(read.events) == []
    assert read.position == results[-1].position


async def test_reading_an_empty_stream_from_its_start_is_complete(broker: Broker) -> None:
    empty = await broker.position(ACME)

    read = await broker.read_after(ACME, empty)

    assert read.complete
    assert list(read.events) == []


async def test_reading_after_a_position_of_another_epoch_is_incomplete(broker: Broker) -> None:
    results = await publish_all(broker, "e1", "e2")

    read = await broker.read_after(ACME, StreamPosition("an-older-epoch", 1))

    assert not read.complete
    assert list(read.events) == []
    assert read.position == results[-1].position


async def test_reading_after_a_position_ahead_of_the_stream_is_incomplete(broker: Broker) -> None:
    results = await publish_all(broker, "e1", "e2")

    read = await broker.read_after(ACME, StreamPosition(results[0].position.epoch, 7))

    assert not read.complete
    assert list(read.events) == []
    assert read.position == results[-1].position


async def test_history_returns_events_as_published(broker: Broker, clock: ManualClock) -> None:
    sent = draft("e1", payload=b"\x00\xffbinary")
    result = await broker.publish(sent)

    read = await broker.read_after(ACME, StreamPosition(result.position.epoch, 0))

    (event,) = read.events
    assert event.tenant_id == ACME
    assert event.event_id == "e1"
    assert event.type == sent.type
    assert event.scope == sent.scope
    assert event.payload == b"\x00\xffbinary"
    assert event.actor_user_id == "u1"
    assert event.occurred_at_ms == sent.occurred_at_ms
    assert event.position == result.position
    assert event.published_at_ns == clock.time_ns()


async def test_the_sink_gets_each_listened_tenants_events_in_seq_order(broker: Broker) -> None:
    sink = await listening(broker, ACME, GLOBEX)

    for event_id in ("e1", "e2", "e3"):
        await broker.publish(draft(event_id, ACME))
        if event_id != "e3":
            await broker.publish(draft(event_id, GLOBEX))
    await sink.wait_for_events(5)

    assert seqs_of(sink, ACME) == [1, 2, 3]
    assert seqs_of(sink, GLOBEX) == [1, 2]
    acme_events = [e for e in sink.events if e.tenant_id == ACME]
    history = await broker.read_after(ACME, StreamPosition(acme_events[0].position.epoch, 0))
    assert acme_events == list(history.events)
    assert sink.lags == []


async def test_a_tenant_not_listened_to_is_stored_but_not_delivered(broker: Broker) -> None:
    sink = await listening(broker, GLOBEX)

    stored = await broker.publish(draft("e1", ACME))
    await broker.publish(draft("e1", GLOBEX))
    await sink.wait_for_events(1)

    assert [e.tenant_id for e in sink.events] == [GLOBEX]
    assert (await broker.position(ACME)) == stored.position


async def test_an_unlistened_tenant_delivers_nothing_more(broker: Broker) -> None:
    sink = await listening(broker, ACME, GLOBEX)
    await broker.publish(draft("e1"))
    await sink.wait_for_events(1)

    await broker.unlisten(ACME)
    await broker.publish(draft("e2"))
    await broker.publish(draft("e1", GLOBEX))
    await sink.wait_until(lambda: seqs_of(sink, GLOBEX) == [1])

    assert seqs_of(sink, ACME) == [1]


async def test_listening_twice_delivers_each_event_once(broker: Broker) -> None:
    sink = await listening(broker, ACME, ACME)

    await publish_all(broker, "e1", "e2")
    await sink.wait_for_events(2)

    assert sink.seqs == [1, 2]


async def test_a_tenant_listened_to_again_delivers_only_new_events(broker: Broker) -> None:
    sink = await listening(broker, ACME)
    await broker.publish(draft("e1"))
    await sink.wait_for_events(1)
    await broker.unlisten(ACME)
    await broker.publish(draft("e2"))

    await broker.listen(ACME)
    await broker.publish(draft("e3"))
    await sink.wait_for_events(2)

    assert sink.seqs == [1, 3]
    assert sink.lags == []


async def test_unlistening_a_tenant_never_listened_to_is_harmless(broker: Broker) -> None:
    sink = await listening(broker)

    await broker.unlisten(ACME)
    await broker.listen(ACME)
    await broker.publish(draft("e1"))
    await sink.wait_for_events(1)

    assert sink.seqs == [1]


async def test_disconnect_orders_reach_the_sink_only_for_listened_tenants(broker: Broker) -> None:
    sink = await listening(broker, ACME)
    order = DisconnectRequest(ACME, user_id=UserId("u1"), connection_id=ConnectionId("c1"))

    await broker.publish_disconnect(DisconnectRequest(GLOBEX))
    await broker.publish_disconnect(order)
    await sink.wait_until(lambda: len(sink.disconnects) == 1)

    assert sink.disconnects == [order]
    assert sink.events == []


async def test_a_broker_takes_one_sink(broker: Broker) -> None:
    broker.attach(RecordingSink())

    with pytest.raises(RuntimeError):
        broker.attach(RecordingSink())


async def test_listening_needs_a_sink(broker: Broker) -> None:
    with pytest.raises(RuntimeError):
        await broker.listen(ACME)


async def test_health_is_ok_while_running(broker: Broker) -> None:
    health = await broker.health()

    assert health.ok
    assert health.latency_ms >= 0


async def test_a_closed_broker_refuses_work_and_closing_again_is_harmless(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker()
    sink = await listening(broker, ACME)
    await broker.close()
    await broker.close()

    with pytest.raises(BrokerUnavailable) as raised:
        await broker.publish(draft("e1"))
    with pytest.raises(BrokerUnavailable):
        await broker.listen(GLOBEX)
    await broker.unlisten(ACME)
    assert raised.value.message == "event broker unavailable"
    assert not (await broker.health()).ok
    assert sink.events == []


def test_open_broker_picks_the_backend_by_scheme() -> None:
    memory = open_broker("memory://", history_size=10, history_ttl_secs=5)
    redis = open_broker("redis://127.0.0.1:1/0", history_size=10, history_ttl_secs=5)
    secure = open_broker("rediss://127.0.0.1:1/0", history_size=10, history_ttl_secs=5)

    assert isinstance(memory, MemoryBroker)
    assert isinstance(redis, RedisBroker)
    assert isinstance(secure, RedisBroker)


@pytest.mark.parametrize("url", ["kafka://host", "http://host", "memory", "", "redis:/x"])
def test_open_broker_names_the_accepted_schemes_for_anything_else(url: str) -> None:
    with pytest.raises(UnsupportedBrokerUrl) as raised:
        open_broker(url, history_size=10, history_ttl_secs=5)

    assert "memory://" in raised.value.message
    assert "redis://" in raised.value.message


def test_open_broker_never_repeats_a_bad_redis_url() -> None:
    with pytest.raises(UnsupportedBrokerUrl) as raised:
        open_broker("redis://:s3cret@host:notaport/0", history_size=10, history_ttl_secs=5)

    assert "s3cret" not in str(raised.value)


def test_open_broker_names_the_extra_when_redis_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "pm_ws.brokers._redis_link")
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)

    with pytest.raises(UnsupportedBrokerUrl) as raised:
        open_broker("redis://127.0.0.1:6379/0", history_size=10, history_ttl_secs=5)

    assert raised.value.message == 'redis:// needs the redis extra: pip install "pm-ws[redis]"'
