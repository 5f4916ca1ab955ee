"""Two pm-server processes sharing one Redis: one stream per tenant, delivered on both."""

from __future__ import annotations

import asyncio

from pm_testkit import (
    RedisServer,
    ServerPair,
    event_ids,
    new_tenant,
    seqs,
    subscribers,
    wait_until,
)


async def test_an_event_published_on_one_process_reaches_clients_of_both_and_no_other_tenant(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    other = new_tenant()
    on_a, on_b = await a.connect(tenant), await b.connect(tenant)
    other_on_a, other_on_b = await a.connect(other), await b.connect(other)
    # The same project id in both tenants: ids are only unique within a tenant.
    for client in (on_a, on_b, other_on_a, other_on_b):
        await client.subscribe(["p1"])

    sent = await a.publish(tenant, "p1")
    [got_on_a] = await on_a.events(1)
    [got_on_b] = await on_b.events(1)
    theirs = await b.publish(other, "p1")
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
        await client.expect_nothing_pending()


async def test_alternating_publishes_on_two_processes_form_one_sequence(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    clients = await subscribers((a, b), tenant)
    count = 12

    published = [await (a, b)[i % 2].publish(tenant, "p1", event_id=f"e{i}") for i in range(count)]

    assert [p.seq for p in published] == list(range(1, count + 1))
    assert len({p.epoch for p in published}) == 1
    for client in clients:
        events = await client.events(count)
        assert seqs(events) == list(range(1, count + 1))
        assert event_ids(events) == [f"e{i}" for i in range(count)]
        assert {event.position.epoch for event in events} == {published[0].epoch}
        await client.expect_nothing_pending()


async def test_concurrent_publishes_on_two_processes_get_consecutive_seqs_delivered_in_order(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    clients = await subscribers((a, b, a, b), tenant)
    count = 40

    published = await asyncio.gather(*((a, b)[i % 2].publish(tenant, "p1") for i in range(count)))

    assert sorted(p.seq for p in published) == list(range(1, count + 1))
    by_seq = {p.seq: p.event_id for p in published}
    for client in clients:
        events = await client.events(count)
        assert seqs(events) == list(range(1, count + 1))
        assert event_ids(events) == [by_seq[seq] for seq in range(1, count + 1)]
        await client.expect_nothing_pending()


async def test_a_publish_retried_through_the_other_process_is_stored_and_delivered_once(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    clients = await subscribers((a, b), tenant)

    first = await a.publish(tenant, "p1", event_id="order-42")
    retried = await b.publish(tenant, "p1", event_id="order-42")
    following = await b.publish(tenant, "p1")

    assert retried == first
    assert following.seq == first.seq + 1
    for client in clients:
        assert event_ids(await client.events(2)) == ["order-42", following.event_id]
        await client.expect_nothing_pending()


async def test_a_process_listens_to_a_tenant_only_while_it_has_connections_of_it(
    server_pair: ServerPair, redis_server: RedisServer, tenant: str
) -> None:
    a, b = server_pair
    with redis_server.client() as admin:

        async def listening(count: int) -> None:
            def probe() -> bool:
                [(_, subscribed)] = admin.pubsub_numsub(channel)
                return bool(subscribed == count)

            await wait_until(probe, what=f"{count} processes subscribed to {channel!r}")

        before = set(admin.pubsub_channels())
        first_on_a = await a.connect(tenant)
        # Other tests' channels may only go away meanwhile: the new one is this tenant's.
        [channel] = set(admin.pubsub_channels()) - before
        second_on_a = await a.connect(tenant)
        on_b = await b.connect(tenant)
        await on_b.subscribe(["p1"])
        await listening(2)  # one subscription per process, however many connections

        await first_on_a.ws.close()
        await second_on_a.ws.close()
        await listening(1)
        sent = await a.publish(tenant, "p1")
        assert event_ids(await on_b.events(1)) == [sent.event_id]

        await on_b.ws.close()
        await listening(0)


async def test_a_client_resumes_on_another_process_with_nothing_lost(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    first = await a.connect(tenant)
    await first.subscribe(["p1"])
    for server in (a, b, a):
        await server.publish(tenant, "p1")
    seen = await first.events(3)
    await first.ws.close()
    # Missed while away: two events it wants, one of a project it never subscribed to.
    missed = [
        await a.publish(tenant, "p1"),
        await b.publish(tenant, "p2"),
        await b.publish(tenant, "p1"),
    ]

    again = await b.connect(tenant)
    ack = await again.subscribe(["p1"], resume_from=seen[-1].position)
    replayed = await again.events(ack.replayed)
    live = await a.publish(tenant, "p1")
    [live_event] = await again.events(1)

    assert again.welcome.position == missed[-1].position
    assert ack.recovered
    assert ack.replayed == 2
    assert ack.position == missed[-1].position
    assert event_ids(replayed) == [missed[0].event_id, missed[2].event_id]
    assert seqs(replayed) == [4, 6]
    assert live_event.event_id == live.event_id
    assert live_event.position.seq == 7
    await again.expect_nothing_pending()


async def test_an_operator_disconnect_on_one_process_closes_the_users_connections_on_all(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    alice_on_a = await a.connect(tenant, "alice")
    alice_on_b = await b.connect(tenant, "alice")
    bob_on_b = await b.connect(tenant, "bob")
    alice_elsewhere = await b.connect(new_tenant(), "alice")

    answer = await a.disconnect(tenant, user_id="alice")

    assert answer.status == 200
    assert answer.json() == {"closed": 1}  # the count is of this process's connections
    for client in (alice_on_a, alice_on_b):
        [closing] = await client.expect_close(4010, "closing")
        assert closing.closing.code == "DISCONNECTED_BY_OPERATOR"
    await bob_on_b.expect_nothing_pending()
    await alice_elsewhere.expect_nothing_pending()


async def test_an_operator_disconnect_by_connection_id_reaches_the_process_holding_it(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair
    target = await b.connect(tenant, "carol")
    sibling = await b.connect(tenant, "carol")

    answer = await a.disconnect(tenant, connection_id=target.welcome.connection_id)
    code, _ = await target.until_closed()

    assert answer.status == 200
    assert answer.json() == {"closed": 0}
    assert code == 4010
    await sibling.expect_nothing_pending()
