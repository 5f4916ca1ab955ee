"""The shared broker behind `redis://`: per-tenant streams in Redis, live traffic over pub/sub."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from pm_ws.brokers._redis_codec import (
    TenantKeys,
    decode_history_entry,
    encode_disconnect,
    event_header,
)
from pm_ws.brokers._redis_feed import FeedContext, TenantFeed
from pm_ws.brokers._redis_listener import Backoff, PubSubListener
from pm_ws.brokers._redis_lua import PUBLISH, READ
from pm_ws.brokers.broker import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL_SECS,
    BrokerHealth,
    BrokerSink,
    DisconnectRequest,
    HistoryRead,
    PublishResult,
    history_read,
)
from pm_ws.codec import event_bytes
from pm_ws.events import Event, EventDraft, StreamPosition, TenantId
from pm_ws.exceptions import BrokerUnavailable, UnsupportedBrokerUrl

if TYPE_CHECKING:
    from pm_ws.brokers._redis_link import RedisLink

_LOG = logging.getLogger(__name__)

REDIS_EXTRA_MISSING: Final = 'redis:// needs the redis extra: pip install "pm-ws[redis]"'
_UNAVAILABLE: Final = "event broker unavailable"
# History reads in flight at once when many tenants catch up after a reconnect.
_CATCH_UP_CONCURRENCY: Final = 32


class RedisBroker:
    """Per-tenant streams in Redis, shared by every process and host using the same keys.

    Publishing runs one Lua script: duplicate check by event id, next seq,
    append to the tenant's history stream (trimmed to exactly
    `history_size`, expiring `history_ttl_secs` after the last publish) and
    PUBLISH on the tenant's channel. Every process listens on one pub/sub
    connection, only to the tenants its sink asked for (`listen`).

    Delivery keeps each tenant's seq order. A gap (pub/sub lost messages,
    the connection dropped) is filled from history before anything newer is
    delivered; when history no longer reaches back, or the stream's numbering
    restarted (new epoch), the sink gets `lagged` for the tenant and delivery
    goes on from the current position. Live messages that arrive while history is
    read wait in a buffer of `history_size` events; overflow means reading
    history again.

    Outages: publish, reads, `position` and `publish_disconnect` raise
    `BrokerUnavailable`; `health` reports not ok; the pub/sub connection is
    re-established with exponential backoff and jitter, every tenant
    re-subscribed and caught up from history (or lagged). The stored
    publish time is the publisher's wall clock: hosts should keep clocks in
    sync, as history older than the TTL by the reader's clock is not served.
    """

    def __init__(
        self,
        url: str,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl_secs: float = DEFAULT_HISTORY_TTL_SECS,
        key_prefix: str = "pm",
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        timeout_secs: float = 2.0,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Prepare a broker for a `redis://` or `rediss://` URL; connects in `start`.

        Args:
            url: Redis URL, as redis-py's `from_url` reads it.
            history_size: Events kept per tenant, at least 1.
            history_ttl_secs: Age at which an event leaves history and its
                event id may be published again; greater than 0.
            key_prefix: Start of every key and channel name; no braces.
                Brokers with the same prefix share streams.
            reconnect_backoff: Shortest and longest wait between pub/sub
                reconnection attempts, in seconds.
            timeout_secs: Limit for each Redis command and for `health`, and
                for `listen` to take effect.
            wall_clock_ns: Wall-clock nanoseconds: publish times, and "now"
                when telling expired history apart.

        Raises:
            UnsupportedBrokerUrl: redis is not installed, or the URL is invalid.
            ValueError: On an out-of-range setting.
        """
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        if history_ttl_secs <= 0:
            raise ValueError("history_ttl_secs must be positive")
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must be non-empty and without braces")
        backoff = Backoff(*reconnect_backoff)
        if timeout_secs <= 0:
            raise ValueError("timeout_secs must be positive")
        try:
            from pm_ws.brokers._redis_link import RedisLink
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "redis":
                raise
            raise UnsupportedBrokerUrl(REDIS_EXTRA_MISSING) from exc
        try:
            self._link: RedisLink = RedisLink(url, timeout_secs=timeout_secs)
        except ValueError as exc:
            # redis-py's message may quote the URL, password included: keep it out.
            raise UnsupportedBrokerUrl("invalid redis:// URL") from exc
        self._publish_script = self._link.script(PUBLISH)
        self._read_script = self._link.script(READ)
        self._listener = PubSubListener(self._link, backoff)
        self._history_size = history_size
        self._ttl_ns = int(history_ttl_secs * 1e9)
        self._ttl_ms = max(1, -(-self._ttl_ns // 1_000_000))
        self._prefix = key_prefix
        self._backoff = backoff
        self._timeout_secs = timeout_secs
        self._wall_clock_ns = wall_clock_ns
        self._feed_context: FeedContext | None = None
        self._feeds: dict[TenantId, TenantFeed] = {}
        self._started = False
        self._closed = False

    @property
    def key_prefix(self) -> str:
        """The prefix of this broker's keys and channels."""
        return self._prefix

    def attach(self, sink: BrokerSink) -> None:
        """Deliver the listened tenants' traffic to `sink` from now on.

        Raises:
            RuntimeError: A sink is already attached.
        """
        if self._feed_context is not None:
            raise RuntimeError("this broker already delivers to a sink")
        self._feed_context = FeedContext(
            sink=sink,
            history=self,
            read_slots=asyncio.Semaphore(_CATCH_UP_CONCURRENCY),
            backoff=self._backoff,
            held_limit=self._history_size,
        )

    async def start(self) -> None:
        """Check that Redis answers and open the pub/sub connection.

        Raises:
            BrokerUnavailable: Redis did not answer within the timeout; the
                broker stays unstarted and `start` may be called again.
        """
        self._check_open()
        if self._started:
            return
        await self._link.ping()
        await self._listener.start(self._timeout_secs)
        self._started = True

    async def close(self) -> None:
        """Stop listening and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            feed.close()
        await self._listener.close()
        for feed in feeds:
            await feed.wait_closed()
        await self._link.close()

    async def publish(self, draft: EventDraft) -> PublishResult:
        """Number, store and announce an event in one atomic script.

        A draft whose `event_id` is still in the tenant's history (and
        younger than the TTL) is not stored or announced again: the original
        position comes back with `duplicate=True`. A publish retried after a
        lost reply may therefore report `duplicate=True` for its own first
        attempt.

        Raises:
            PublishOutcomeUnknown: Redis did not answer in time; the event may be
                stored (a retry with the same event_id settles it).
            BrokerUnavailable: Redis unreachable or refusing; nothing was stored.
        """
        self._check_open()
        keys = TenantKeys.of(self._prefix, draft.tenant_id)
        published_at_ns = self._wall_clock_ns()
        reply = await self._publish_script.run(
            (keys.meta, keys.history, keys.event_ids),
            (
                uuid.uuid4().hex.encode(),
                draft.event_id.encode(),
                event_bytes(draft),
                draft.tenant_id.encode(),
                published_at_ns,
                self._ttl_ms,
                self._history_size,
                keys.channel,
                event_header(published_at_ns),
            ),
            outcome_unknown_on_timeout=True,
        )
        match reply:
            case [bytes() as epoch, int() as seq, int() as duplicate]:
                position = StreamPosition(epoch.decode(), seq)
                return PublishResult(draft.event_id, position, duplicate=bool(duplicate))
        raise _malformed("publish", reply)

    async def read_after(self, tenant_id: TenantId, position: StreamPosition) -> HistoryRead:
        """Events after `position` still in history (and younger than the TTL), oldest first.

        A position of another epoch, or ahead of the stream, reads as no
        events and `complete=False`.

        Raises:
            BrokerUnavailable: Redis unreachable, timed out or refusing.
        """
        self._check_open()
        current, events = await self._read(tenant_id, position.epoch, position.seq)
        return history_read(events, position, current)

    async def position(self, tenant_id: TenantId) -> StreamPosition:
        """The tenant's current position; a never-seen tenant gets seq 0 and a fresh epoch.

        Raises:
            BrokerUnavailable: Redis unreachable, timed out or refusing.
        """
        self._check_open()
        current, _ = await self._read(tenant_id, "", -1)
        return current

    async def listen(self, tenant_id: TenantId) -> None:
        """Deliver the tenant's events published from now on to the sink; twice is a no-op.

        The first `listen` of a tenant SUBSCRIBEs to its channel and returns
        once the subscription is confirmed and the starting position read,
        so nothing published after it returns is missed.

        Raises:
            BrokerUnavailable: The subscription could not be made (Redis
                unreachable, or not within the timeout); the tenant is then
                not listened to.
            RuntimeError: No sink is attached.
        """
        self._check_open()
        if self._feed_context is None:
            raise RuntimeError("attach a sink before listening")
        feed = self._feeds.get(tenant_id)
        if feed is None:
            if not self._listener.connected:
                raise BrokerUnavailable(_UNAVAILABLE)
            feed = self._feeds[tenant_id] = TenantFeed(tenant_id, self._feed_context)
            feed.start_catch_up()
            await self._listener.subscribe(TenantKeys.of(self._prefix, tenant_id).channel, feed)
        await asyncio.wait({feed.ready}, timeout=self._timeout_secs)
        if feed.ready.done():
            return
        await self.unlisten(tenant_id)
        raise BrokerUnavailable(_UNAVAILABLE)

    async def unlisten(self, tenant_id: TenantId) -> None:
        """Stop delivering the tenant's traffic and UNSUBSCRIBE. Never raises."""
        feed = self._feeds.pop(tenant_id, None)
        if feed is None:
            return
        feed.close()
        await self._listener.unsubscribe(TenantKeys.of(self._prefix, tenant_id).channel)

    async def publish_disconnect(self, request: DisconnectRequest) -> None:
        """PUBLISH the order on the tenant's channel: every listening process carries it out.

        Raises:
            BrokerUnavailable: Redis unreachable, timed out or refusing.
        """
        self._check_open()
        keys = TenantKeys.of(self._prefix, request.tenant_id)
        await self._link.send(keys.channel, encode_disconnect(request))

    async def health(self) -> BrokerHealth:
        """PING Redis within the timeout; not ok while pub/sub is down either. Never raises."""
        if self._closed:
            return BrokerHealth(ok=False, latency_ms=0.0, detail="event broker closed")
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._link.ping(), self._timeout_secs)
            detail = "" if self._listener.connected else "event broker subscription reconnecting"
        except (BrokerUnavailable, TimeoutError):
            detail = _UNAVAILABLE
        except Exception:
            _LOG.exception("redis health probe failed")
            detail = _UNAVAILABLE
        latency_ms = (time.perf_counter() - started) * 1000
        return BrokerHealth(ok=not detail, latency_ms=latency_ms, detail=detail)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable(_UNAVAILABLE)

    async def _read(
        self, tenant_id: TenantId, epoch: str, after: int
    ) -> tuple[StreamPosition, list[Event]]:
        keys = TenantKeys.of(self._prefix, tenant_id)
        reply = await self._read_script.run(
            (keys.meta, keys.history, keys.event_ids),
            (uuid.uuid4().hex.encode(), epoch.encode(), after),
        )
        match reply:
            case [bytes() as current_epoch, int() as seq, list() as entries]:
                current = StreamPosition(current_epoch.decode(), seq)
            case _:
                raise _malformed("read", reply)
        expired_before = self._wall_clock_ns() - self._ttl_ns
        events: list[Event] = []
        for entry in entries:
            try:
                match entry:
                    case [bytes(), list() as fields]:
                        event = decode_history_entry(tenant_id, fields)
                    case _:
                        raise ValueError("history entry is not [id, fields]")
            except ValueError as exc:
                # Skipping leaves a hole: the read is reported incomplete.
                _LOG.warning("skipping an unreadable history entry: %s", exc)
                continue
            if event.published_at_ns > expired_before and event.position.epoch == current.epoch:
                events.append(event)
        return current, events


def _malformed(what: str, reply: Any) -> BrokerUnavailable:
    _LOG.error("unexpected redis %s reply: %.200r", what, reply)
    return BrokerUnavailable(_UNAVAILABLE)
