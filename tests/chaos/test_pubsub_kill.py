"""Redis drops every pub/sub connection under load: the gateways fill the gap from history."""

from __future__ import annotations

import aiohttp

from tests.chaos.faults import ChaosRedis
from tests.chaos.invariants import PublishStatus
from tests.chaos.workload import Publisher, assert_delivered, run_under_load
from tests.redis.harness import ServerProcess, new_tenant

REESTABLISHED = "redis subscription re-established"
KILLS = 3


async def test_killing_the_gateways_pubsub_connections_under_load_loses_and_repeats_nothing(
    chaos_redis: ChaosRedis,
    gateways: tuple[ServerProcess, ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    killed: list[int] = []

    async def cut_pubsub_three_times(publisher: Publisher) -> None:
        for _ in range(KILLS):
            before = [server.count(REESTABLISHED) for server in gateways]
            killed.append(chaos_redis.kill_pubsub_clients())
            for server, count in zip(gateways, before, strict=True):
                await server.await_log(REESTABLISHED, count=count + 1)
            # Events are published while the subscriptions are down and while they come back.
            await publisher.wait_for(PublishStatus.STORED, 30, within=10)

    run = await run_under_load(http, gateways, cut_pubsub_three_times, tenant=new_tenant())

    assert killed == [2] * KILLS  # one pub/sub connection per gateway, each time
    assert_delivered(run, lossless=True)
    # History covered every gap: no client was told to resume, none was closed.
    for name, subscriber in run.subscribers.items():
        assert subscriber.closes == [1000], (name, subscriber.closes)
        assert subscriber.errors == [], (name, subscriber.errors)
    assert run.publisher.count(PublishStatus.FAILED) == 0
