"""Per-connection rate limiting of client frames: a token bucket on aiolimiter."""

import math
from dataclasses import dataclass
from typing import Final

from aiolimiter import AsyncLimiter

__all__ = ["ConnectionRateLimiter", "RateLimiterFactory"]

# Absorbs float rounding in refills: `elapsed * rate` can land a hair under a whole token
# (a full window after a burst can leave 1e-14 in the bucket, and a clock stepped 0.6 s at a
# time refills a hair under one token at 100/60 s), which would refuse a frame that is due.
# The bucket is made this much larger, and its period longer in proportion so the refill
# rate stays max_requests / window_secs; being far below one token it never admits an
# extra frame, in a burst or over any interval.
_SLACK: Final = 1e-9


def _check_limits(max_requests: int, window_secs: float) -> None:
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests <= 0:
        raise ValueError(f"max_requests must be a positive integer, not {max_requests!r}")
    if not (math.isfinite(window_secs) and window_secs > 0):
        raise ValueError(f"window_secs must be a positive number of seconds, not {window_secs!r}")


class ConnectionRateLimiter:
    """A token bucket holding at most `max_requests` tokens, refilled continuously.

    A fresh limiter admits `max_requests` frames back to back, then refuses, then
    refills at `max_requests / window_secs` tokens per second (fractional rates kept:
    100 per 60 s is 1.67/s, not 1/s) and never stores more than `max_requests`.
    Built on `aiolimiter.AsyncLimiter`, but never waits: a frame over the limit is
    refused at once, and nothing is queued for it.

    The time source is the running event loop's clock (`loop.time()`), read at each
    attempt; there is no clock parameter (tests control time through the loop).
    A limiter binds to the first event loop that uses it and must only ever be used on
    that one loop, from that loop's thread: it is owned by one connection's task.

    Args:
        max_requests: Bucket size, the burst a fresh or idle connection may send.
        window_secs: Seconds to refill an empty bucket completely.

    Raises:
        ValueError: `max_requests` is not a positive int or `window_secs` not a
            positive finite number.
    """

    __slots__ = ("_bucket",)

    def __init__(self, max_requests: int, window_secs: float) -> None:
        _check_limits(max_requests, window_secs)
        capacity = max_requests + _SLACK
        self._bucket = AsyncLimiter(capacity, window_secs * (capacity / max_requests))

    async def try_acquire(self) -> bool:
        """Takes one token if there is one; returns whether it did.

        Completes without suspending either way: `acquire()` is only awaited after
        `has_capacity()` said yes, with no await in between, so it never waits.
        Must be awaited in the event loop this limiter is bound to.
        """
        if not self._bucket.has_capacity():
            return False
        await self._bucket.acquire()
        return True


@dataclass(frozen=True, slots=True)
class RateLimiterFactory:
    """The rate limit policy, validated once at start-up, that makes each connection's limiter.

    Attributes:
        max_requests: Frames a connection may burst; the bucket size.
        window_secs: Seconds in which `max_requests` tokens refill.

    Raises:
        ValueError: `max_requests` is not a positive int or `window_secs` not a
            positive finite number.
    """

    max_requests: int
    window_secs: float

    def __post_init__(self) -> None:
        _check_limits(self.max_requests, self.window_secs)

    def create(self) -> ConnectionRateLimiter:
        """Returns a full bucket for a new connection; use it on one event loop only."""
        return ConnectionRateLimiter(self.max_requests, self.window_secs)
