"""Per-source-address limits: connections still owing a request head, and failed authentications.

Both are off by default (a limit of 0): behind a reverse proxy or a NAT every
client has the proxy's address, and one busy office would lock itself out. They
are for a gateway that faces clients directly. An IPv6 client is counted by its
/64 prefix, the smallest block an ISP hands out, so that one host cannot dodge a
limit by walking through the 2^64 addresses it owns.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

MAX_TRACKED_ADDRESSES: Final = 16_384
"""Addresses `AuthFailureLimiter` remembers at most (about 150 bytes each)."""


def address_key(host: str | None) -> str:
    """The unit a per-address limit counts: an IPv4 address, or an IPv6 /64 prefix.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Anything that is not
    an IP address (a Unix socket's empty name, a host name) is its own key.
    """
    if not host:
        return ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        prefix = ipaddress.IPv6Network(((int(ip) >> 64) << 64, 64))
        return str(prefix)
    return str(ip)


class PendingConnections:
    """How many connections each address holds that have not yet sent a complete request.

    `admit` counts a new connection in, unless its address is at the limit;
    `release` counts it out once its first request head has arrived or it has
    closed. Memory is bounded by the open connections themselves: an address
    leaves the table when its count returns to zero. With `limit` 0 nothing is
    counted and every connection is admitted.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (off) or positive")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def admit(self, key: str) -> bool:
        """Count a new connection from `key` in; False (and not counted) when at the limit."""
        if not self.limit:
            return True
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        """Count out a connection that `admit` counted in (once per admitted connection)."""
        if not self.limit:
            return
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def held(self, key: str) -> int:
        """Connections from `key` counted in right now."""
        return self._counts.get(key, 0)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class AuthFailureLimiter:
    """A token bucket of failed authentications per address.

    An address may fail `max_failures` times in a burst; the bucket refills at
    `max_failures` per `window_secs`, so a sustained attacker gets one failure per
    `window_secs / max_failures` seconds. Successful authentications cost
    nothing. With `max_failures` 0 the limiter is off.

    Memory is bounded: an address whose bucket has refilled is forgotten, and at
    most `max_addresses` are remembered. Beyond that the address whose last
    failure is oldest is forgotten, which gives it a full bucket again: an
    attacker with more addresses than that can reset others' buckets, but never
    grow the table.
    """

    def __init__(
        self,
        max_failures: int,
        window_secs: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        if max_failures < 0 or window_secs <= 0 or max_addresses <= 0:
            raise ValueError("max_failures >= 0, window_secs > 0 and max_addresses > 0")
        self.max_failures = max_failures
        self.window_secs = window_secs
        self._rate = max_failures / window_secs
        self._clock = clock
        self._max_addresses = max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether the limiter refuses anything at all."""
        return self.max_failures > 0

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may try now."""
        bucket = self._refilled(key)
        if bucket is None or bucket.tokens >= 1:
            return None
        return (1 - bucket.tokens) / self._rate

    def record_failure(self, key: str) -> None:
        """Take one failure out of `key`'s bucket (never below empty)."""
        if not self.enabled:
            return
        bucket = self._refilled(key)
        if bucket is None:
            bucket = _Bucket(float(self.max_failures), self._clock())
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(
            float(self.max_failures), bucket.tokens + max(0.0, now - bucket.updated) * self._rate
        )
        bucket.updated = now
        if bucket.tokens >= self.max_failures:
            del self._buckets[key]
            return None
        return bucket


def auth_failure_middleware(limiter: AuthFailureLimiter, prefixes: Iterable[str]) -> Middleware:
    """Refuse requests from an address whose failed authentications used up its bucket.

    Applies to request paths starting with one of `prefixes` (the routes that
    answer 401). An exhausted address gets 429 `{"code": "RATE_LIMIT_EXCEEDED"}`
    with `Retry-After` (whole seconds) before its handler runs, so no token or
    key is looked at. Every 401 answer of those routes, returned or raised,
    takes one failure from the bucket of the address it came from (the peer's
    address, not a forwarded header, which a client could forge).
    """
    guarded = tuple(prefixes)

    @web.middleware
    async def limit_auth_failures(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(guarded):
            return await handler(request)
        key = address_key(request.remote)
        wait = limiter.retry_after(key)
        if wait is not None:
            refusal = web.json_response(
                {
                    "code": "RATE_LIMIT_EXCEEDED",
                    "message": "too many failed authentications from this address",
                },
                status=429,
            )
            refusal.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return refusal
        try:
            response = await handler(request)
        except web.HTTPException as raised:
            if raised.status == 401:
                limiter.record_failure(key)
            raise
        if response.status == 401:
            limiter.record_failure(key)
        return response

    return limit_auth_failures
