"""The shared broker behind `redis://`: per-tenant streams in Redis, live traffic over pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from pm_ws.brokers._redis_codec import (
    TenantKeys,
    decode_channel_message,
    decode_history_entry,
    encode_disconnect,
    encode_draft,
    event_header,
)
from pm_ws.brokers.broker import (
    BrokerHealth,
    BrokerSink,
    DisconnectRequest,
    HistoryRead,
    PublishResult,
)
from pm_ws.brokers.memory_broker import history_read
from pm_ws.events import Event, EventDraft, StreamPosition, TenantId
from pm_ws.exceptions import BrokerUnavailable, UnsupportedBrokerUrl

if TYPE_CHECKING:
    from pm_ws.brokers._redis_link import ChannelMessage, PubSubLink, RedisLink

_LOG = logging.getLogger(__name__)

REDIS_EXTRA_MISSING: Final = 'redis:// needs the redis extra: pip install "pm-ws[redis]"'
_UNAVAILABLE: Final = "event broker unavailable"
# An idle pub/sub connection is pinged this often; a second silent interval ends it.
_KEEPALIVE_SECS: Final = 5.0
# History reads in flight at once when many tenants catch up after a reconnect.
_CATCH_UP_CONCURRENCY: Final = 32


class _Feed:
    """A tenant this process listens to: its sinks and how far delivery got.

    Invariant: `last` is the position of the last event handed to the sinks
    (or the position delivery started from). While `syncing`, a catch-up task
    owns the feed and live events wait in `held`, each with the number of
    history reads started before it arrived.
    """

    def __init__(self, tenant_id: TenantId, keys: TenantKeys, held_limit: int) -> None:
        self.tenant_id = tenant_id
        self.keys = keys
        self.sinks: dict[int, BrokerSink] = {}
        self.last: StreamPosition | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.listening = asyncio.Event()
        self.syncing = True
        self.again = False
        self.reads_started = 0
        self.held: deque[tuple[Event, int]] = deque()
        self.held_limit = held_limit
        self.task: asyncio.Task[None] | None = None

    def advance(self, event: Event) -> bool:
        """Deliver `event` if it is the next one, drop it if already delivered.

        Returns False, doing nothing, when it does not continue the stream
        (a gap or another epoch): history must be read first.
        """
        last = self.last
        if last is None or event.position.epoch != last.epoch:
            return False
        if event.position.seq <= last.seq:
            return True
        if event.position.seq != last.seq + 1:
            return False
        self.last = event.position
        for sink in list(self.sinks.values()):
            try:
                sink.deliver(event)
            except Exception:
                _LOG.exception("broker sink failed to take event %s", event.position)
        return True

    def hold(self, event: Event) -> None:
        """Keep a live event until history has been read; overflow means read again."""
        if len(self.held) >= self.held_limit:
            self.held.clear()
            self.again = True
        self.held.append((event, self.reads_started))

    def apply(self, read: HistoryRead) -> None:
        """Deliver a complete read, or tell the sinks they lagged and restart from its position."""
        if read.complete:
            for event in read.events:
                self.advance(event)
            return
        _LOG.warning(
            "events of tenant %r were lost for this process: delivered up to %s, the "
            "stream is at %s and history does not cover the gap; its connections must resume",
            self.tenant_id,
            self.last,
            read.position,
        )
        self.last = read.position
        for sink in list(self.sinks.values()):
            try:
                sink.lagged(self.tenant_id)
            except Exception:
                _LOG.exception("broker sink failed to take a lag notice")

    def drain(self, settled: int) -> bool:
        """Deliver held events in order; False when one still needs a history read.

        `settled` is the number of the latest completed history read. An
        event that arrived before that read started was published before it,
        so the read covered it: if it still does not continue the stream, it
        belongs to an epoch the read proved dead (or is forged) and is dropped.
        """
        while self.held:
            event, reads_before = self.held[0]
            if not self.advance(event) and reads_before >= settled:
                return False
            self.held.popleft()
        return True

    def disconnect(self, request: DisconnectRequest) -> None:
        for sink in list(self.sinks.values()):
            try:
                sink.disconnect(request)
            except Exception:
                _LOG.exception("broker sink failed to take a disconnect order")


class RedisBroker:
    """Per-tenant streams in Redis, shared by every process and host using the same keys.

    Publishing runs one Lua script: duplicate check by event id, next seq,
    append to the tenant's history stream (trimmed to exactly
    `history_size`, expiring `history_ttl_secs` after the last publish) and
    PUBLISH on the tenant's channel. Every process listens on one pub/sub
    connection, only to tenants it has sinks for.

    Delivery keeps each tenant's seq order. A gap (pub/sub lost messages,
    the connection dropped) is filled from history before anything newer is
    delivered; when history no longer reaches back, or the stream's numbering
    restarted (new epoch), the tenant's sinks get `lagged` and delivery goes
    on from the current position. Live messages that arrive while history is
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
        history_size: int = 1000,
        history_ttl_secs: float = 300,
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
                for a first `subscribe` of a tenant to take effect.
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
        low, high = reconnect_backoff
        if not 0 < low <= high:
            raise ValueError("reconnect_backoff must be (min, max) with 0 < min <= max")
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
        self._history_size = history_size
        self._ttl_ns = int(history_ttl_secs * 1e9)
        self._ttl_ms = max(1, -(-self._ttl_ns // 1_000_000))
        self._prefix = key_prefix
        self._backoff_range = (low, high)
        self._timeout_secs = timeout_secs
        self._wall_clock_ns = wall_clock_ns
        self._random = random.Random()  # jitter, not secrecy
        self._feeds: dict[TenantId, _Feed] = {}
        self._by_channel: dict[bytes, _Feed] = {}
        # SUBSCRIBEs sent on the current pub/sub connection and not yet confirmed.
        self._unconfirmed: dict[bytes, int] = {}
        self._pubsub: PubSubLink | None = None
        self._connected = asyncio.Event()
        self._failures = 0
        self._catch_up_slots = asyncio.Semaphore(_CATCH_UP_CONCURRENCY)
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def key_prefix(self) -> str:
        """The prefix of this broker's keys and channels."""
        return self._prefix

    async def start(self) -> None:
        """Check that Redis answers and open the pub/sub connection.

        Raises:
            BrokerUnavailable: Redis did not answer within the timeout; the
                broker stays unstarted and `start` may be called again.
        """
        self._check_open()
        if self._reader is not None:
            return
        await self._link.ping()
        self._reader = asyncio.create_task(self._listen_forever(), name="pm-ws redis listener")
        try:
            await asyncio.wait_for(self._connected.wait(), self._timeout_secs)
        except TimeoutError:
            reader, self._reader = self._reader, None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            raise BrokerUnavailable(_UNAVAILABLE) from None

    async def close(self) -> None:
        """Stop listening, forget every sink and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._reader, *(f.task for f in self._feeds.values())) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()
        self._by_channel.clear()
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
        reply = await self._link.run_publish(
            keys=(keys.meta, keys.history, keys.event_ids),
            args=(
                uuid.uuid4().hex.encode(),
                draft.event_id.encode(),
                encode_draft(draft),
                draft.tenant_id.encode(),
                published_at_ns,
                self._ttl_ms,
                self._history_size,
                keys.channel,
                event_header(published_at_ns),
            ),
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

    async def subscribe(self, tenant_id: TenantId, sink: BrokerSink) -> None:
        """Deliver the tenant's events published from now on to `sink`; twice is a no-op.

        The first sink of a tenant makes the process SUBSCRIBE to its channel;
        this returns once the subscription is confirmed and the starting
        position read, so nothing published after it returns is missed.

        Raises:
            BrokerUnavailable: The first subscription of a tenant could not be
                made (Redis unreachable, or not within the timeout); `sink` is
                then not subscribed.
        """
        self._check_open()
        feed = self._feeds.get(tenant_id)
        if feed is None:
            pubsub = self._pubsub
            if pubsub is None:
                raise BrokerUnavailable(_UNAVAILABLE)
            keys = TenantKeys.of(self._prefix, tenant_id)
            feed = _Feed(tenant_id, keys, self._history_size)
            self._feeds[tenant_id] = feed
            self._by_channel[keys.channel] = feed
            feed.sinks[id(sink)] = sink
            self._unconfirmed[keys.channel] = self._unconfirmed.get(keys.channel, 0) + 1
            feed.task = self._spawn_catch_up(feed)
            # On failure the listener reconnects and subscribes every feed again.
            with contextlib.suppress(BrokerUnavailable):
                await pubsub.subscribe(keys.channel)
        else:
            feed.sinks[id(sink)] = sink
        await asyncio.wait({feed.ready}, timeout=self._timeout_secs)
        if feed.ready.done():
            return
        await self.unsubscribe(tenant_id, sink)
        raise BrokerUnavailable(_UNAVAILABLE)

    async def unsubscribe(self, tenant_id: TenantId, sink: BrokerSink) -> None:
        """Stop delivering to `sink`; after the last sink of a tenant, UNSUBSCRIBE. Never raises."""
        feed = self._feeds.get(tenant_id)
        if feed is None or feed.sinks.pop(id(sink), None) is None or feed.sinks:
            return
        del self._feeds[tenant_id]
        del self._by_channel[feed.keys.channel]
        if feed.task is not None:
            feed.task.cancel()
        pubsub = self._pubsub
        if pubsub is not None:
            # On failure the listener reconnects without this tenant.
            with contextlib.suppress(BrokerUnavailable):
                await pubsub.unsubscribe(feed.keys.channel)

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
            detail = "" if self._pubsub is not None else "event broker subscription reconnecting"
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
        reply = await self._link.run_read(
            keys=(keys.meta, keys.history, keys.event_ids),
            args=(uuid.uuid4().hex.encode(), epoch.encode(), after),
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

    def _spawn_catch_up(self, feed: _Feed) -> asyncio.Task[None]:
        task = asyncio.create_task(self._catch_up(feed), name="pm-ws redis catch-up")
        task.add_done_callback(_log_failure)
        return task

    def _start_catch_up(self, feed: _Feed) -> None:
        if feed.syncing:
            feed.again = True
            return
        feed.syncing = True
        feed.task = self._spawn_catch_up(feed)

    async def _catch_up(self, feed: _Feed) -> None:
        """Bring `feed` up to date from history, then hand it back to live delivery."""
        failures = 0
        while True:
            # Reading only once SUBSCRIBE is confirmed means nothing published after
            # the read can be missed.
            await feed.listening.wait()
            feed.again = False
            feed.reads_started += 1
            read_number = feed.reads_started
            try:
                async with self._catch_up_slots:
                    if feed.last is None:
                        feed.last, _ = await self._read(feed.tenant_id, "", -1)
                    else:
                        current, events = await self._read(
                            feed.tenant_id, feed.last.epoch, feed.last.seq
                        )
                        feed.apply(history_read(events, feed.last, current))
            except BrokerUnavailable:
                failures += 1
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            if not feed.ready.done():
                feed.ready.set_result(None)
            if not feed.again and feed.drain(settled=read_number):
                feed.syncing = False
                feed.task = None
                return

    async def _listen_forever(self) -> None:
        """Keep one pub/sub connection subscribed to every feed's channel, reconnecting forever."""
        while True:
            link = self._link.pubsub()
            cause: BaseException | None = None
            try:
                self._unconfirmed = {feed.keys.channel: 1 for feed in self._feeds.values()}
                await link.open(list(self._unconfirmed))
                for channel in [c for c in self._unconfirmed if c not in self._by_channel]:
                    await link.unsubscribe(channel)  # its last sink left while connecting
                self._pubsub = link
                self._connected.set()
                for feed in list(self._feeds.values()):
                    self._start_catch_up(feed)
                await self._pump(link)
            except BrokerUnavailable as exc:
                cause = exc.__cause__ or exc
            except Exception:
                _LOG.exception("redis listener failed")
            finally:
                self._pubsub = None
                self._connected.clear()
                for feed in self._feeds.values():
                    feed.listening.clear()
                await link.close()
            self._failures += 1
            delay = self._backoff(self._failures)
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
        if message.kind == "subscribe":
            # Only the last SUBSCRIBE sent for a channel speaks for the feed now using it.
            left = self._unconfirmed.pop(message.channel, 0) - 1
            if left > 0:
                self._unconfirmed[message.channel] = left
            elif (feed := self._by_channel.get(message.channel)) is not None:
                feed.listening.set()
            return
        if message.kind != "message":
            return
        feed = self._by_channel.get(message.channel)
        if feed is None:
            return
        try:
            decoded = decode_channel_message(feed.tenant_id, message.data)
        except ValueError as exc:
            # Dropping an event leaves a gap that the next one reveals and history fills.
            _LOG.warning("ignoring an unreadable message on a tenant channel: %s", exc)
            return
        if isinstance(decoded, DisconnectRequest):
            feed.disconnect(decoded)
        elif feed.syncing:
            feed.hold(decoded)
        elif not feed.advance(decoded):
            feed.hold(decoded)
            self._start_catch_up(feed)

    def _backoff(self, failures: int) -> float:
        low, high = self._backoff_range
        ceiling = min(high, low * 2.0 ** min(failures - 1, 32))
        return ceiling * self._random.uniform(0.5, 1.0)


def _malformed(what: str, reply: Any) -> BrokerUnavailable:
    _LOG.error("unexpected redis %s reply: %.200r", what, reply)
    return BrokerUnavailable(_UNAVAILABLE)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        _LOG.error("redis broker task %s failed", task.get_name(), exc_info=exc)
