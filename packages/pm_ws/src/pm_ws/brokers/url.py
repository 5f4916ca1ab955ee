"""Choosing a broker backend from a URL: `memory://`, `redis://` or `rediss://`."""

from __future__ import annotations

from typing import Final

from pm_ws.brokers.broker import Broker
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.exceptions import UnsupportedBrokerUrl

BROKER_SCHEMES: Final = ("memory", "redis", "rediss")


def open_broker(url: str, *, history_size: int, history_ttl_secs: float) -> Broker:
    """Build the broker a URL names; call `start()` on it before use.

    `memory://` (anything after the scheme is ignored) gives a `MemoryBroker`;
    `redis://` and `rediss://` give a `RedisBroker` on that server, with
    redis-py reading the rest of the URL (credentials, database, TLS options).

    Raises:
        UnsupportedBrokerUrl: Another scheme, an invalid Redis URL, or a Redis
            URL without the `redis` extra installed. The message never
            repeats the URL, which may hold a password.
        ValueError: On an out-of-range history size or TTL.
    """
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if separator and scheme == "memory":
        return MemoryBroker(history_size=history_size, history_ttl_secs=history_ttl_secs)
    if separator and scheme in ("redis", "rediss"):
        # redis_broker imports redis only when a RedisBroker is built.
        from pm_ws.brokers.redis_broker import RedisBroker

        return RedisBroker(url, history_size=history_size, history_ttl_secs=history_ttl_secs)
    accepted = ", ".join(f"{s}://" for s in BROKER_SCHEMES)
    raise UnsupportedBrokerUrl(f"unsupported broker URL: use one of {accepted}")
