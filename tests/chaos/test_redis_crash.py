"""Redis is SIGKILLed under load and restarted empty: clients are told, resume, and go on."""

from __future__ import annotations

import pytest
from pm_testkit import RedisServer, ServerPair

from tests.chaos.invariants import PublishStatus
from tests.chaos.workload import SERVER_SETTINGS, Publisher, assert_delivered, run_under_load

pytestmark = pytest.mark.pm_server(SERVER_SETTINGS)


async def test_redis_killed_and_restarted_under_load_leaves_every_client_whole_or_told(
    redis_server: RedisServer, server_pair: ServerPair, tenant: str
) -> None:
    async def kill_and_restart(publisher: Publisher) -> None:
        redis_server.kill()
        # The outage is seen under load: publishes fail while Redis is away.
        await publisher.wait_for(PublishStatus.FAILED, 20, within=10)
        redis_server.start()

    run = await run_under_load(server_pair, kill_and_restart, tenant=tenant)

    assert_delivered(run)
    final_epoch = run.observation.final.epoch
    first_epoch = next(a.position.epoch for a in run.publisher.attempts if a.position is not None)
    assert final_epoch != first_epoch  # an empty Redis restarts the numbering
    for name, subscriber in run.subscribers.items():
        # Every client learnt that events were lost, and its resume said so.
        assert "BROADCAST_LAGGED" in subscriber.errors, (name, subscriber.journal[-5:])
        assert 4011 in subscriber.closes, (name, subscriber.closes)
        assert any(not ack.recovered for ack in subscriber.resumes), (name, subscriber.resumes)
