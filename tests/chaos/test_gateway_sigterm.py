"""A gateway is stopped (SIGTERM) under load: its clients resume on the other, losing nothing."""

from __future__ import annotations

import signal

import pytest
from pm_testkit import ServerPair

from tests.chaos.invariants import PublishStatus
from tests.chaos.workload import SERVER_SETTINGS, Publisher, assert_delivered, run_under_load

pytestmark = pytest.mark.pm_server(SERVER_SETTINGS)


async def test_clients_of_a_gateway_stopped_under_load_resume_on_the_other_without_loss(
    server_pair: ServerPair, tenant: str
) -> None:
    a, b = server_pair

    async def stop_a(publisher: Publisher) -> None:
        a.send_signal(signal.SIGTERM)
        assert await a.await_exit(within=15) == 0
        await publisher.wait_for(PublishStatus.STORED, 30, within=10)

    run = await run_under_load(server_pair, stop_a, tenant=tenant)

    assert_delivered(run, lossless=True)
    assert a.stderr.count("Graceful shutdown complete") == 1
    for name, subscriber in run.subscribers.items():
        if name.startswith("A"):
            # Told why, closed with 1001, and carried on at B from where it was.
            assert subscriber.closings == ["SERVER_SHUTDOWN"], (name, subscriber.journal[-5:])
            assert subscriber.closes == [1001, 1000], (name, subscriber.closes)
            assert subscriber.connected_to == [a.ws_url, b.ws_url]
            assert [ack.recovered for ack in subscriber.resumes] == [True]
        else:
            assert subscriber.closes == [1000], (name, subscriber.closes)
