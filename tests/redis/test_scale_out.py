"""Two pm-server processes sharing one Redis: one stream per tenant, delivered on both."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.redis.harness import (
    ADMIN_KEY,
    ClientFactory,
    RedisProcess,
    ServerProcess,
    event_ids,
    eventually,
    new_tenant,
    publish,
    seqs,
)

Pair = tuple[ServerProcess, ServerProcess]


async def test_an_event_published_on_one_process_reaches_clients_of_both_and_no_other_tenant(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant, other = new_tenant(), new_tenant()
    on_a, on_b = await redis_clients(a, tenant), await redis_clients(b, tenant)
    other_on_a, other_on_b = await redis_clients(a, other), await redis_clients(b, other)
    # The same project id in both tenants: ids are only unique within a tenant.
    for client in (on_a, on_b, other_on_a, other_on_b):
        await client.subscribe("p1")

    sent = await publish(redis_http, a, tenant, "p1")
    [got_on_a] = await on_a.events(1)
    [got_on_b] = await on_b.events(1)
    theirs = await publish(redis_http, b, other, "p1")
    [other_got_on_a] = await other_on_a.events(1)
    [other_got_on_b] = await other_on_b.events(1)

    assert got_on_a.event_id == got_on_b.event_id == sent.event_id
    assert got_on_a.position == got_on_b.position == sent.position
    assert sent.seq == 1
    # Each process handled `tenant`'s event before `other`'s, so a leak would have come first.
    assert other_got_on_a.event_id == other_got_on_b.event_id == theirs.event_id
    assert theirs.seq == 1
    assert theirs.epoch != sent.epoch
    for client in (on_a, on_b, other_on_a, other_on_b):
        await client.ping()


async def test_alternating_publishes_on_two_processes_form_one_sequence(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    clients = [await redis_clients(a, tenant), await redis_clients(b, tenant)]
    for client in clients:
        await client.subscribe("p1")
    count = 12

    published = [
        await publish(redis_http, (a, b)[i % 2], tenant, "p1", event_id=f"e{i}")
        for i in range(count)
    ]

    assert [p.seq for p in published] == list(range(1, count + 1))
    assert len({p.epoch for p in published}) == 1
    for client in clients:
        events = await client.events(count)
        assert seqs(events) == list(range(1, count + 1))
        assert event_ids(events) == [f"e{i}" for i in range(count)]
        assert {event.position.epoch for event in events} == {published[0].epoch}
        await client.ping()


async def test_concurrent_publishes_on_two_processes_get_consecutive_seqs_delivered_in_order(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    clients = [await redis_clients(server, tenant) for server in (a, b, a, b)]
    for client in clients:
        await client.subscribe("p1")
    count = 40

    published = await asyncio.gather(
        *(publish(redis_http, (a, b)[i % 2], tenant, "p1") for i in range(count))
    )

    assert sorted(p.seq for p in published) == list(range(1, count + 1))
    by_seq = {p.seq: p.event_id for p in published}
    for client in clients:
        events = await client.events(count)
        assert seqs(events) == list(range(1, count + 1))
        assert event_ids(events) == [by_seq[seq] for seq in range(1, count + 1)]
        await client.ping()


async def test_a_publish_retried_through_the_other_process_is_stored_and_delivered_once(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    clients = [await redis_clients(a, tenant), await redis_clients(b, tenant)]
    for client in clients:
        await client.subscribe("p1")

    first = await publish(redis_http, a, tenant, "p1", event_id="order-42")
    retried = await publish(redis_http, b, tenant, "p1", event_id="order-42")
    following = await publish(redis_http, b, tenant, "p1")

    assert retried == first
    assert following.seq == first.seq + 1
    for client in clients:
        assert event_ids(await client.events(2)) == ["order-42", following.event_id]
        await client.ping()


async def test_a_process_listens_to_a_tenant_only_while_it_has_connections_of_it(
    gateway_pair: Pair,
    redis_server: RedisProcess,
    redis_clients: ClientFactory,
    redis_http: aiohttp.ClientSession,
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    with redis_server.client() as admin:

        async def subscribers(count: int) -> None:
            async def probe() -> bool:
                [(_, subscribed)] = admin.pubsub_numsub(channel)
                return bool(subscribed == count)

            await eventually(probe, lambda: f"{count} processes subscribed to {channel!r}")

        before = set(admin.pubsub_channels())
        first_on_a = await redis_clients(a, tenant)
        # Other tests' channels may only go away meanwhile: the new one is this tenant's.
        [channel] = set(admin.pubsub_channels()) - before
        second_on_a = await redis_clients(a, tenant)
        on_b = await redis_clients(b, tenant)
        await on_b.subscribe("p1")
        await subscribers(2)  # one subscription per process, however many connections

        await first_on_a.ws.close()
        await second_on_a.ws.close()
        await subscribers(1)
        sent = await publish(redis_http, a, tenant, "p1")
        assert event_ids(await on_b.events(1)) == [sent.event_id]

        await on_b.ws.close()
        await subscribers(0)


async def test_a_client_resumes_on_another_process_with_nothing_lost(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    first = await redis_clients(a, tenant)
    await first.subscribe("p1")
    for server in (a, b, a):
        await publish(redis_http, server, tenant, "p1")
    seen = await first.events(3)
    await first.ws.close()
    # Missed while away: two events it wants, one of a project it never subscribed to.
    missed = [
        await publish(redis_http, a, tenant, "p1"),
        await publish(redis_http, b, tenant, "p2"),
        await publish(redis_http, b, tenant, "p1"),
    ]

    again = await redis_clients(b, tenant)
    ack = await again.subscribe("p1", resume_from=seen[-1].position)
    replayed = await again.events(ack.replayed)
    live = await publish(redis_http, a, tenant, "p1")
    [live_event] = await again.events(1)

    assert again.welcome.position == missed[-1].position
    assert ack.recovered
    assert ack.replayed == 2
    assert ack.position == missed[-1].position
    assert event_ids(replayed) == [missed[0].event_id, missed[2].event_id]
    assert seqs(replayed) == [4, 6]
    assert live_event.event_id == live.event_id
    assert live_event.position.seq == 7
    await again.ping()


async def test_an_operator_disconnect_on_one_process_closes_the_users_connections_on_all(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    alice_on_a = await redis_clients(a, tenant, "alice")
    alice_on_b = await redis_clients(b, tenant, "alice")
    bob_on_b = await redis_clients(b, tenant, "bob")
    alice_elsewhere = await redis_clients(b, new_tenant(), "alice")

    async with redis_http.post(
        f"{a.base_url}/api/v1/disconnect",
        json={"tenant_id": tenant, "user_id": "alice"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as response:
        status, answer = response.status, await response.json()

    assert status == 200
    assert answer == {"closed": 1}  # the count is of this process's connections
    for client in (alice_on_a, alice_on_b):
        code, before = await client.closed()
        assert code == 4010
        assert [m.WhichOneof("payload") for m in before] == ["closing"]
        assert before[0].closing.code == "DISCONNECTED_BY_OPERATOR"
    await bob_on_b.ping()
    await alice_elsewhere.ping()


async def test_an_operator_disconnect_by_connection_id_reaches_the_process_holding_it(
    gateway_pair: Pair, redis_clients: ClientFactory, redis_http: aiohttp.ClientSession
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    target = await redis_clients(b, tenant, "carol")
    sibling = await redis_clients(b, tenant, "carol")

    async with redis_http.post(
        f"{a.base_url}/api/v1/disconnect",
        json={"tenant_id": tenant, "connection_id": target.welcome.connection_id},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as response:
        status, answer = response.status, await response.json()
    code, _ = await target.closed()

    assert status == 200
    assert answer == {"closed": 0}
    assert code == 4010
    await sibling.ping()
