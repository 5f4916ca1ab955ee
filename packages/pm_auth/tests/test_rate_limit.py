import asyncio
import math
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_auth import ConnectionRateLimiter, RateLimiterFactory

T = TypeVar("T")

# The limiter reads the running loop's clock, so time is controlled by running it on a
# loop whose clock only moves when the test advances it: nothing here sleeps or waits.


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is `now`, moved only by `advance`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        super().__init__()

    def time(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


@contextmanager
def manual_clock_loop() -> Iterator[ManualClockLoop]:
    loop = ManualClockLoop()
    try:
        yield loop
    finally:
        loop.close()


def in_one_step(coro: Coroutine[Any, Any, T]) -> T:
    """Runs `coro` one step, failing at once if it suspends (waits) instead of finishing.

    Must be called with the limiter's loop running; a limiter that waited would otherwise
    hang the test, since the loop's clock never moves by itself.
    """
    try:
        coro.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coro.close()
    raise AssertionError("the limiter suspended: it waited instead of answering at once")


def admitted(loop: ManualClockLoop, limiter: ConnectionRateLimiter, attempts: int = 1000) -> int:
    """Attempts `attempts` frames back to back at the loop's current time."""

    async def attempt() -> int:
        return sum(in_one_step(limiter.try_acquire()) for _ in range(attempts))

    return loop.run_until_complete(attempt())


@pytest.fixture
def loop() -> Iterator[ManualClockLoop]:
    with manual_clock_loop() as loop:
        yield loop


@pytest.fixture
def limiter() -> ConnectionRateLimiter:
    return RateLimiterFactory(max_requests=100, window_secs=60).create()


def test_a_fresh_limiter_admits_exactly_max_requests_back_to_back_then_refuses(
    loop: ManualClockLoop, limiter: ConnectionRateLimiter
) -> None:
    async def attempts() -> list[bool]:
        return [in_one_step(limiter.try_acquire()) for _ in range(101)]

    assert loop.run_until_complete(attempts()) == [True] * 100 + [False]
    assert admitted(loop, limiter) == 0


def test_a_refused_attempt_consumes_nothing(
    loop: ManualClockLoop, limiter: ConnectionRateLimiter
) -> None:
    admitted(loop, limiter)
    assert admitted(loop, limiter, 50) == 0
    loop.advance(0.6)
    assert admitted(loop, limiter) == 1


def test_refill_is_fractional_one_more_every_six_tenths_of_a_second_at_100_per_60(
    loop: ManualClockLoop, limiter: ConnectionRateLimiter
) -> None:
    admitted(loop, limiter)
    loop.advance(0.59)
    assert admitted(loop, limiter) == 0
    loop.advance(0.01)
    assert admitted(loop, limiter) == 1
    for _ in range(200):
        loop.advance(0.6)
        assert admitted(loop, limiter) == 1


def test_six_tenths_of_a_second_after_a_burst_admits_exactly_one(
    loop: ManualClockLoop, limiter: ConnectionRateLimiter
) -> None:
    admitted(loop, limiter)
    loop.advance(0.6)
    assert admitted(loop, limiter) == 1


def test_a_full_window_refills_the_whole_burst_and_never_more(
    loop: ManualClockLoop, limiter: ConnectionRateLimiter
) -> None:
    admitted(loop, limiter)
    loop.advance(60)
    assert admitted(loop, limiter) == 100
    loop.advance(1000)
    assert admitted(loop, limiter) == 100


def test_partial_use_carries_over(loop: ManualClockLoop, limiter: ConnectionRateLimiter) -> None:
    assert admitted(loop, limiter, 40) == 40
    loop.advance(30)
    assert admitted(loop, limiter) == 100


def test_one_per_second(loop: ManualClockLoop) -> None:
    limiter = ConnectionRateLimiter(1, 1)
    assert admitted(loop, limiter) == 1
    loop.advance(0.999)
    assert admitted(loop, limiter) == 0
    loop.advance(0.001)
    assert admitted(loop, limiter) == 1
    loop.advance(5)
    assert admitted(loop, limiter) == 1


@pytest.mark.parametrize(
    ("max_requests", "window_secs", "per_token_secs"),
    [(1, 0.25, 0.25), (10, 2.5, 0.25), (10, 1.5, 0.15), (7, 3, 3 / 7), (3, 0.001, 0.001 / 3)],
)
def test_fractional_windows_refill_one_token_per_window_over_max_requests(
    loop: ManualClockLoop, max_requests: int, window_secs: float, per_token_secs: float
) -> None:
    limiter = ConnectionRateLimiter(max_requests, window_secs)
    assert admitted(loop, limiter) == max_requests
    loop.advance(per_token_secs * 0.99)
    assert admitted(loop, limiter) == 0
    loop.advance(per_token_secs * 0.01)
    assert admitted(loop, limiter) == 1
    loop.advance(window_secs)
    assert admitted(loop, limiter) == max_requests


def test_try_acquire_completes_without_suspending_whether_admitted_or_refused(
    loop: ManualClockLoop,
) -> None:
    limiter = ConnectionRateLimiter(1, 60)

    async def step_once() -> list[bool]:
        results = []
        for _ in range(2):
            coro = limiter.try_acquire()
            with pytest.raises(StopIteration) as finished:
                coro.send(None)  # one step: a suspension would return instead of finishing
            results.append(finished.value.value)
        return results

    assert loop.run_until_complete(step_once()) == [True, False]
    loop.advance(60)
    assert admitted(loop, limiter) == 1


def test_concurrent_attempts_share_one_burst(
    loop: ManualClockLoop, limiter: ConnectionRateLimiter
) -> None:
    async def attempt_concurrently() -> tuple[int, int]:
        tasks = [asyncio.create_task(limiter.try_acquire()) for _ in range(150)]
        await asyncio.sleep(0)  # one loop pass: every task runs its first step, and should end
        waiting = [task for task in tasks if not task.done()]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return sum(task.result() for task in tasks if task not in waiting), len(waiting)

    assert loop.run_until_complete(attempt_concurrently()) == (100, 0)


def test_each_connection_has_its_own_bucket(loop: ManualClockLoop) -> None:
    factory = RateLimiterFactory(max_requests=3, window_secs=1)
    first, second = factory.create(), factory.create()
    assert (admitted(loop, first), admitted(loop, second)) == (3, 3)


def test_the_limiter_keeps_no_per_instance_dict(limiter: ConnectionRateLimiter) -> None:
    assert not hasattr(limiter, "__dict__")


@pytest.mark.parametrize(
    ("max_requests", "window_secs"),
    [
        (0, 60),
        (-1, 60),
        (True, 60),
        (1.5, 60),
        (100, 0),
        (100, -1),
        (100, math.nan),
        (100, math.inf),
    ],
)
def test_non_positive_limits_are_refused(max_requests: Any, window_secs: Any) -> None:
    with pytest.raises(ValueError, match="must be a positive"):
        RateLimiterFactory(max_requests=max_requests, window_secs=window_secs)
    with pytest.raises(ValueError, match="must be a positive"):
        ConnectionRateLimiter(max_requests, window_secs)


def test_the_factory_is_an_immutable_value() -> None:
    factory = RateLimiterFactory(max_requests=100, window_secs=60)
    assert factory == RateLimiterFactory(max_requests=100, window_secs=60.0)
    with pytest.raises(AttributeError):
        factory.max_requests = 5  # type: ignore[misc]


@given(
    max_requests=st.integers(min_value=1, max_value=200),
    window_secs=st.floats(min_value=0.01, max_value=1000),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=100), st.integers(min_value=0, max_value=300)),
        max_size=30,
    ),
)
def test_admissions_never_exceed_the_burst_plus_the_refill_over_any_interval(
    max_requests: int, window_secs: float, steps: list[tuple[float, int]]
) -> None:
    limiter = ConnectionRateLimiter(max_requests, window_secs)
    rate = max_requests / window_secs
    history: list[tuple[float, int]] = []  # (time, admitted at that time)
    with manual_clock_loop() as loop:
        for advance, attempts in steps:
            loop.advance(advance)
            history.append((loop.now, admitted(loop, limiter, attempts)))
    for start, (start_time, _) in enumerate(history):
        total = 0
        for end_time, count in history[start:]:
            total += count
            assert total <= max_requests + (end_time - start_time) * rate + 1e-6


@given(
    max_requests=st.integers(min_value=1, max_value=200),
    window_secs=st.floats(min_value=0.01, max_value=1000),
    used=st.integers(min_value=0, max_value=400),
)
def test_after_a_full_idle_window_the_whole_burst_is_available(
    max_requests: int, window_secs: float, used: int
) -> None:
    limiter = ConnectionRateLimiter(max_requests, window_secs)
    with manual_clock_loop() as loop:
        admitted(loop, limiter, used)
        loop.advance(window_secs)
        assert admitted(loop, limiter, max_requests + 1) == max_requests
