"""A bounded, closable queue between the connection's reader and the application."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

_T = TypeVar("_T")


class Channel(Generic[_T]):
    """A bounded FIFO with an end: `put` waits for room, `get` waits for an item or the end.

    Closing keeps what was queued: `get` returns the remaining items, then
    raises the error given to `close` (or `StopAsyncIteration` for a clean
    end). `put` after the close drops the item. Made for one producer and one
    consumer.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self._capacity = capacity
        self._items: deque[_T] = deque()
        self._closed = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once `close` was called (items may still be waiting to be read)."""
        return self._closed

    async def put(self, item: _T) -> None:
        """Queue `item`, waiting while the channel is full; a no-op once closed."""
        while not self._closed and len(self._items) >= self._capacity:
            self._writable.clear()
            await self._writable.wait()
        if self._closed:
            return
        self._items.append(item)
        self._readable.set()

    async def get(self) -> _T:
        """The oldest item, waiting for one.

        Raises:
            StopAsyncIteration: The channel was closed without an error and is empty.
            BaseException: The error the channel was closed with, once it is empty.
        """
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item

    def close(self, error: BaseException | None = None) -> None:
        """End the channel, after the items already queued; only the first close counts."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._readable.set()
        self._writable.set()
