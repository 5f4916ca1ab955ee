"""Events, their place in a tenant's stream, and the ids that name them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

TenantId = NewType("TenantId", str)
UserId = NewType("UserId", str)
ConnectionId = NewType("ConnectionId", str)


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A point in one tenant's stream.

    `seq` numbers events from 1 with no gaps; 0 is the position of an empty
    stream. `epoch` changes whenever the numbering restarts (a memory broker
    restarting, a Redis stream lost), so positions of different epochs are not
    comparable and a resume across epochs can never be reported as recovered.
    """

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Scope:
    """Where an event belongs: always a project, optionally a sprint and a work item.

    Empty strings mean "none". Ids are opaque and unique only within a tenant.
    """

    project_id: str
    sprint_id: str = ""
    work_item_id: str = ""


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event as a publisher hands it over, before the broker numbers it.

    The caller fills `event_id` (a UUID when the publisher gave none) and
    `occurred_at_ms`; the broker only adds the stream position.
    """

    tenant_id: TenantId
    event_id: str
    type: str
    scope: Scope
    payload: bytes
    actor_user_id: str
    occurred_at_ms: int


@dataclass(frozen=True, slots=True)
class Event:
    """An event numbered in its tenant's stream, as history holds it and fanout delivers it.

    `published_at_ns` is the wall-clock time (`time.time_ns()`) at which the
    broker accepted it; it feeds the publish-to-delivery latency histogram and is
    never sent to clients.

    `encoded` is the event's serialised `pm.v1.Event` (position included) when
    the broker already holds those bytes (Redis stores and sends them), else
    empty. Fanout and replays frame these bytes as they are instead of
    encoding the fields again, so they must be the encoding of this event; a
    broker building an Event from them guarantees it. It takes no part in
    equality and is left out of `repr`.
    """

    tenant_id: TenantId
    event_id: str
    type: str
    scope: Scope
    payload: bytes
    actor_user_id: str
    occurred_at_ms: int
    position: StreamPosition
    published_at_ns: int
    encoded: bytes = field(default=b"", compare=False, repr=False)

    @classmethod
    def from_draft(cls, draft: EventDraft, position: StreamPosition, published_at_ns: int) -> Event:
        """Number a draft."""
        return cls(
            tenant_id=draft.tenant_id,
            event_id=draft.event_id,
            type=draft.type,
            scope=draft.scope,
            payload=draft.payload,
            actor_user_id=draft.actor_user_id,
            occurred_at_ms=draft.occurred_at_ms,
            position=position,
            published_at_ns=published_at_ns,
        )
