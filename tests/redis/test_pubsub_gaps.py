"""A process whose Redis subscription dropped messages fills the gap, or says it cannot.

Process A connects to Redis as the ACL user `listener`; B as `default`.
Revoking `listener`'s channel permissions makes Redis drop A's pub/sub
connection and refuse its re-subscription until they are given back, so the
events published in between (through B) are missed by A, and by A alone,
however fast A tries to reconnect. `CLIENT KILL TYPE pubsub` in the middle
of a stream covers the racy case: both processes lose their subscription at
whatever point they were, and the assertions hold whatever the timing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest
from pm_testkit import (
    RedisServer,
    RedisUser,
    ServerLauncher,
    ServerPair,
    event_ids,
    seqs,
    subscribers,
)

LISTENER = RedisUser("listener", "listener-password-0123")
HISTORY_SIZE = 50
REESTABLISHED = "redis subscription re-established"
# The broker's log line for a SUBSCRIBE that Redis 7's ACL refused (logged once per attempt).
REFUSED = re.escape("redis subscription down (this user has no permissions")
ATTEMPT = re.compile(r"redis subscription down .*\(attempt (\d+)\)")


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path_factory.mktemp("redis-acl"), users=[LISTENER]).start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def listener_and_publisher(acl_redis: RedisServer, module_servers: ServerLauncher) -> ServerPair:
    history = {"HISTORY_SIZE": str(HISTORY_SIZE)}
    # Debug logging shows every reconnection attempt, not only the first.
    listener = {"BROKER_URL": acl_redis.url_for(LISTENER), "LOG_LEVEL": "debug", **history}
    a = module_servers.start(listener, name="A")
    b = module_servers.start({"BROKER_URL": acl_redis.url, **history}, name="B")
    return a, b


@contextlib.contextmanager
def pubsub_cut_off(redis_server: RedisServer, user: RedisUser) -> Iterator[None]:
    """Drop `user`'s pub/sub connections and refuse it channels until the block ends."""
    with redis_server.client() as admin:
        # Redis 7 disconnects subscribers whose channel permissions are revoked.
        admin.execute_command("ACL", "SETUSER", user.name, "resetchannels")
        try:
            yield
        finally:
            admin.execute_command("ACL", "SETUSER", user.name, "allchannels")


async def test_events_missed_while_a_process_was_unsubscribed_are_recovered_from_history(
    listener_and_publisher: ServerPair,
    acl_redis: RedisServer,
    tenant: str,
) -> None:
    a, b = listener_and_publisher
    clients = await subscribers((a, b), tenant)
    first = await b.publish(tenant, "p1")
    for client in clients:
        await client.events(1)
    reconnects = a.stderr.count(REESTABLISHED)

    with pubsub_cut_off(acl_redis, LISTENER):
        missed = [await b.publish(tenant, "p1") for _ in range(5)]
    delivered = [await client.events(len(missed)) for client in clients]
    live = await a.publish(tenant, "p1")

    await a.wait_log(REESTABLISHED, count=reconnects + 1)
    assert first.seq == 1
    for events in delivered:
        assert seqs(events) == [2, 3, 4, 5, 6]
        assert event_ids(events) == [p.event_id for p in missed]
    for client in clients:
        [event] = await client.events(1)
        assert event.event_id == live.event_id
        assert event.position.seq == 7
        await client.expect_nothing_pending()


