"""The broker interface: per-tenant ordered streams, history and live delivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pm_ws.events import ConnectionId, Event, EventDraft, StreamPosition, TenantId, UserId

DEFAULT_HISTORY_SIZE: Final = 1000
"""Events a broker keeps per tenant for resumes unless told otherwise."""

DEFAULT_HISTORY_TTL_SECS: Final = 300.0
"""How long a broker keeps an event (resumable, its `event_id` idempotent) unless told otherwise."""


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
    """What a broker delivers the live traffic of its listened tenants to: the broadcaster.

    A broker has exactly one sink (`Broker.attach`). Every method is called on
    the event loop and must return without awaiting (a broker never waits for
    its sink) and without raising: brokers call it unguarded, from inside
    `publish` (memory) or their pub/sub listener (Redis), so the sink keeps
    its own failures to itself.
    """

    def deliver(self, event: Event) -> None:
        """Take the next event of a listened tenant's stream.

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
    it, in every process listening to that tenant, to that process's sink.

    Which connections belong to which tenant is the broadcaster's business; a
    broker knows only its one sink and the set of tenants it listens to, which
    the broadcaster changes on a tenant's first arrival and last departure.
    """

    def attach(self, sink: BrokerSink) -> None:
        """Make `sink` the receiver of every listened tenant's traffic; once, before `listen`.

        Raises:
            RuntimeError: A sink is already attached.
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

    async def listen(self, tenant_id: TenantId) -> None:
        """Start delivering the tenant's live events and disconnect orders to the sink.

        Once this returns, every event of the tenant published afterwards
        reaches the sink. Listening to a tenant already listened to is a
        no-op.

        Raises:
            BrokerUnavailable: The process cannot start listening to the
                tenant (it is then not listened to); never for a tenant
                already listened to.
            RuntimeError: No sink is attached.
        """

    async def unlisten(self, tenant_id: TenantId) -> None:
        """Stop delivering the tenant's traffic to the sink; unknown tenants are ignored.

        Never raises: a broker that cannot tell its server stops sending
        (Redis down) drops what still arrives for the tenant.
        """

    async def publish_disconnect(self, request: DisconnectRequest) -> None:
        """Send an operator disconnect to every process listening to the tenant.

        Raises `BrokerUnavailable` when it could not be sent.
        """

    async def health(self) -> BrokerHealth:
        """Probe the broker. Never raises."""


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
