"""Redis goes away and comes back: connections stay, the servers say so, delivery resumes."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.redis.harness import (
    ADMIN_KEY,
    ClientFactory,
    RedisProcess,
    ServerProcess,
    event_ids,
    get_text,
    new_tenant,
    post_publish,
    publish,
    wait_ready,
)

Pair = tuple[ServerProcess, ServerProcess]


async def _health(http: aiohttp.ClientSession, server: ServerProcess) -> tuple[int, Any]:
    async with http.get(f"{server.base_url}/health") as response:
        return response.status, await response.json()


async def test_during_a_redis_outage_connections_stay_and_the_servers_report_it(
    gateway_pair: Pair,
    redis_server: RedisProcess,
    redis_clients: ClientFactory,
    redis_http: aiohttp.ClientSession,
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    clients = [await redis_clients(a, tenant), await redis_clients(b, tenant)]
    for client in clients:
        await client.subscribe("p1")
    before = await publish(redis_http, a, tenant, "p1")
    for client in clients:
        await client.events(1)
    revoked = await redis_clients(a, tenant, "mallory")

    redis_server.stop()
    try:
        for server in (a, b):
            ready = await wait_ready(redis_http, server, 503)
            health_status, health = await _health(redis_http, server)
            live = await get_text(redis_http, f"{server.base_url}/live")
            publish_status, publish_answer = await post_publish(redis_http, server, tenant, "p1")

            assert ready == (503, "Not Ready: broker unavailable")
            assert health_status == 503
            assert health["status"] == "degraded"
            assert health["checks"]["broker"]["status"] == "down"
            assert health["connections"]["total"] >= 1
            assert live == (200, "OK")
            assert publish_status == 503
            assert publish_answer["code"] == "BROKER_UNAVAILABLE"
            assert publish_answer["event_id"]  # made by the server: the retry is idempotent
        for client in clients:
            await client.ping()
        # An operator's disconnect still closes what it can reach, and says what it couldn't.
        async with redis_http.post(
            f"{a.base_url}/api/v1/disconnect",
            json={"tenant_id": tenant, "user_id": "mallory"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response:
            disconnect_status, disconnect_answer = response.status, await response.json()
        assert disconnect_status == 503
        assert disconnect_answer["code"] == "BROKER_UNAVAILABLE"
        assert (await revoked.closed())[0] == 4010
    finally:
        if not redis_server.running:
            redis_server.start()

    for server in (a, b):
        assert await wait_ready(redis_http, server, 200) == (200, "Ready")
        health_status, health = await _health(redis_http, server)
        assert health_status == 200
        assert health["checks"]["broker"]["status"] == "ok"
    # The restarted Redis is empty: the tenant's numbering restarts under a new
    # epoch, and what happened in between can't be told. Connected clients are
    # told to resume rather than left with a silent gap.
    for client in clients:
        code, before_close = await client.closed()
        assert code == 4011
        assert [m.WhichOneof("payload") for m in before_close] == ["error", "closing"]
        assert before_close[0].error.code == "BROADCAST_LAGGED"

    resumed = [await redis_clients(a, tenant), await redis_clients(b, tenant)]
    acks = [await client.subscribe("p1", resume_from=before.position) for client in resumed]
    after = await publish(redis_http, b, tenant, "p1")

    assert after.epoch != before.epoch
    assert after.seq == 1
    for client, ack in zip(resumed, acks, strict=True):
        assert client.welcome.position.epoch == after.epoch
        assert not ack.recovered
        assert ack.replayed == 0
        assert event_ids(await client.events(1)) == [after.event_id]
        await client.ping()


async def test_after_an_outage_in_which_redis_kept_its_data_open_connections_get_new_events(
    gateway_pair: Pair,
    redis_server: RedisProcess,
    redis_clients: ClientFactory,
    redis_http: aiohttp.ClientSession,
) -> None:
    a, b = gateway_pair
    tenant = new_tenant()
    clients = [await redis_clients(a, tenant), await redis_clients(b, tenant)]
    for client in clients:
        await client.subscribe("p1")
    before = await publish(redis_http, a, tenant, "p1")
    for client in clients:
        await client.events(1)

    redis_server.stop(keep_data=True)
    try:
        for server in (a, b):
            await wait_ready(redis_http, server, 503)
    finally:
        if not redis_server.running:
            redis_server.start()
    for server in (a, b):
        await wait_ready(redis_http, server, 200)
    after = [await publish(redis_http, server, tenant, "p1") for server in (b, a)]

    assert [p.seq for p in after] == [before.seq + 1, before.seq + 2]
    assert {p.epoch for p in after} == {before.epoch}
    for client in clients:
        assert event_ids(await client.events(2)) == [p.event_id for p in after]
        await client.ping()
