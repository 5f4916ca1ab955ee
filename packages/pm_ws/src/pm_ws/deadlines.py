"""Coarse timers for many connections: one event-loop timer per time slot, not per connection."""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable


class DeadlineWheel:
    """Runs callbacks after a delay, rounded up to the next slot of `resolution_secs`.

    Heartbeats and token expiry of ten thousand connections would otherwise be
    twenty thousand `TimerHandle`s in the loop's heap, each insertion a dozen
    Python-level comparisons. Here a deadline costs a list append, and each
    occupied slot one loop timer. A callback never runs early; it runs up to one
    slot late. There is no cancellation: a callback checks whether it still
    matters (its connection closed, a newer deadline replaced it), and the wheel
    holds a reference to it until its slot comes.
    """

    def __init__(
        self, *, resolution_secs: float, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if resolution_secs <= 0:
            raise ValueError("resolution_secs must be positive")
        self._loop = loop
        self._resolution = resolution_secs
        self._slots: dict[int, list[tuple[Callable[[], None], contextvars.Context]]] = {}

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` once, at least `delay` seconds from now, in the caller's context.

        The caller's `contextvars` go with the callback (as with `loop.call_later`),
        so its log lines still name its connection. The first call binds the wheel
        to the running loop.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + max(0.0, delay)) / self._resolution)
        callbacks = self._slots.get(slot)
        if callbacks is None:
            callbacks = self._slots[slot] = []
            loop.call_at(slot * self._resolution, self._run, slot)
        callbacks.append((callback, contextvars.copy_context()))

    def __len__(self) -> int:
        return sum(len(callbacks) for callbacks in self._slots.values())

    def _run(self, slot: int) -> None:
        for callback, context in self._slots.pop(slot, ()):
            context.run(callback)
