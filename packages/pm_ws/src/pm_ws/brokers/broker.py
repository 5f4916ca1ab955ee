"""The broker interface: per-tenant ordered streams, history and live delivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pm_ws.events import ConnectionId, Event, EventDraft, StreamPosition, TenantId, UserId


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a published event landed.

    `duplicate` is true when the stream already held the draft's `event_id`
    (within the history TTL): `event_id` and `position` are then the original
    ones and nothing was delivered again.
    """

    event_id: str
    position: StreamPosition
    duplicate: bool


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """The events after a position, as far as history reaches.

    `complete` is true only when `events` is every event after the asked
    position: same epoch, and history still reaches back to the event right
    after it. A position of another epoch, or ahead of the stream, reads as
    no events and `complete=False`. When incomplete, `events` holds what
    history still has after the last hole (possibly nothing). `position` is
    the stream's position when the read was made.
    """

    events: Sequence[Event]
    complete: bool
    position: StreamPosition


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    """One health probe of a broker: reachable or not, and how long the probe took."""

    ok: bool
    latency_ms: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DisconnectRequest:
    """An operator's order to close connections of a tenant on every process.

    `user_id` and `connection_id` narrow it down; both empty means every
    connection of the tenant.
    """

    tenant_id: TenantId
    user_id: UserId | None = None
    connection_id: ConnectionId | None = None


class BrokerSink(Protocol):
    """What a broker delivers a tenant's live traffic to (the broadcaster).

    Every method is called on the event loop and must return without awaiting:
    a broker never waits for its listeners.
    """

    def deliver(self, event: Event) -> None:
        """Take the next event of a tenant's stream.

        Events of one tenant arrive in strictly increasing `seq` order with no
        gap inside an epoch; a broker that cannot keep that promise calls
        `lagged` instead.
        """

    def lagged(self, tenant_id: TenantId) -> None:
        """Say that events of the tenant were lost for this process.

        A gap that history could not fill, or an epoch change: the tenant's
        connections must resume.
        """

    def disconnect(self, request: DisconnectRequest) -> None:
        """Carry out an operator disconnect published by any process."""


class Broker(Protocol):
    """Per-tenant event streams shared by every process that uses the same broker.

    Implementations: `MemoryBroker` (`memory://`, one process) and `RedisBroker`
    (`redis://`, many processes and hosts). Publishing numbers the event in its
    tenant's stream, appends it to a bounded history (size and TTL) and delivers
    it to every sink subscribed to that tenant, in any process.
    """

    async def start(self) -> None:
        """Connect; call once before anything else. Raises `BrokerUnavailable`."""

    async def close(self) -> None:
        """Stop listening and release connections. Idempotent."""

    async def publish(self, draft: EventDraft) -> PublishResult:
        """Append an event to its tenant's stream and deliver it.

        Raises `BrokerUnavailable` when the event could not be stored: a publish
        either lands or fails loudly, it never vanishes.
        """

    async def read_after(self, tenant_id: TenantId, position: StreamPosition) -> HistoryRead:
        """Events after `position` still in history, oldest first. Raises `BrokerUnavailable`."""

    async def position(self, tenant_id: TenantId) -> StreamPosition:
        """The position of the tenant's last event (seq 0 when it has none).

        A never-seen tenant's stream is created, so its epoch stays stable.
        Raises `BrokerUnavailable`.
        """

    async def subscribe(self, tenant_id: TenantId, sink: BrokerSink) -> None:
        """Start delivering the tenant's live events and disconnect orders to `sink`.

        Subscribing the same sink (by identity) twice is a no-op. The first
        subscriber of a tenant makes the process listen to it; once this
        returns, every event published afterwards reaches `sink`. Raises
        `BrokerUnavailable` when the process cannot start listening to the
        tenant (the sink is then not subscribed); never for a tenant already
        listened to.
        """

    async def unsubscribe(self, tenant_id: TenantId, sink: BrokerSink) -> None:
        """Stop delivering to `sink`; after the last sink leaves, stop listening to the tenant."""

    async def publish_disconnect(self, request: DisconnectRequest) -> None:
        """Send an operator disconnect to every process listening to the tenant.

        Raises `BrokerUnavailable` when it could not be sent.
        """

    async def health(self) -> BrokerHealth:
        """Probe the broker. Never raises."""
