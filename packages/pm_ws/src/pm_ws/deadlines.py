"""Coarse timers for many connections: one event-loop timer per time slot, not per connection."""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable

__all__ = ["Deadline", "DeadlineWheel"]


class Deadline:
    """One callback waiting on a `DeadlineWheel`; `cancel()` lets go of it at once.

    A cancelled deadline holds no reference to its callback, so whatever the
    callback closed over (a whole connection, typically) can be freed as soon as
    its owner is done with it, not when the slot comes.
    """

    __slots__ = ("_callback", "_context", "_slot", "_wheel")

    def __init__(
        self,
        wheel: DeadlineWheel,
        slot: int,
        callback: Callable[[], None],
        context: contextvars.Context,
    ) -> None:
        self._wheel: DeadlineWheel | None = wheel
        self._slot = slot
        self._callback: Callable[[], None] | None = callback
        self._context: contextvars.Context | None = context

    @property
    def pending(self) -> bool:
        """Whether the callback has neither run nor been cancelled."""
        return self._wheel is not None

    def cancel(self) -> None:
        """Forget the callback; idempotent, and harmless after it ran."""
        wheel = self._wheel
        if wheel is not None:
            wheel._discard(self._slot, self)
        self._release()

    def _release(self) -> None:
        self._wheel = None
        self._callback = None
        self._context = None

    def _run(self) -> None:
        callback, context = self._callback, self._context
        self._release()
        if callback is not None and context is not None:
            context.run(callback)


class _Slot:
    __slots__ = ("deadlines", "timer")

    def __init__(self, timer: asyncio.TimerHandle) -> None:
        self.timer = timer
        self.deadlines: dict[Deadline, None] = {}


class DeadlineWheel:
    """Runs callbacks after a delay, rounded up to the next slot of `resolution_secs`.

    Heartbeats and token expiry of ten thousand connections would otherwise be
    twenty thousand `TimerHandle`s in the loop's heap, each insertion a dozen
    Python-level comparisons. Here a deadline costs a dict insertion, and each
    occupied slot one loop timer. A callback never runs early; it runs up to one
    slot late. Cancelling is O(1) and drops the wheel's reference to the
    callback at once; a slot left empty cancels its loop timer, so a wheel holds
    nothing for connections that are gone.
    """

    def __init__(
        self, *, resolution_secs: float, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if resolution_secs <= 0:
            raise ValueError("resolution_secs must be positive")
        self._loop = loop
        self._resolution = resolution_secs
        self._slots: dict[int, _Slot] = {}

    def call_later(self, delay: float, callback: Callable[[], None]) -> Deadline:
        """Run `callback` once, at least `delay` seconds from now, in the caller's context.

        The caller's `contextvars` go with the callback (as with `loop.call_later`),
        so its log lines still name its connection. The first call binds the wheel
        to the running loop. Returns the handle that cancels it.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        slot_number = math.ceil((loop.time() + max(0.0, delay)) / self._resolution)
        slot = self._slots.get(slot_number)
        if slot is None:
            timer = loop.call_at(slot_number * self._resolution, self._run, slot_number)
            slot = self._slots[slot_number] = _Slot(timer)
        deadline = Deadline(self, slot_number, callback, contextvars.copy_context())
        slot.deadlines[deadline] = None
        return deadline

    def __len__(self) -> int:
        return sum(len(slot.deadlines) for slot in self._slots.values())

    @property
    def timers(self) -> int:
        """How many loop timers the wheel holds: one per occupied slot."""
        return len(self._slots)

    def _discard(self, slot_number: int, deadline: Deadline) -> None:
        slot = self._slots.get(slot_number)
        if slot is None:
            return
        slot.deadlines.pop(deadline, None)
        if not slot.deadlines:
            slot.timer.cancel()
            del self._slots[slot_number]

    def _run(self, slot_number: int) -> None:
        slot = self._slots.pop(slot_number, None)
        if slot is None:
            return
        for deadline in slot.deadlines:
            deadline._run()
