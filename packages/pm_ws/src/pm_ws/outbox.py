"""Bounded per-connection send queues, written to the socket in coalesced batches."""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

logger = logging.getLogger(__name__)

_BLOCKED_RETRY_SECS: Final = 0.02


class FrameTransport(Protocol):
    """The part of `asyncio.WriteTransport` an outbox writes through."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the socket; never blocks."""

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet accepted by the kernel."""

    def is_closing(self) -> bool:
        """Whether the transport is closed or closing."""


class FlushScheduler:
    """Runs every outbox that received frames in this event-loop iteration, once, together.

    A fanout only appends a frame reference to each recipient's outbox; the
    socket writes happen in one callback after it, one `write` per connection
    however many events reached it meanwhile. That is what makes a burst cost one
    system call per connection instead of one per delivery.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Outbox] = []
        self._handle: asyncio.Handle | None = None

    def schedule(self, outbox: Outbox) -> None:
        """Flush `outbox` at the end of this loop iteration."""
        self._dirty.append(outbox)
        if self._handle is None:
            self._handle = self._loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._handle = None
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            try:
                outbox.flush()
            except Exception:
                logger.exception("writing to a connection failed")
                outbox.close(flush=False)


class Outbox:
    """The frames waiting to be written to one connection, at most `capacity` of them.

    `push` never waits. When the peer stops reading, the kernel's and the
    transport's buffers fill; past `high_water_bytes` buffered in the transport
    the outbox stops writing and keeps frames itself, and when it would hold more
    than `capacity` it closes, drops everything and reports it: that `push`
    returns False with `overflowed` set. The connection is then a slow client,
    closed (4008) by its owner; every other connection is unaffected. The outbox
    holds no reference to its owner, so the two never form a cycle.
    """

    __slots__ = (
        "_blocked",
        "_capacity",
        "_closed",
        "_frames",
        "_high_water",
        "_loop",
        "_overflowed",
        "_scheduled",
        "_scheduler",
        "_transport",
    )

    def __init__(
        self,
        transport: FrameTransport,
        scheduler: FlushScheduler,
        *,
        capacity: int,
        loop: asyncio.AbstractEventLoop,
        high_water_bytes: int = 256 * 1024,
    ) -> None:
        self._transport = transport
        self._scheduler = scheduler
        self._capacity = capacity
        self._loop = loop
        self._high_water = high_water_bytes
        self._frames: list[bytes] = []
        self._scheduled = False
        self._blocked: asyncio.TimerHandle | None = None
        self._closed = False
        self._overflowed = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def closed(self) -> bool:
        """Whether the outbox stopped accepting frames."""
        return self._closed

    @property
    def overflowed(self) -> bool:
        """Whether the outbox closed because a push found it full (a slow client)."""
        return self._overflowed

    def push(self, frame: bytes) -> bool:
        """Queue a framed message; False when it was dropped (closed, or full just now).

        Costs a length check and an append: it is the fanout's per-delivery path.
        A False answer with `overflowed` set means this outbox's connection is too
        slow; the caller closes it.
        """
        if self._closed:
            return False
        if len(self._frames) >= self._capacity:
            self._closed = True
            self._overflowed = True
            self._frames.clear()
            return False
        self._frames.append(frame)
        if not self._scheduled and self._blocked is None:
            self._scheduled = True
            self._scheduler.schedule(self)
        return True

    def write_now(self, frames: list[bytes]) -> None:
        """Queue `frames` beyond the capacity and write everything queued at once.

        For a resume's replay, which history bounds (`HISTORY_SIZE` events), not the
        send queue: a fast client resuming a long gap must not look slow.
        """
        if self._closed:
            return
        self._frames.extend(frames)
        self.flush(force=True)

    def flush(self, *, force: bool = False) -> None:
        """Write every queued frame in one transport write, unless the peer is not reading.

        With `force`, write even to a peer that is not reading (the transport
        buffers it): for the last frames before a close.
        """
        self._scheduled = False
        frames = self._frames
        if not frames or (self._blocked is not None and not force):
            return
        transport = self._transport
        if transport.is_closing():
            frames.clear()
            return
        if not force and transport.get_write_buffer_size() > self._high_water:
            self._blocked = self._loop.call_later(_BLOCKED_RETRY_SECS, self._unblock)
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        frames.clear()

    def close(self, *, flush: bool) -> None:
        """Stop accepting frames; with `flush`, write what is queued first.

        Cancels a pending retry, so the loop keeps no reference to a closed outbox.
        """
        if flush and not self._closed:
            self.flush(force=True)
        self._closed = True
        self._frames.clear()
        if self._blocked is not None:
            self._blocked.cancel()
            self._blocked = None

    def _unblock(self) -> None:
        self._blocked = None
        self.flush()
