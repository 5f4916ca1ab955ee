"""Bounded waits return as soon as their condition holds, and fail with a clear message."""

from __future__ import annotations

import asyncio
import time

import pytest
from pm_testkit import Changes, WaitTimeout, block_until, wait_until


async def test_wait_until_returns_once_the_condition_holds() -> None:
    calls: list[int] = []

    def third_time_lucky() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(third_time_lucky, poll=0.001)

    assert len(calls) == 3


async def test_wait_until_awaits_a_coroutine_condition() -> None:
    answers = iter([False, True])

    async def probe() -> bool:
        return next(answers)

    await wait_until(probe, poll=0.001)


async def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match=r"not within 0\.05 s: the moon to turn blue"):
        await wait_until(lambda: False, within=0.05, what="the moon to turn blue")


async def test_a_wait_timeout_describes_the_state_last_seen() -> None:
    seen = {"count": 4}

    with pytest.raises(AssertionError, match="4 of 5 arrived"):
        await wait_until(
            lambda: seen["count"] == 5, within=0.02, what=lambda: f"{seen['count']} of 5 arrived"
        )


def test_block_until_times_out_without_an_event_loop() -> None:
    started = time.monotonic()

    with pytest.raises(WaitTimeout, match="nothing"):
        block_until(lambda: False, within=0.05, what="nothing")

    assert time.monotonic() - started >= 0.05


async def test_changes_wake_a_waiter_when_its_condition_comes_true() -> None:
    changes = Changes()
    items: list[int] = []

    async def produce() -> None:
        for n in range(3):
            await asyncio.sleep(0)
            items.append(n)
            changes.notify()

    producer = asyncio.create_task(produce())
    await changes.wait_for(lambda: len(items) == 3)
    await producer

    assert items == [0, 1, 2]


async def test_changes_time_out_with_a_wait_timeout() -> None:
    with pytest.raises(WaitTimeout, match="an item"):
        await Changes().wait_for(lambda: False, within=0.02, what="an item")
