"""Redis drops every pub/sub connection under load: the gateways fill the gap from history."""

from __future__ import annotations

import pytest
from pm_testkit import RedisServer, ServerPair

from tests.chaos.invariants import PublishStatus
from tests.chaos.workload import SERVER_SETTINGS, Publisher, assert_delivered, run_under_load

pytestmark = pytest.mark.pm_server(SERVER_SETTINGS)

REESTABLISHED = "redis subscription re-established"
KILLS = 3


async def test_killing_the_gateways_pubsub_connections_under_load_loses_and_repeats_nothing(
    redis_server: RedisServer, server_pair: ServerPair, tenant: str
) -> None:
    killed: list[int] = []

    async def cut_pubsub_three_times(publisher: Publisher) -> None:
        for _ in range(KILLS):
            before = [server.stderr.count(REESTABLISHED) for server in server_pair]
            killed.append(redis_server.kill_pubsub_clients())
            for server, count in zip(server_pair, before, strict=True):
                await server.wait_log(REESTABLISHED, count=count + 1)
            # Events are published while the subscriptions are down and while they come back.
            await publisher.wait_for(PublishStatus.STORED, 30, within=10)

    run = await run_under_load(server_pair, cut_pubsub_three_times, tenant=tenant)

    assert killed == [2] * KILLS  # one pub/sub connection per gateway, each time
    assert_delivered(run, lossless=True)
    # History covered every gap: no client was told to resume, none was closed.
    for name, subscriber in run.subscribers.items():
        assert subscriber.closes == [1000], (name, subscriber.closes)
        assert subscriber.errors == [], (name, subscriber.errors)
    assert run.publisher.count(PublishStatus.FAILED) == 0
