"""Bounded waiting: poll or watch a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["POLL_SECS", "WAIT_SECS", "Changes", "WaitTimeout", "block_until", "wait_until"]

WAIT_SECS: Final = 10.0
"""Default deadline of every wait; on a healthy machine each condition takes milliseconds."""

POLL_SECS: Final = 0.02
"""Pause between two polls of a condition that cannot notify (a log file, an HTTP probe)."""

Condition = Callable[[], bool | Awaitable[bool]]
"""A check that holds or not yet: plain, or a coroutine function (an HTTP probe, say)."""

Description = str | Callable[[], object]
"""What a wait is for, or a callable that describes the state when the wait failed."""


class WaitTimeout(AssertionError):
    """A condition did not hold within its deadline.

    An `AssertionError`, so that pytest shows it as a failed expectation; the
    message names what was awaited and, when the caller gave a callable, the
    state last seen.
    """

    def __init__(self, what: Description, within: float) -> None:
        shown = what() if callable(what) else what
        super().__init__(f"not within {within:g} s: {shown}")


async def wait_until(
    condition: Condition,
    *,
    within: float = WAIT_SECS,
    what: Description = "the condition",
    poll: float = POLL_SECS,
) -> None:
    """Return as soon as `condition` holds; raise `WaitTimeout` once `within` seconds passed.

    The condition is checked first at once, then every `poll` seconds, and a
    last time at the deadline. It may be a coroutine function; one call that
    hangs is not cut short (give it its own timeout).
    """
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(what, within)
        await asyncio.sleep(min(poll, left))


def block_until(
    condition: Callable[[], bool],
    *,
    within: float = WAIT_SECS,
    what: Description = "the condition",
    poll: float = POLL_SECS,
) -> None:
    """`wait_until` for code without an event loop (sync fixtures, start-up of a process).

    It blocks the calling thread: from a coroutine, use `wait_until` instead.
    """
    deadline = time.monotonic() + within
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(what, within)
        time.sleep(min(poll, left))


class Changes:
    """A notice that something a test watches has changed: no polling, no missed update.

    The producer (a recording sink, a stream reader) calls `notify` after each
    change; waiters re-check their condition then. Use it from one event loop.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake every waiter so that it checks its condition again."""
        self._changed.set()

    async def wait_for(
        self,
        condition: Callable[[], bool],
        *,
        within: float = WAIT_SECS,
        what: Description = "the condition",
    ) -> None:
        """Return once `condition` holds after some `notify`; `WaitTimeout` at the deadline."""

        async def watch() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(watch(), within)
        except TimeoutError:
            raise WaitTimeout(what, within) from None
