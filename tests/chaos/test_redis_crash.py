"""Redis is SIGKILLed under load and restarted empty: clients are told, resume, and go on."""

from __future__ import annotations

import aiohttp

from tests.chaos.faults import ChaosRedis
from tests.chaos.invariants import PublishStatus
from tests.chaos.workload import Publisher, assert_delivered, run_under_load
from tests.redis.harness import ServerProcess, new_tenant


async def test_redis_killed_and_restarted_under_load_leaves_every_client_whole_or_told(
    chaos_redis: ChaosRedis,
    gateways: tuple[ServerProcess, ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    async def kill_and_restart(publisher: Publisher) -> None:
        chaos_redis.kill()
        # The outage is seen under load: publishes fail while Redis is away.
        await publisher.wait_for(PublishStatus.FAILED, 20, within=10)
        chaos_redis.start()

    run = await run_under_load(http, gateways, kill_and_restart, tenant=new_tenant())

    assert_delivered(run)
    final_epoch = run.observation.final.epoch
    first_epoch = next(a.position.epoch for a in run.publisher.attempts if a.position is not None)
    assert final_epoch != first_epoch  # an empty Redis restarts the numbering
    for name, subscriber in run.subscribers.items():
        # Every client learnt that events were lost, and its resume said so.
        assert "BROADCAST_LAGGED" in subscriber.errors, (name, subscriber.journal[-5:])
        assert 4011 in subscriber.closes, (name, subscriber.closes)
        assert any(not ack.recovered for ack in subscriber.resumes), (name, subscriber.resumes)
