"""One pub/sub connection per process: subscriptions kept across reconnects, messages dispatched.

The listener knows channels, not what travels on them: each channel has a
handler (a `RedisBroker` tenant feed today), so another Redis-backed store can
register its own channels on the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Final, Protocol

from pm_ws.exceptions import BrokerUnavailable

if TYPE_CHECKING:
    from pm_ws.brokers._redis_link import ChannelMessage, PubSubLink, RedisLink

_LOG = logging.getLogger(__name__)

_UNAVAILABLE: Final = "event broker unavailable"
# An idle pub/sub connection is pinged this often; a second silent interval ends it.
_KEEPALIVE_SECS: Final = 5.0


class Backoff:
    """Waits between attempts: doubling from `low` up to `high`, each shortened by jitter."""

    def __init__(self, low: float, high: float) -> None:
        """Check the range.

        Raises:
            ValueError: Unless 0 < `low` <= `high`.
        """
        if not 0 < low <= high:
            raise ValueError("reconnect_backoff must be (min, max) with 0 < min <= max")
        self._low = low
        self._high = high
        self._random = random.Random()  # jitter, not secrecy

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (counting from 1)."""
        ceiling = min(self._high, self._low * 2.0 ** min(failures - 1, 32))
        return ceiling * self._random.uniform(0.5, 1.0)


class ChannelHandler(Protocol):
    """What the listener tells the owner of one channel. Every call is synchronous."""

    def subscribed(self) -> None:
        """Redis confirmed the SUBSCRIBE: every later message arrives; earlier ones may be lost."""

    def interrupted(self) -> None:
        """The connection dropped: messages are lost until `subscribed` is called again."""

    def received(self, data: bytes) -> None:
        """One message on the channel; must not raise."""


class PubSubListener:
    """Keeps one pub/sub connection subscribed to every registered channel, reconnecting forever.

    After a lost connection it waits (`backoff`), connects again and
    re-subscribes every channel; each handler learns of the gap through
    `interrupted` and `subscribed`. A connection is proved alive by a
    keepalive PING when idle; a refused SUBSCRIBE (ACL) counts as a failure
    that keeps backing off.
    """

    def __init__(self, link: RedisLink, backoff: Backoff) -> None:
        """Prepare a listener on `link`; nothing connects before `start`."""
        self._link = link
        self._backoff = backoff
        self._handlers: dict[bytes, ChannelHandler] = {}
        # SUBSCRIBEs sent on the current connection and not yet confirmed.
        self._unconfirmed: dict[bytes, int] = {}
        self._pubsub: PubSubLink | None = None
        self._connected = asyncio.Event()
        self._failures = 0
        self._reader: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up now."""
        return self._pubsub is not None

    async def start(self, timeout_secs: float) -> None:
        """Open the connection; no-op once started.

        Raises:
            BrokerUnavailable: Not connected within `timeout_secs`; the
                listener stays unstarted and `start` may be called again.
        """
        if self._reader is not None:
            return
        self._reader = asyncio.create_task(self._listen_forever(), name="pm-ws redis listener")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_secs)
        except TimeoutError:
            reader, self._reader = self._reader, None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            raise BrokerUnavailable(_UNAVAILABLE) from None

    async def close(self) -> None:
        """Stop listening and forget every channel. Idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._handlers.clear()

    async def subscribe(self, channel: bytes, handler: ChannelHandler) -> None:
        """Route the channel's messages to `handler`, sending SUBSCRIBE if connected.

        Never raises: while disconnected (or when sending fails) the next
        connection subscribes it; `handler.subscribed` says when it took.
        """
        self._handlers[channel] = handler
        pubsub = self._pubsub
        if pubsub is None:
            return
        self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
        with contextlib.suppress(BrokerUnavailable):
            await pubsub.subscribe(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        """Stop routing the channel and send UNSUBSCRIBE if connected. Never raises."""
        if self._handlers.pop(channel, None) is None:
            return
        pubsub = self._pubsub
        if pubsub is not None:
            # On failure the listener reconnects without this channel.
            with contextlib.suppress(BrokerUnavailable):
                await pubsub.unsubscribe(channel)

    async def _listen_forever(self) -> None:
        while True:
            link = self._link.pubsub()
            cause: BaseException | None = None
            try:
                self._unconfirmed = dict.fromkeys(self._handlers, 1)
                await link.open(list(self._unconfirmed))
                for channel in [c for c in self._unconfirmed if c not in self._handlers]:
                    await link.unsubscribe(channel)  # its handler left while connecting
                self._pubsub = link
                self._connected.set()
                await self._pump(link)
            except BrokerUnavailable as exc:
                cause = exc.__cause__ or exc
            except Exception:
                _LOG.exception("redis listener failed")
            finally:
                self._pubsub = None
                self._connected.clear()
                for handler in list(self._handlers.values()):
                    handler.interrupted()
                await link.close()
            self._failures += 1
            delay = self._backoff.delay(self._failures)
            _LOG.log(
                logging.WARNING if self._failures == 1 else logging.DEBUG,
                "redis subscription down (%s); reconnecting in %.2fs (attempt %d)",
                cause,
                delay,
                self._failures,
            )
            await asyncio.sleep(delay)

    async def _pump(self, link: PubSubLink) -> None:
        """Dispatch messages until the connection fails (raises `BrokerUnavailable`)."""
        pinged = False
        while True:
            message = await link.receive(_KEEPALIVE_SECS)
            if message is None:
                if pinged:
                    raise BrokerUnavailable(_UNAVAILABLE) from TimeoutError("no answer to PING")
                pinged = True
                await link.ping()
                continue
            pinged = False
            if self._failures and (message.kind == "subscribe" or not self._unconfirmed):
                # Only a confirmed SUBSCRIBE proves the connection works: one that Redis
                # refuses (ACL) must keep backing off, not count as a recovery.
                _LOG.info("redis subscription re-established; catching up from history")
                self._failures = 0
            self._dispatch(message)

    def _dispatch(self, message: ChannelMessage) -> None:
        if message.kind == "message":
            handler = self._handlers.get(message.channel)
            if handler is not None:
                handler.received(message.data)
        elif message.kind == "subscribe":
            # Only the last SUBSCRIBE sent for a channel speaks for the handler now using it.
            left = self._unconfirmed.pop(message.channel, 0) - 1
            if left > 0:
                self._unconfirmed[message.channel] = left
            elif (handler := self._handlers.get(message.channel)) is not None:
                handler.subscribed()
