"""Redis goes away and comes back: connections stay, the servers say so, delivery resumes."""

from __future__ import annotations

from pm_testkit import RedisServer, ServerPair, event_ids, subscribers


async def test_during_a_redis_outage_connections_stay_and_the_servers_report_it(
    server_pair: ServerPair, redis_server: RedisServer, tenant: str
) -> None:
    a, b = server_pair
    clients = await subscribers(server_pair, tenant)
    before = await a.publish(tenant, "p1")
    for client in clients:
        await client.events(1)
    revoked = await a.connect(tenant, "mallory")

    redis_server.stop()
    try:
        for server in (a, b):
            ready = await server.wait_ready(503)
            health = await server.get("/health")
            live = await server.get("/live")
            refused = await server.try_publish(tenant, "p1")

            assert (ready.status, ready.text) == (503, "Not Ready: broker unavailable")
            assert health.status == 503
            assert health.json()["status"] == "degraded"
            assert health.json()["checks"]["broker"]["status"] == "down"
            assert health.json()["connections"]["total"] >= 1
            assert (live.status, live.text) == (200, "OK")
            assert refused.status == 503
            assert refused.json()["code"] == "BROKER_UNAVAILABLE"
            assert refused.json()["event_id"]  # made by the server: the retry is idempotent
        for client in clients:
            await client.expect_nothing_pending()
        # An operator's disconnect still closes what it can reach, and says what it couldn't.
        disconnect = await a.disconnect(tenant, user_id="mallory")
        assert disconnect.status == 503
        assert disconnect.json()["code"] == "BROKER_UNAVAILABLE"
        assert (await revoked.until_closed())[0] == 4010
    finally:
        if not redis_server.running:
            redis_server.start()

    for server in (a, b):
        ready = await server.wait_ready(200)
        health = await server.get("/health")
        assert (ready.status, ready.text) == (200, "Ready")
        assert health.status == 200
        assert health.json()["checks"]["broker"]["status"] == "ok"
    # The restarted Redis is empty: the tenant's numbering restarts under a new
    # epoch, and what happened in between can't be told. Connected clients are
    # told to resume rather than left with a silent gap.
    for client in clients:
        lagged, _ = await client.expect_close(4011, "error", "closing")
        assert lagged.error.code == "BROADCAST_LAGGED"

    resumed = [await a.connect(tenant), await b.connect(tenant)]
    acks = [await client.subscribe(["p1"], resume_from=before.position) for client in resumed]
    after = await b.publish(tenant, "p1")

    assert after.epoch != before.epoch
    assert after.seq == 1
    for client, ack in zip(resumed, acks, strict=True):
        assert client.welcome.position.epoch == after.epoch
        assert not ack.recovered
        assert ack.replayed == 0
        assert event_ids(await client.events(1)) == [after.event_id]
        await client.expect_nothing_pending()


async def test_after_an_outage_in_which_redis_kept_its_data_open_connections_get_new_events(
    server_pair: ServerPair, redis_server: RedisServer, tenant: str
) -> None:
    a, b = server_pair
    clients = await subscribers(server_pair, tenant)
    before = await a.publish(tenant, "p1")
    for client in clients:
        await client.events(1)

    redis_server.stop(keep_data=True)
    try:
        for server in (a, b):
            await server.wait_ready(503)
    finally:
        if not redis_server.running:
            redis_server.start()
    for server in (a, b):
        await server.wait_ready(200)
    after = [await server.publish(tenant, "p1") for server in (b, a)]

    assert [p.seq for p in after] == [before.seq + 1, before.seq + 2]
    assert {p.epoch for p in after} == {before.epoch}
    for client in clients:
        assert event_ids(await client.events(2)) == [p.event_id for p in after]
        await client.expect_nothing_pending()
