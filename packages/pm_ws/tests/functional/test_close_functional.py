"""How connections end on a real socket: close codes a client sends, and cutting slow peers."""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import weakref
from typing import Any

import pytest
from pm_testkit import WAIT_SECS as TIMEOUT
from pm_testkit import wait_until
from pm_ws import GatewayLimits
from websockets.exceptions import ConnectionClosed

from packages.pm_ws.tests.functional.conftest import Harness, HarnessFactory


def masked_close_frame(code: int) -> bytes:
    """A client's close frame carrying `code`, built by hand: `websockets` won't send bad codes."""
    payload = struct.pack("!H", code)
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack("!BB", 0x88, 0x80 | len(payload)) + mask + masked


async def close_with_raw_code(harness: Harness, code: int) -> int:
    """Send a close frame with `code`; the code of the server's answering close frame."""
    client = await harness.connect_welcomed()
    client.ws.transport.write(masked_close_frame(code))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(client.ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None, "the server sent no close frame"
    return closed.value.rcvd.code


async def wait_closed(harness: Harness, count: int) -> None:
    await wait_until(
        lambda: not harness.metric("pm_ws_connections_active") and sum_closed(harness) >= count,
        what=f"{count} connections closed and none active",
    )


def sum_closed(harness: Harness) -> float:
    total = 0.0
    for metric in harness.registry.collect():
        if metric.name == "pm_ws_connections_closed":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def closed_labels(harness: Harness) -> set[str]:
    return {
        sample.labels["code"]
        for metric in harness.registry.collect()
        if metric.name == "pm_ws_connections_closed"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_a_close_code_no_client_may_send_fails_the_connection_with_1002(
    harness: Harness, code: int
) -> None:
    assert await close_with_raw_code(harness, code) == 1002
    await wait_closed(harness, 1)
    assert closed_labels(harness) == {"1002"}


async def test_close_codes_clients_choose_do_not_mint_metric_series(harness: Harness) -> None:
    answers = [await close_with_raw_code(harness, code) for code in range(3000, 3040)]
    answers.append(await close_with_raw_code(harness, 4999))
    answers.append(await close_with_raw_code(harness, 1000))

    await wait_closed(harness, len(answers))
    assert set(answers) == {1000}
    assert closed_labels(harness) == {"other", "1000"}


async def test_a_slow_client_that_finishes_closing_within_the_grace_leaves_no_error_behind(
    make_harness: HarnessFactory,
) -> None:
    grace = 0.2
    harness = await make_harness(limits=GatewayLimits(send_queue_size=8), close_timeout_secs=grace)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        slow = await harness.connect_welcomed(harness.token(user="slow"))
        await slow.subscribe(projects=("p1",))
        session = next(s for s in harness.gateway.registry if s.user_id == "slow")
        slow.ws.transport.pause_reading()
        while session.close_reason is None:
            await harness.publish("p1", payload=b"x" * 60_000)
            await asyncio.sleep(0)  # let the outbox write: the transport's buffer fills
        assert session.close_reason.code == 4008

        slow.ws.transport.resume_reading()  # the peer reads everything: the socket drains
        await asyncio.wait_for(session.wait_finished(), TIMEOUT)
        # Timers run in deadline order: once this one fires, the abort scheduled at the
        # 4008 (grace seconds after it, which was earlier) has had its turn.
        probe = loop.create_future()
        loop.call_later(grace + 0.05, probe.set_result, None)
        await asyncio.wait_for(probe, TIMEOUT)
    finally:
        loop.set_exception_handler(previous)

    assert errors == []
    slow.ws.transport.abort()


async def test_a_peer_that_vanishes_leaves_no_cycle_holding_its_connection(
    harness: Harness,
) -> None:
    client = await harness.connect_welcomed()
    await client.subscribe(projects=("p1",))
    session = next(iter(harness.gateway.registry))
    response = weakref.ref(session.socket._ws)  # type: ignore[attr-defined]
    del session
    gc.collect()
    gc.disable()  # what a vanished peer leaves must go by reference counting alone
    try:
        client.ws.transport.abort()  # no close frame: the connection is just lost
        async with asyncio.timeout(TIMEOUT):
            while True:
                if response() is None:
                    break
                await asyncio.sleep(0.01)
    finally:
        gc.enable()
