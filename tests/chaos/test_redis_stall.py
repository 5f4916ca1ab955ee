"""Redis stops answering for longer than the gateways' publish timeout, under load.

The publish timeout is RedisLink's `timeout_secs` (2.0 s, pm_ws/brokers/_redis_link.py,
the default of RedisBroker); pm-server does not change it. A stall of 3 s
makes the publishes in flight time out, while pub/sub stays up (its keepalive
gives up only after two silent 5 s intervals) and so do clients.

The two stalls differ in what becomes of a command sent during them. Under
`CLIENT PAUSE` Redis holds it and drops it when its client disconnects (the
gateway does, on its timeout). After `DEBUG SLEEP` (or any command or host
stall as long) Redis wakes, reads its sockets and runs what it finds there.
The gateway can't tell the two apart, so a publish that timed out after it was
sent answers 504 `PUBLISH_OUTCOME_UNKNOWN` (never a 503, which promises that
nothing was stored): the invariant allows such a publish either way, but never
twice, and never with a gap.
"""

from __future__ import annotations

import asyncio

import pytest
from pm_testkit import RedisServer, ServerPair

from tests.chaos.invariants import PublishStatus
from tests.chaos.workload import SERVER_SETTINGS, Publisher, assert_delivered, run_under_load

pytestmark = pytest.mark.pm_server(SERVER_SETTINGS)

PUBLISH_TIMEOUT_SECS = 2.0
STALL_SECS = PUBLISH_TIMEOUT_SECS + 1


async def test_redis_paused_past_the_publish_timeout_leaves_outcomes_unknown_and_loses_nothing(
    redis_server: RedisServer, server_pair: ServerPair, tenant: str
) -> None:
    async def pause(publisher: Publisher) -> None:
        redis_server.pause(int(STALL_SECS * 1000))
        await publisher.wait_for(PublishStatus.UNKNOWN, 1, within=STALL_SECS + 5)
        await redis_server.until_answering()

    run = await run_under_load(server_pair, pause, tenant=tenant)

    assert_delivered(run, lossless=True)
    assert run.publisher.count(PublishStatus.UNKNOWN) > 0
    assert run.publisher.count(PublishStatus.FAILED) == 0
    for name, subscriber in run.subscribers.items():
        assert subscriber.closes == [1000], (name, subscriber.closes)


async def test_redis_asleep_past_the_publish_timeout_answers_504_and_delivers_at_most_once(
    redis_server: RedisServer, server_pair: ServerPair, tenant: str
) -> None:
    async def sleep(publisher: Publisher) -> None:
        asleep = asyncio.create_task(redis_server.sleep(STALL_SECS))
        await publisher.wait_for(PublishStatus.UNKNOWN, 1, within=STALL_SECS + 5)
        await asyncio.wait_for(asleep, STALL_SECS + 5)

    run = await run_under_load(server_pair, sleep, tenant=tenant)

    assert_delivered(run, lossless=True)
    assert run.publisher.count(PublishStatus.UNKNOWN) > 0
    assert run.publisher.count(PublishStatus.FAILED) == 0
    for name, subscriber in run.subscribers.items():
        assert subscriber.closes == [1000], (name, subscriber.closes)
