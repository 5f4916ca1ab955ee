"""The wires to one Redis: a command client running scripts, and pub/sub connections.

Nothing here knows what the keys and channels mean, so every Redis-backed
store of a process can share one `RedisLink` (and one `PubSubListener` on it).
"""

# This module imports redis; pm_ws.brokers.redis_broker imports it only when a
# RedisBroker is built, so `import pm_ws` works without the extra.

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pm_ws.exceptions import BrokerUnavailable, PublishOutcomeUnknown

_LOG = logging.getLogger(__name__)

UNAVAILABLE: Final = "event broker unavailable"
OUTCOME_UNKNOWN: Final = (
    "the event broker did not answer in time; the event may have been stored: "
    "retry with the same event_id"
)


def _unavailable(what: str, exc: BaseException) -> BrokerUnavailable:
    # Callers see the client-safe message; the cause stays chained for their logs.
    _LOG.debug("redis %s failed: %s: %s", what, type(exc).__name__, exc)
    return BrokerUnavailable(UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One item read from a pub/sub connection.

    `kind` is redis-py's message type: "message", "subscribe", "unsubscribe",
    "pong", ...; `channel` and `data` are empty when the kind has none.
    """

    kind: str
    channel: bytes
    data: bytes


class PubSubLink:
    """One pub/sub connection. Single use: after any error, close it and open another.

    Every method raises `BrokerUnavailable` on a connection error, a timeout
    or a Redis error; redis-py's own reconnection is not relied on, so the
    caller always learns that messages may have been missed.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._pubsub = client.pubsub()

    async def open(self, channels: Sequence[bytes]) -> None:
        """Connect and subscribe to `channels` (confirmations arrive through `receive`)."""
        try:
            # PING connects even with no channel to subscribe; its answer is read as "pong".
            await self._pubsub.ping()
            if channels:
                await self._pubsub.subscribe(*channels)
        except (RedisError, OSError) as exc:
            raise _unavailable("subscribe", exc) from exc

    async def subscribe(self, channel: bytes) -> None:
        """Send SUBSCRIBE; the confirmation arrives through `receive`."""
        try:
            await self._pubsub.subscribe(channel)
        except (RedisError, OSError) as exc:
            raise _unavailable("subscribe", exc) from exc

    async def unsubscribe(self, channel: bytes) -> None:
        """Send UNSUBSCRIBE."""
        try:
            await self._pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            raise _unavailable("unsubscribe", exc) from exc

    async def ping(self) -> None:
        """Send PING; the answer arrives through `receive` as kind "pong"."""
        try:
            await self._pubsub.ping()
        except (RedisError, OSError) as exc:
            raise _unavailable("pub/sub ping", exc) from exc

    async def receive(self, wait_secs: float) -> ChannelMessage | None:
        """The next message, or None when nothing arrived within `wait_secs`."""
        try:
            raw: Any = await self._pubsub.get_message(timeout=wait_secs)
        except (RedisError, OSError) as exc:
            raise _unavailable("pub/sub read", exc) from exc
        if raw is None:
            return None
        channel, data = raw.get("channel"), raw.get("data")
        return ChannelMessage(
            kind=str(raw.get("type")),
            channel=channel if isinstance(channel, bytes) else b"",
            data=data if isinstance(data, bytes) else b"",
        )

    async def close(self) -> None:
        """Drop the connection; never raises."""
        try:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            _LOG.debug("closing a redis pub/sub connection failed: %s", exc)


class RedisScript:
    """A Lua script of the command client: run by EVALSHA, loaded again when Redis lost it."""

    def __init__(self, script: AsyncScript) -> None:
        self._script = script

    async def run(
        self,
        keys: Sequence[bytes],
        args: Sequence[bytes | int],
        *,
        outcome_unknown_on_timeout: bool = False,
    ) -> Any:
        """Run the script and return Redis's reply as redis-py gives it.

        Args:
            keys: KEYS of the script.
            args: ARGV of the script.
            outcome_unknown_on_timeout: The script stores something the caller
                must not assume undone: a stalled Redis runs it when it wakes,
                after the timeout.

        Raises:
            PublishOutcomeUnknown: No answer within the timeout, when
                `outcome_unknown_on_timeout`.
            BrokerUnavailable: Redis refused, failed or (otherwise) did not answer.
        """
        try:
            return await self._script(keys=list(keys), args=list(args))
        except RedisTimeoutError as exc:
            if not outcome_unknown_on_timeout:
                raise _unavailable("script", exc) from exc
            _LOG.debug("redis script timed out: %s", exc)
            raise PublishOutcomeUnknown(OUTCOME_UNKNOWN) from exc
        except (RedisError, OSError) as exc:
            raise _unavailable("script", exc) from exc


class RedisLink:
    """The command client (pooled) and the client that pub/sub connections come from.

    Commands time out after `timeout_secs` and are retried once at once on a
    connection error (a pooled connection that died with a restarted
    server); errors come out as `BrokerUnavailable` with a client-safe
    message, details go to the log.
    """

    def __init__(self, url: str, *, timeout_secs: float) -> None:
        """Prepare clients for `url`; connects lazily.

        Raises:
            ValueError: When redis-py cannot parse `url`.
        """
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_secs,
            socket_connect_timeout=timeout_secs,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            decode_responses=False,
        )
        # No retries here: the listener handles every pub/sub failure itself.
        self._pubsub_client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_secs,
            socket_connect_timeout=timeout_secs,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    def script(self, source: str) -> RedisScript:
        """Register a Lua script (nothing is sent until its first run)."""
        return RedisScript(self._client.register_script(source))

    async def send(self, channel: bytes, message: bytes) -> None:
        """PUBLISH one message."""
        try:
            await self._client.publish(channel, message)
        except (RedisError, OSError) as exc:
            raise _unavailable("publish", exc) from exc

    async def ping(self) -> None:
        """PING over the command client."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise _unavailable("ping", exc) from exc

    def pubsub(self) -> PubSubLink:
        """A new, unconnected pub/sub connection."""
        return PubSubLink(self._pubsub_client)

    async def close(self) -> None:
        """Close both clients' pools; never raises."""
        for client in (self._client, self._pubsub_client):
            try:
                await client.aclose()
            except (RedisError, OSError) as exc:
                _LOG.debug("closing a redis client failed: %s", exc)
