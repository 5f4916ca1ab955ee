"""The in-process broker behind `memory://`: per-tenant streams that die with the process."""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pm_ws.brokers.broker import (
    BrokerHealth,
    BrokerSink,
    DisconnectRequest,
    HistoryRead,
    PublishResult,
)
from pm_ws.events import Event, EventDraft, StreamPosition, TenantId
from pm_ws.exceptions import BrokerUnavailable

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Stored:
    event: Event
    stored_at: float


@dataclass(slots=True)
class _Stream:
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    history: deque[_Stored] = field(default_factory=deque)
    by_event_id: dict[str, _Stored] = field(default_factory=dict)
    # Keyed by id(): sinks need not be hashable, and identity is what "the same sink" means.
    sinks: dict[int, BrokerSink] = field(default_factory=dict)

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.epoch, self.seq)

    def forget(self, stored: _Stored) -> None:
        # A republished event id may point at a newer entry: only drop our own mapping.
        if self.by_event_id.get(stored.event.event_id) is stored:
            del self.by_event_id[stored.event.event_id]


class MemoryBroker:
    """Per-tenant streams held in this process's memory.

    Each tenant's stream is created on first use with a random epoch, so a
    restarted process starts new epochs and resuming clients are told that
    they lost events. History keeps the last `history_size` events of each
    tenant and drops entries once they are `history_ttl_secs` old (measured
    with `clock`). `publish` calls `deliver` on every sink of the tenant
    before it returns, synchronously and in seq order; a sink that raises is
    logged and skipped, it cannot fail the publish or starve other sinks.

    Memory grows with the number of tenants ever seen (one small record
    each) plus up to `history_size` events per tenant. Nothing is shared with
    other processes: use `RedisBroker` for more than one.
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl_secs: float = 300,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Create an idle broker.

        Args:
            history_size: Events kept per tenant, at least 1.
            history_ttl_secs: Age at which an event leaves history and its
                `event_id` may be published again; greater than 0.
            clock: Monotonic seconds, for history ages.
            wall_clock_ns: Wall-clock nanoseconds, stamped on events as
                `published_at_ns`.

        Raises:
            ValueError: On a history size below 1 or a TTL not above 0.
        """
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        if history_ttl_secs <= 0:
            raise ValueError("history_ttl_secs must be positive")
        self._history_size = history_size
        self._history_ttl_secs = history_ttl_secs
        self._clock = clock
        self._wall_clock_ns = wall_clock_ns
        self._streams: dict[TenantId, _Stream] = {}
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect; raises `BrokerUnavailable` only after `close`."""
        self._check_open()

    async def close(self) -> None:
        """Drop every sink; later publishes, reads and subscribes raise `BrokerUnavailable`."""
        self._closed = True
        for stream in self._streams.values():
            stream.sinks.clear()

    async def publish(self, draft: EventDraft) -> PublishResult:
        """Number the draft, keep it in history and deliver it to the tenant's sinks now.

        A draft whose `event_id` is still in history is not stored or
        delivered again: the original position comes back with
        `duplicate=True`.

        Raises:
            BrokerUnavailable: After `close`.
        """
        self._check_open()
        stream = self._stream(draft.tenant_id)
        prior = stream.by_event_id.get(draft.event_id)
        if prior is not None:
            return PublishResult(prior.event.event_id, prior.event.position, duplicate=True)
        stream.seq += 1
        event = Event.from_draft(draft, stream.position, self._wall_clock_ns())
        if len(stream.history) >= self._history_size:
            stream.forget(stream.history.popleft())
        stored = _Stored(event, self._clock())
        stream.history.append(stored)
        stream.by_event_id[event.event_id] = stored
        for sink in list(stream.sinks.values()):
            try:
                sink.deliver(event)
            except Exception:
                _LOG.exception("broker sink failed to take event %s", event.position)
        return PublishResult(event.event_id, event.position, duplicate=False)

    async def read_after(self, tenant_id: TenantId, position: StreamPosition) -> HistoryRead:
        """Events after `position` still in history, oldest first.

        A position of another epoch, or ahead of the stream (a seq this
        epoch never reached), reads as no events and `complete=False`: the
        caller must start over from the returned current position.

        Raises:
            BrokerUnavailable: After `close`.
        """
        self._check_open()
        stream = self._stream(tenant_id)
        return history_read([s.event for s in stream.history], position, stream.position)

    async def position(self, tenant_id: TenantId) -> StreamPosition:
        """The tenant's current position; creates the stream (seq 0, new epoch) on first use.

        Raises:
            BrokerUnavailable: After `close`.
        """
        self._check_open()
        return self._stream(tenant_id).position

    async def subscribe(self, tenant_id: TenantId, sink: BrokerSink) -> None:
        """Deliver the tenant's next events and disconnect orders to `sink`; twice is a no-op.

        Raises:
            BrokerUnavailable: After `close`.
        """
        self._check_open()
        self._stream(tenant_id).sinks[id(sink)] = sink

    async def unsubscribe(self, tenant_id: TenantId, sink: BrokerSink) -> None:
        """Stop delivering to `sink`; unknown sinks and tenants are ignored."""
        stream = self._streams.get(tenant_id)
        if stream is not None:
            stream.sinks.pop(id(sink), None)

    async def publish_disconnect(self, request: DisconnectRequest) -> None:
        """Call `disconnect` on every sink of the request's tenant before returning.

        Raises:
            BrokerUnavailable: After `close`.
        """
        self._check_open()
        stream = self._streams.get(request.tenant_id)
        for sink in list(stream.sinks.values()) if stream is not None else ():
            try:
                sink.disconnect(request)
            except Exception:
                _LOG.exception("broker sink failed to take a disconnect order")

    async def health(self) -> BrokerHealth:
        """Healthy until closed; never raises."""
        if self._closed:
            return BrokerHealth(ok=False, latency_ms=0.0, detail="event broker closed")
        return BrokerHealth(ok=True, latency_ms=0.0)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("event broker unavailable")

    def _stream(self, tenant_id: TenantId) -> _Stream:
        stream = self._streams.get(tenant_id)
        if stream is None:
            stream = self._streams[tenant_id] = _Stream()
        # History is ordered by stored_at (a monotonic clock), so expired entries are a prefix.
        expired_before = self._clock() - self._history_ttl_secs
        while stream.history and stream.history[0].stored_at <= expired_before:
            stream.forget(stream.history.popleft())
        return stream


def history_read(
    history: Sequence[Event], position: StreamPosition, current: StreamPosition
) -> HistoryRead:
    """Answer a read after `position` from the history of a stream now at `current`.

    `history` holds the stream's retained events of `current.epoch`, oldest
    first. The result is complete only when it holds exactly the events
    `position.seq + 1 .. current.seq`; its events are then that run, else the
    retained events after the last hole (possibly none).
    """
    if position.epoch != current.epoch or not 0 <= position.seq <= current.seq:
        return HistoryRead(events=(), complete=False, position=current)
    events: list[Event] = []
    expected = position.seq + 1
    for event in history:
        seq = event.position.seq
        if seq <= position.seq:
            continue
        if seq != expected:
            events.clear()
        events.append(event)
        expected = seq + 1
    complete = expected == current.seq + 1 and (
        not events or events[0].position.seq == position.seq + 1
    )
    return HistoryRead(events=tuple(events), complete=complete, position=current)
