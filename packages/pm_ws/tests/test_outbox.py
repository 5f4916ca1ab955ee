import asyncio
import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pm_ws.outbox import FlushScheduler, Outbox

HIGH_WATER = 1_000


class FakeTransport:
    """The socket boundary: records writes; the test sets how much is still buffered."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


class BrokenTransport(FakeTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("Cannot call write() after write_eof()")


@dataclass
class FakeTimer:
    delay: float
    callback: Callable[..., object]
    args: tuple[object, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Timers:
    """Stands in for the loop's `call_later`, so the test decides when a retry fires."""

    armed: list[FakeTimer] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> FakeTimer:
        timer = FakeTimer(delay, callback, args)
        self.armed.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.armed if not t.cancelled]

    def fire(self) -> None:
        (timer,) = self.pending()
        self.armed.remove(timer)
        timer.callback(*timer.args)


@dataclass
class Harness:
    outbox: Outbox
    transport: FakeTransport
    timers: Timers


def harness(
    scheduler: FlushScheduler,
    *,
    capacity: int = 16,
    transport: FakeTransport | None = None,
) -> Harness:
    transport = transport or FakeTransport()
    timers = Timers()
    outbox = Outbox(
        transport,
        scheduler,
        capacity=capacity,
        # Outbox only calls `call_later` on its loop, which Timers stands in for.
        loop=cast(asyncio.AbstractEventLoop, timers),
        high_water_bytes=HIGH_WATER,
    )
    return Harness(outbox, transport, timers)


@pytest.fixture
async def scheduler() -> FlushScheduler:
    return FlushScheduler(asyncio.get_running_loop())


