import asyncio
import contextvars
import gc
import weakref

import pytest
from pm_ws.deadlines import DeadlineWheel


async def test_callbacks_run_once_never_early_and_in_one_timer_per_slot() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(resolution_secs=0.02)
    ran: list[tuple[str, float]] = []
    done = loop.create_future()
    started = loop.time()

    def record(name: str) -> None:
        ran.append((name, loop.time() - started))
        if len(ran) == 3:
            done.set_result(None)

    wheel.call_later(0.05, lambda: record("b"))
    wheel.call_later(0.0, lambda: record("a"))
    wheel.call_later(0.05, lambda: record("c"))
    assert len(wheel) == 3
    await asyncio.wait_for(done, 5)

    assert [name for name, _ in ran] == ["a", "b", "c"]
    assert all(at >= delay for (_, at), delay in zip(ran, (0.0, 0.05, 0.05), strict=True))
    assert len(wheel) == 0


async def test_a_callback_may_schedule_the_next_one() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(resolution_secs=0.01)
    ticks: list[int] = []
    done = loop.create_future()

    def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) < 5:
            wheel.call_later(0.01, tick)
        else:
            done.set_result(None)

    wheel.call_later(0.01, tick)
    await asyncio.wait_for(done, 5)
    assert ticks == [0, 1, 2, 3, 4]


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="resolution"):
        DeadlineWheel(resolution_secs=0)


async def test_each_callback_runs_in_the_context_it_was_scheduled_from() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(resolution_secs=0.05)
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who")
    seen: list[str] = []
    done = loop.create_future()

    def schedule(name: str) -> None:
        who.set(name)
        wheel.call_later(0.01, lambda: seen.append(who.get()))

    for name in ("first", "second"):
        contextvars.copy_context().run(schedule, name)
    wheel.call_later(0.01, lambda: done.set_result(None))
    await asyncio.wait_for(done, 5)
    assert seen == ["first", "second"]


async def test_a_cancelled_deadline_never_runs_and_its_callback_is_freed_at_once() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(resolution_secs=0.01)
    ran: list[str] = []

    class Owner:
        def fire(self) -> None:
            ran.append("cancelled")

    owner = Owner()
    deadline = wheel.call_later(3600, owner.fire)
    freed = weakref.ref(owner)
    del owner
    deadline.cancel()
    deadline.cancel()
    gc.collect()

    assert freed() is None
    assert not deadline.pending
    assert len(wheel) == 0
    assert wheel.timers == 0
    done = loop.create_future()
    wheel.call_later(0.01, lambda: done.set_result(None))
    await asyncio.wait_for(done, 5)
    assert ran == []


async def test_cancelling_one_deadline_keeps_the_others_of_its_slot() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(resolution_secs=0.05)
    ran: list[str] = []
    done = loop.create_future()

    first = wheel.call_later(0.01, lambda: ran.append("first"))
    wheel.call_later(0.01, lambda: done.set_result(None))
    first.cancel()
    assert len(wheel) == 1
    await asyncio.wait_for(done, 5)

    assert ran == []
    assert wheel.timers == 0


async def test_cancelling_after_the_callback_ran_is_harmless() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(resolution_secs=0.01)
    done = loop.create_future()
    deadline = wheel.call_later(0.0, lambda: done.set_result(None))
    await asyncio.wait_for(done, 5)

    assert not deadline.pending
    deadline.cancel()
    assert len(wheel) == 0
