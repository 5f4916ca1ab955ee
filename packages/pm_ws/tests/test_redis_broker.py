"""What the Redis broker adds: many processes, lost messages, outages and safe key names."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pm_proto as pb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_testkit import RedisServer, TcpProxy, free_port
from pm_ws.brokers._redis_codec import TenantKeys, decode_channel_message, encode_disconnect
from pm_ws.brokers.broker import DisconnectRequest
from pm_ws.brokers.redis_broker import RedisBroker
from pm_ws.codec import event_frame, event_message, frame_binary
from pm_ws.events import ConnectionId, StreamPosition, TenantId, UserId
from pm_ws.exceptions import BrokerUnavailable, PublishOutcomeUnknown
from redis.crc import key_slot

from packages.pm_ws.tests.conftest import ACME, GLOBEX, RedisBrokerFactory, draft
from packages.pm_ws.tests.test_broker_contract import listening


async def test_two_brokers_share_one_sequence_and_see_each_others_events(
    make_redis_broker: RedisBrokerFactory,
) -> None:
    here, there = await make_redis_broker(), await make_redis_broker()
    here_sink, there_sink = await listening(here, ACME), await listening(there, ACME)

    seqs = [(await (here, there)[i % 2].publish(draft(f"e{i}"))).position.seq for i in range(4)]
    await here_sink.wait_for_events(4)
    await there_sink.wait_for_events(4)

    assert seqs == [1, 2, 3, 4]
    assert here_sink.seqs == there_sink.seqs == [1, 2, 3, 4]
    assert [e.event_id for e in here_sink.events] == ["e0", "e1", "e2", "e3"]
    assert here_sink.events == there_sink.events


async def test_events_are_delivered_and_replayed_framed_from_the_bytes_redis_stored(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker()
    sink = await listening(broker, ACME)
    published = await broker.publish(draft("e1"))
    await sink.wait_for_events(1)
    history = await broker.read_after(ACME, StreamPosition(published.position.epoch, 0))
    with redis_server.client() as admin:
        ((_, fields),) = admin.xrange(TenantKeys.of(broker.key_prefix, ACME).history)
    stored = fields[b"event"]

    (live,) = sink.events
    (replayed,) = history.events
    # ServerMessage field 13 (event), length-delimited: key 0x6a, a one-byte length, the bytes.
    expected = frame_binary(b"\x6a" + bytes([len(stored)]) + stored)
    assert live.encoded == replayed.encoded == stored
    assert event_frame(live) == event_frame(replayed) == expected
    assert pb.ServerMessage.FromString(expected[2:]).event == event_message(live)


async def test_a_retry_through_another_process_is_recognised_as_a_duplicate(
    make_redis_broker: RedisBrokerFactory,
) -> None:
    here, there = await make_redis_broker(), await make_redis_broker()

    first = await here.publish(draft("e1"))
    retried = await there.publish(draft("e1"))

    assert retried.duplicate
    assert retried.position == first.position


async def test_disconnect_orders_reach_other_processes(
    make_redis_broker: RedisBrokerFactory,
) -> None:
    here, there = await make_redis_broker(), await make_redis_broker()
    sink = await listening(there, ACME)
    order = DisconnectRequest(ACME, user_id=UserId("u7"))

    await here.publish_disconnect(order)
    await sink.wait_until(lambda: bool(sink.disconnects))

    assert sink.disconnects == [order]


async def test_events_published_while_the_network_is_cut_are_caught_up_from_history(
    own_redis_server: RedisServer,
    redis_proxy: TcpProxy,
    make_redis_broker: RedisBrokerFactory,
) -> None:
    cut_off = await make_redis_broker(redis_proxy.url)
    publisher = await make_redis_broker(own_redis_server.url)
    sink = await listening(cut_off, ACME)
    await publisher.publish(draft("e1"))
    await sink.wait_for_events(1)

    await redis_proxy.cut()
    for i in range(2, 7):
        await publisher.publish(draft(f"e{i}"))
    redis_proxy.restore()
    await sink.wait_for_events(6)

    assert sink.seqs == [1, 2, 3, 4, 5, 6]
    assert sink.lags == []
    assert (await cut_off.health()).ok


async def test_a_gap_that_history_no_longer_covers_is_reported_as_lagged(
    own_redis_server: RedisServer,
    redis_proxy: TcpProxy,
    make_redis_broker: RedisBrokerFactory,
) -> None:
    cut_off = await make_redis_broker(redis_proxy.url, history_size=3)
    publisher = await make_redis_broker(own_redis_server.url, history_size=3)
    sink = await listening(cut_off, ACME)
    await publisher.publish(draft("e1"))
    await sink.wait_for_events(1)

    await redis_proxy.cut()
    for i in range(2, 11):
        await publisher.publish(draft(f"e{i}"))
    redis_proxy.restore()
    await sink.wait_until(lambda: sink.lags == [ACME])
    await publisher.publish(draft("e11"))
    await sink.wait_for_events(2)

    assert sink.seqs == [1, 11]
    assert sink.lags == [ACME]


async def test_every_event_arrives_in_order_when_pubsub_connections_are_killed_mid_stream(
    own_redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    listener = await make_redis_broker(own_redis_server.url)
    publisher = await make_redis_broker(own_redis_server.url)
    sink = await listening(listener, ACME)
    killed = []

    with own_redis_server.client() as admin:
        for round_start in range(1, 61, 15):
            # Every round but the first is published while the listener reconnects.
            for i in range(round_start, round_start + 15):
                await publisher.publish(draft(f"e{i}"))
            await sink.wait_for_events(round_start + 14)
            killed.append(admin.client_kill_filter(_type="pubsub"))
        await publisher.publish(draft("e61"))
        await sink.wait_for_events(61)

    assert killed == [1, 1, 1, 1]
    assert sink.seqs == list(range(1, 62))
    assert sink.lags == []


async def test_a_stopped_redis_fails_publishes_and_health_until_it_is_back(
    own_redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker(own_redis_server.url)
    sink = await listening(broker, ACME)
    before = await broker.publish(draft("e1"))
    await sink.wait_for_events(1)

    own_redis_server.stop()
    with pytest.raises(BrokerUnavailable) as raised:
        await broker.publish(draft("e2"))
    health = await broker.health()
    with pytest.raises(BrokerUnavailable):
        await broker.listen(TenantId("newcomer"))
    own_redis_server.start()
    # The restarted server kept nothing: the stream restarts in a new epoch,
    # which the broker must report as lost events once it has reconnected.
    await sink.wait_until(lambda: sink.lags == [ACME])
    after = await broker.publish(draft("e2"))
    await sink.wait_for_events(2)

    assert raised.value.message == "event broker unavailable"
    assert raised.value.__cause__ is not None
    assert not health.ok
    assert after.position.epoch != before.position.epoch
    assert after.position.seq == 1
    assert sink.events[-1].position == after.position
    assert (await broker.health()).ok


async def test_a_publish_redis_runs_after_the_timeout_is_reported_as_outcome_unknown(
    redis_proxy: TcpProxy, own_redis_server: RedisServer
) -> None:
    prefix = "stall"
    stalled = RedisBroker(redis_proxy.url, key_prefix=prefix, timeout_secs=0.2)
    direct = RedisBroker(own_redis_server.url, key_prefix=prefix, timeout_secs=2)
    await stalled.start()
    await direct.start()
    try:
        await stalled.publish(draft("warm-up", GLOBEX))  # Redis knows the script now
        redis_proxy.hold()
        with pytest.raises(PublishOutcomeUnknown) as raised:
            await stalled.publish(draft("e1"))
        redis_proxy.release()  # Redis reads the script late, and runs it
        async with asyncio.timeout(5):
            while True:
                if (await direct.position(ACME)).seq == 1:
                    break
                await asyncio.sleep(0.01)
        retried = await direct.publish(draft("e1"))
    finally:
        await stalled.close()
        await direct.close()

    assert isinstance(raised.value, BrokerUnavailable)
    assert "retry with the same event_id" in raised.value.message
    assert retried.duplicate
    assert retried.position.seq == 1


async def test_start_fails_when_redis_cannot_be_reached() -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", timeout_secs=1)

    with pytest.raises(BrokerUnavailable):
        await broker.start()
    health = await broker.health()
    await broker.close()

    assert not health.ok


async def test_a_lost_counter_restarts_numbering_in_a_new_epoch_and_lags_listeners(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker()
    sink = await listening(broker, ACME)
    before = [await broker.publish(draft(f"e{i}")) for i in (1, 2)]
    await sink.wait_for_events(2)
    keys = TenantKeys.of(broker.key_prefix, ACME)

    with redis_server.client() as admin:
        admin.delete(keys.meta)
    after = await broker.publish(draft("e3"))
    await sink.wait_until(lambda: sink.lags == [ACME])
    await broker.publish(draft("e4"))
    await sink.wait_for_events(3)
    old_read = await broker.read_after(ACME, before[-1].position)

    assert after.position.seq == 1
    assert after.position.epoch != before[0].position.epoch
    assert sink.seqs == [1, 2, 2]
    assert sink.events[-1].position.epoch == after.position.epoch
    assert not old_read.complete


async def test_a_lost_history_keeps_the_numbering_and_reads_as_incomplete(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker()
    before = [await broker.publish(draft(f"e{i}")) for i in (1, 2, 3)]
    keys = TenantKeys.of(broker.key_prefix, ACME)

    with redis_server.client() as admin:
        admin.delete(keys.history)
    after = await broker.publish(draft("e4"))
    from_gap = await broker.read_after(ACME, before[1].position)
    from_last = await broker.read_after(ACME, before[2].position)

    assert after.position == StreamPosition(before[0].position.epoch, 4)
    assert not from_gap.complete
    assert from_last.complete
    assert [e.event_id for e in from_last.events] == ["e4"]


async def test_large_seq_numbers_survive_the_publish_script(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker()
    start = await broker.position(ACME)
    keys = TenantKeys.of(broker.key_prefix, ACME)
    with redis_server.client() as admin:
        admin.hset(keys.meta, "seq", 2**40)

    published = await broker.publish(draft("e1"))
    read = await broker.read_after(ACME, StreamPosition(start.epoch, 2**40))

    assert published.position == StreamPosition(start.epoch, 2**40 + 1)
    assert [e.position for e in read.events] == [published.position]
    assert read.complete


@pytest.mark.parametrize(
    "tenants",
    [
        ["a", "a:b", "a:b:c", "b:c"],
        ["{x}", "{x}:y", "x}{", "{", "}"],
        ["pm:{acme}:meta", "acme", "ünïcødé", "a" * 128],
    ],
)
async def test_tenant_ids_with_separators_and_braces_keep_separate_streams(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory, tenants: list[str]
) -> None:
    broker = await make_redis_broker()
    sink = await listening(broker, *map(TenantId, tenants))

    results = [await broker.publish(draft("same-id", TenantId(t))) for t in tenants]
    await sink.wait_for_events(len(tenants))

    assert [r.position.seq for r in results] == [1] * len(tenants)
    assert not any(r.duplicate for r in results)
    assert sorted(e.tenant_id for e in sink.events) == sorted(tenants)
    with redis_server.client() as admin:
        stored = set(admin.keys(f"{broker.key_prefix}:*"))
    for tenant in tenants:
        keys = TenantKeys.of(broker.key_prefix, TenantId(tenant))
        assert {keys.meta, keys.history, keys.event_ids} <= stored
        assert len({key_slot(k) for k in (keys.meta, keys.history, keys.event_ids)}) == 1


async def test_the_process_subscribes_only_to_the_tenants_it_listens_to(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker()
    await listening(broker)
    acme, globex = (
        TenantKeys.of(broker.key_prefix, ACME),
        TenantKeys.of(broker.key_prefix, GLOBEX),
    )
    pattern = f"{broker.key_prefix}:*"

    await broker.listen(ACME)
    with redis_server.client() as admin:
        while_listening = set(admin.pubsub_channels(pattern))
    await broker.unlisten(ACME)
    # Listening returns once confirmed, so Redis has handled the UNSUBSCRIBE sent before.
    await broker.listen(GLOBEX)
    with redis_server.client() as admin:
        after_leaving = set(admin.pubsub_channels(pattern))

    assert while_listening == {acme.channel}
    assert after_leaving == {globex.channel}


async def test_garbage_on_a_tenant_channel_is_ignored(
    redis_server: RedisServer, make_redis_broker: RedisBrokerFactory
) -> None:
    broker = await make_redis_broker()
    sink = await listening(broker, ACME)
    channel = TenantKeys.of(broker.key_prefix, ACME).channel

    with redis_server.client() as admin:
        for junk in (b"", b"X", b"E\x00", b"E" + b"\x00" * 8 + b"\xff\xff", b"D[1]"):
            admin.publish(channel, junk)
    await broker.publish(draft("e1"))
    await sink.wait_for_events(1)

    assert sink.seqs == [1]
    assert sink.disconnects == []
    assert sink.lags == []


@given(
    tenant=st.text(min_size=1, max_size=128),
    other=st.text(min_size=1, max_size=128),
)
def test_distinct_tenants_never_share_a_key_and_keys_hold_one_hash_tag(
    tenant: str, other: str
) -> None:
    keys = TenantKeys.of("pm", TenantId(tenant))
    names = (keys.meta, keys.history, keys.event_ids, keys.channel)

    for name in names:
        assert name.count(b"{") == 1
        assert name.count(b"}") == 1
    if tenant != other:
        other_keys = TenantKeys.of("pm", TenantId(other))
        assert not set(names) & {other_keys.meta, other_keys.history, other_keys.event_ids}
        assert keys.channel != other_keys.channel


@given(
    user=st.none() | st.text(max_size=128),
    connection=st.none() | st.text(max_size=128),
)
def test_disconnect_orders_survive_the_channel_encoding(
    user: str | None, connection: str | None
) -> None:
    order = DisconnectRequest(
        ACME,
        user_id=None if user is None else UserId(user),
        connection_id=None if connection is None else ConnectionId(connection),
    )

    assert decode_channel_message(ACME, encode_disconnect(order)) == order


@given(data=st.binary(max_size=64))
def test_arbitrary_channel_bytes_decode_or_raise_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_channel_message(ACME, data)


async def test_concurrent_first_listens_of_a_tenant_deliver_each_event_once(
    make_redis_broker: RedisBrokerFactory,
) -> None:
    broker = await make_redis_broker()
    sink = await listening(broker)

    await asyncio.gather(broker.listen(ACME), broker.listen(ACME))
    await broker.publish(draft("e1"))
    await sink.wait_for_events(1)

    assert sink.seqs == [1]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"history_size": 0}, "history_size"),
        ({"history_ttl_secs": 0}, "history_ttl_secs"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"key_prefix": "pm{1}"}, "key_prefix"),
        ({"reconnect_backoff": (0, 1)}, "reconnect_backoff"),
        ({"reconnect_backoff": (2, 1)}, "reconnect_backoff"),
        ({"timeout_secs": 0}, "timeout_secs"),
    ],
)
def test_settings_out_of_range_are_refused(setting: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RedisBroker("redis://127.0.0.1:1/0", **setting)