async def end_of_iteration() -> None:
    """Wait until callbacks scheduled so far (the scheduler's flush) have run.

    `call_soon` callbacks run in FIFO order, so one scheduled after the pushes runs
    after the flush they scheduled.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


async def test_frames_queued_in_one_loop_iteration_are_written_in_one_write_in_order(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)

    for frame in (b"one", b"two", b"three"):
        assert h.outbox.push(frame)
    await end_of_iteration()

    assert h.transport.writes == [b"onetwothree"]
    assert len(h.outbox) == 0


async def test_nothing_is_written_before_the_loop_runs_the_flush(scheduler: FlushScheduler) -> None:
    h = harness(scheduler)

    h.outbox.push(b"frame")

    assert h.transport.writes == []
    assert len(h.outbox) == 1
    await end_of_iteration()
    assert h.transport.writes == [b"frame"]


async def test_every_outbox_that_got_frames_is_written_once_in_the_same_iteration(
    scheduler: FlushScheduler,
) -> None:
    a, b = harness(scheduler), harness(scheduler)

    for frame in (b"e1", b"e2", b"e3"):
        a.outbox.push(frame)
        b.outbox.push(frame)
    await end_of_iteration()

    assert a.transport.writes == [b"e1e2e3"]
    assert b.transport.writes == [b"e1e2e3"]


async def test_frames_queued_in_a_later_iteration_get_a_write_of_their_own(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)

    h.outbox.push(b"a")
    await end_of_iteration()
    h.outbox.push(b"b")
    h.outbox.push(b"c")
    await end_of_iteration()

    assert h.transport.writes == [b"a", b"bc"]


async def test_a_transport_over_the_high_water_mark_is_not_written_to(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1

    h.outbox.push(b"a")
    h.outbox.push(b"b")
    await end_of_iteration()

    assert h.transport.writes == []
    assert len(h.outbox) == 2
    assert len(h.timers.pending()) == 1


async def test_a_transport_exactly_at_the_high_water_mark_is_still_written_to(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER

    h.outbox.push(b"a")
    await end_of_iteration()

    assert h.transport.writes == [b"a"]


async def test_a_blocked_outbox_writes_everything_in_one_write_once_the_transport_drains(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1
    h.outbox.push(b"a")
    await end_of_iteration()

    h.outbox.push(b"b")
    await end_of_iteration()
    assert h.transport.writes == []
    h.transport.buffered = 0
    h.timers.fire()

    assert h.transport.writes == [b"ab"]
    assert h.timers.pending() == []


async def test_a_retry_still_over_the_high_water_mark_waits_again(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1
    h.outbox.push(b"a")
    await end_of_iteration()

    h.timers.fire()

    assert h.transport.writes == []
    assert len(h.timers.pending()) == 1
    h.transport.buffered = 0
    h.timers.fire()
    assert h.transport.writes == [b"a"]


async def test_a_forced_flush_writes_even_to_a_transport_over_the_high_water_mark(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1
    h.outbox.push(b"a")
    h.outbox.push(b"b")
    await end_of_iteration()

    h.outbox.flush(force=True)

    assert h.transport.writes == [b"ab"]
    assert len(h.outbox) == 0


async def test_the_push_that_overflows_reports_it_and_every_later_push_is_dropped(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler, capacity=3)

    accepted = [h.outbox.push(b"x") for _ in range(3)]
    assert not h.outbox.overflowed
    refused = [h.outbox.push(b"y") for _ in range(3)]
    await end_of_iteration()

    assert accepted == [True, True, True]
    assert refused == [False, False, False]
    assert h.outbox.overflowed
    assert h.outbox.closed
    assert h.transport.writes == []
    assert len(h.outbox) == 0


async def test_an_outbox_drained_every_iteration_never_overflows(scheduler: FlushScheduler) -> None:
    h = harness(scheduler, capacity=2)

    for i in range(5):
        assert h.outbox.push(b"%d" % i)
        assert h.outbox.push(b"%d" % i)
        await end_of_iteration()

    assert not h.outbox.overflowed
    assert h.transport.writes == [b"00", b"11", b"22", b"33", b"44"]


async def test_a_blocked_outbox_overflows_when_its_peer_never_reads(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler, capacity=2)
    h.transport.buffered = HIGH_WATER + 1

    h.outbox.push(b"a")
    await end_of_iteration()
    assert h.outbox.push(b"b")
    assert not h.outbox.push(b"c")

    assert h.outbox.overflowed
    assert h.outbox.closed


async def test_close_with_flush_writes_the_queued_frames(scheduler: FlushScheduler) -> None:
    h = harness(scheduler)
    h.outbox.push(b"event")
    h.outbox.push(b"closing")

    h.outbox.close(flush=True)
    await end_of_iteration()

    assert h.transport.writes == [b"eventclosing"]
    assert h.outbox.closed
    assert h.outbox.push(b"late") is False
    assert not h.outbox.overflowed, "a closed outbox drops frames; it did not overflow"


async def test_close_with_flush_writes_even_to_a_blocked_transport_and_cancels_the_retry(
    scheduler: FlushScheduler,
) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1
    h.outbox.push(b"a")
    await end_of_iteration()

    h.outbox.close(flush=True)

    assert h.transport.writes == [b"a"]
    assert h.timers.pending() == []


async def test_close_without_flush_drops_the_queued_frames(scheduler: FlushScheduler) -> None:
    h = harness(scheduler)
    h.outbox.push(b"a")
    h.outbox.push(b"b")

    h.outbox.close(flush=False)
    await end_of_iteration()

    assert h.transport.writes == []
    assert len(h.outbox) == 0
    assert h.outbox.push(b"c") is False
    assert not h.outbox.overflowed


async def test_close_without_flush_cancels_a_pending_retry(scheduler: FlushScheduler) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1
    h.outbox.push(b"a")
    await end_of_iteration()

    h.outbox.close(flush=False)

    assert h.timers.pending() == []
    assert h.transport.writes == []


async def test_a_closing_transport_gets_no_writes(scheduler: FlushScheduler) -> None:
    h = harness(scheduler)
    h.transport.closing = True

    h.outbox.push(b"a")
    await end_of_iteration()
    h.outbox.push(b"b")
    h.outbox.flush(force=True)
    h.outbox.push(b"c")
    h.outbox.close(flush=True)

    assert h.transport.writes == []
    assert len(h.outbox) == 0


async def test_queue_depth_is_the_number_of_frames_waiting(scheduler: FlushScheduler) -> None:
    h = harness(scheduler)
    h.transport.buffered = HIGH_WATER + 1

    for frame in (b"a", b"b", b"c"):
        h.outbox.push(frame)
    await end_of_iteration()

    assert len(h.outbox) == 3


async def test_a_failing_transport_does_not_stop_other_outboxes_from_being_written(
    scheduler: FlushScheduler,
) -> None:
    broken = harness(scheduler, transport=BrokenTransport())
    healthy = harness(scheduler)
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    try:
        broken.outbox.push(b"x")
        healthy.outbox.push(b"first")
        await end_of_iteration()
        healthy.outbox.push(b"second")
        await end_of_iteration()
    finally:
        loop.set_exception_handler(None)

    assert healthy.transport.writes == [b"first", b"second"]


async def test_an_outbox_holds_nothing_of_its_owner_so_no_cycle_outlives_the_connection(
    scheduler: FlushScheduler,
) -> None:
    class Owner:
        def __init__(self) -> None:
            self.outbox = Outbox(
                FakeTransport(), scheduler, capacity=1, loop=asyncio.get_running_loop()
            )

    owner = Owner()
    owner.outbox.push(b"a")
    owner.outbox.push(b"overflow")
    assert owner.outbox.overflowed
    freed = weakref.ref(owner)
    gc.disable()  # freed by reference counting alone, not by a collection
    try:
        del owner
        assert freed() is None
    finally:
        gc.enable()