async def test_a_gap_longer_than_history_closes_that_process_clients_with_broadcast_lagged(
    listener_and_publisher: ServerPair,
    acl_redis: RedisServer,
    tenant: str,
) -> None:
    a, b = listener_and_publisher
    on_a, on_b = await subscribers((a, b), tenant)
    first = await b.publish(tenant, "p1")
    for client in (on_a, on_b):
        await client.events(1)

    with pubsub_cut_off(acl_redis, LISTENER):
        missed = [await b.publish(tenant, "p1") for _ in range(HISTORY_SIZE + 10)]
    on_b_events = await on_b.events(len(missed))
    lagged, closing = await on_a.expect_close(4011, "error", "closing")

    last = missed[-1].seq
    assert last == HISTORY_SIZE + 11
    # B never lost its subscription: its client has every event.
    assert seqs(on_b_events) == list(range(2, last + 1))
    # A cannot fill the gap: its client is told so and closed, never left with a silent gap.
    assert lagged.error.code == "BROADCAST_LAGGED"
    assert closing.closing.code == "BROADCAST_LAGGED"

    # The client resumes as told: what history still holds is replayed, with recovered false.
    again = await a.connect(tenant)
    ack = await again.subscribe(["p1"], resume_from=first.position)
    replayed = await again.events(ack.replayed)
    live = await b.publish(tenant, "p1")
    [live_event] = await again.events(1)

    assert not ack.recovered
    assert ack.position == missed[-1].position
    assert seqs(replayed) == list(range(last - HISTORY_SIZE + 1, last + 1))
    assert live_event.event_id == live.event_id
    assert live_event.position.seq == last + 1
    assert event_ids(await on_b.events(1)) == [live.event_id]
    for client in (again, on_b):
        await client.expect_nothing_pending()


async def test_every_client_gets_every_event_once_in_order_while_pubsub_connections_are_killed(
    listener_and_publisher: ServerPair,
    acl_redis: RedisServer,
    tenant: str,
) -> None:
    a, b = listener_and_publisher
    clients = await subscribers((a, b, a, b), tenant)
    reconnects = {server: server.stderr.count(REESTABLISHED) for server in (a, b)}
    # The whole stream fits in history, so every gap a kill opens can be filled.
    count = HISTORY_SIZE - 10
    killed = 0

    published = []
    with acl_redis.client() as admin:
        for i in range(count):
            published.append(await (a, b)[i % 2].publish(tenant, "p1"))
            if i % 10 == 3:
                killed += admin.client_kill_filter(_type="pubsub")
    delivered = [await client.events(count) for client in clients]

    # The first kill found both processes subscribed; each of them came back.
    assert killed >= 2
    for server in (a, b):
        await server.wait_log(REESTABLISHED, count=reconnects[server] + 1)
    assert [p.seq for p in published] == list(range(1, count + 1))
    for events in delivered:
        assert seqs(events) == list(range(1, count + 1))
        assert event_ids(events) == [p.event_id for p in published]
    live = await b.publish(tenant, "p1")
    for client in clients:
        [event] = await client.events(1)
        assert event.event_id == live.event_id
        await client.expect_nothing_pending()


async def test_a_refused_subscription_is_retried_with_growing_backoff_and_not_reported_back(
    listener_and_publisher: ServerPair,
    acl_redis: RedisServer,
    tenant: str,
) -> None:
    a, b = listener_and_publisher
    client = await a.connect(tenant)  # gives A a channel, which the ACL then refuses
    await client.subscribe(["p1"])
    start = len(a.stderr.lines)

    with pubsub_cut_off(acl_redis, LISTENER):
        await a.wait_log(REFUSED, count=a.stderr.count(REFUSED) + 3)
    during = [line for line in a.stderr.lines[start:] if "redis subscription" in line]
    last_refusal = max(i for i, line in enumerate(during) if re.search(REFUSED, line))
    await a.wait_ready(200)
    sent = await b.publish(tenant, "p1")

    # Each refusal is another failed attempt: the wait grows (SPEC §6: retries with backoff).
    attempts = [int(m[1]) for line in during if (m := ATTEMPT.search(line))]
    assert attempts[:4] == [1, 2, 3, 4], "\n".join(during)
    # A connection whose SUBSCRIBE is refused was never re-established.
    assert not [line for line in during[:last_refusal] if REESTABLISHED in line]
    assert event_ids(await client.events(1)) == [sent.event_id]
    await client.expect_nothing_pending()
