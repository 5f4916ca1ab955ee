"""The in-process broker behind `memory://`: per-tenant streams that die with the process."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

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
from pm_ws.events import Event, EventDraft, StreamPosition, TenantId
from pm_ws.exceptions import BrokerUnavailable


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
    with `clock`). `publish` of a listened tenant's event calls the sink's
    `deliver` before it returns, synchronously and in seq order.

    Memory grows with the number of tenants ever seen (one small record
    each) plus up to `history_size` events per tenant. Nothing is shared with
    other processes, nor with other instances: each is a deployment of its
    own, with one sink (one gateway). Use `RedisBroker` for more than one.
    """

    def __init__(
        self,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl_secs: float = DEFAULT_HISTORY_TTL_SECS,
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
        self._sink: BrokerSink | None = None
        self._listened: set[TenantId] = set()
        self._closed = False

    def attach(self, sink: BrokerSink) -> None:
        """Deliver the listened tenants' traffic to `sink` from now on.

        Raises:
            RuntimeError: A sink is already attached.
        """
        if self._sink is not None:
            raise RuntimeError("this broker already delivers to a sink")
        self._sink = sink

    async def start(self) -> None:
        """Nothing to connect; raises `BrokerUnavailable` only after `close`."""
        self._check_open()

    async def close(self) -> None:
        """Stop listening; later publishes, reads and listens raise `BrokerUnavailable`."""
        self._closed = True
        self._listened.clear()

    async def publish(self, draft: EventDraft) -> PublishResult:
        """Number the draft, keep it in history and, if its tenant is listened to, deliver it now.

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
        if self._sink is not None and draft.tenant_id in self._listened:
            self._sink.deliver(event)
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

    async def listen(self, tenant_id: TenantId) -> None:
        """Deliver the tenant's next events and disconnect orders to the sink; twice is a no-op.

        Raises:
            BrokerUnavailable: After `close`.
            RuntimeError: No sink is attached.
        """
        self._check_open()
        if self._sink is None:
            raise RuntimeError("attach a sink before listening")
        self._listened.add(tenant_id)

    async def unlisten(self, tenant_id: TenantId) -> None:
        """Stop delivering the tenant's traffic; unknown tenants are ignored."""
        self._listened.discard(tenant_id)

    async def publish_disconnect(self, request: DisconnectRequest) -> None:
        """Hand the order to the sink before returning, if the tenant is listened to.

        Raises:
            BrokerUnavailable: After `close`.
        """
        self._check_open()
        if self._sink is not None and request.tenant_id in self._listened:
            self._sink.disconnect(request)

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
