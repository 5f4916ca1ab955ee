"""What the application reads: events, the not-recovered signal, and the cursor that orders them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pm_proto as pb


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a tenant's event stream (SPEC §2 `StreamPosition`).

    `seq` counts the tenant's events from 1 within one `epoch`; positions of
    different epochs are not comparable (a new epoch restarts numbering, e.g.
    after an in-memory broker restarted).
    """

    epoch: str
    seq: int

    @classmethod
    def from_proto(cls, message: pb.StreamPosition) -> Position:
        """The position carried by a wire `StreamPosition`."""
        return cls(message.epoch, message.seq)

    def to_proto(self) -> pb.StreamPosition:
        """This position as a wire `StreamPosition`."""
        return pb.StreamPosition(epoch=self.epoch, seq=self.seq)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where an event belongs: always a project, optionally a sprint and a work item ("" = none)."""

    project_id: str
    sprint_id: str = ""
    work_item_id: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the tenant's stream, as the server delivered it."""

    event_id: str
    type: str
    scope: Scope
    position: Position
    occurred_at_ms: int
    actor_user_id: str
    payload: bytes = field(repr=False)

    @classmethod
    def from_proto(cls, message: pb.Event) -> Event:
        """The event carried by a wire `Event`."""
        return cls(
            event_id=message.event_id,
            type=message.type,
            scope=Scope(
                message.scope.project_id, message.scope.sprint_id, message.scope.work_item_id
            ),
            position=Position.from_proto(message.position),
            occurred_at_ms=message.occurred_at_ms,
            actor_user_id=message.actor_user_id,
            payload=message.payload,
        )


@dataclass(frozen=True, slots=True)
class NotRecovered:
    """Events may have been missed here: refetch the state you derive from them.

    Yielded when a resume could not replay everything after `last_position`
    (the server restarted with an empty history, or history no longer reaches
    back), or when the stream's epoch changed under a live connection. The
    events that follow it are delivered as usual; the ones between
    `last_position` and `position` may be missing (a partial replay of what
    history still holds may follow).

    Attributes:
        last_position: The position of the last event (or acknowledgement) the
            client had seen; None if it had seen none.
        position: The stream's position when the server answered.
    """

    last_position: Position | None
    position: Position


StreamItem = Event | NotRecovered
"""What `PmClient.events()` yields."""


class StreamCursor:
    """The client's place in the stream: drops duplicates and turns losses into `NotRecovered`.

    Feed it, in the order they arrive, every `Event` and every `Ack` of a
    `Subscribe`; it answers with what the application should see. Within one
    epoch an event at or before the cursor is a duplicate and is dropped, so
    the output is strictly increasing however the input repeats itself. No
    socket, no clock: one per client, surviving its reconnections.
    """

    def __init__(self) -> None:
        self._position: Position | None = None
        self._replay_left = 0
        self._replay_end: Position | None = None

    @property
    def position(self) -> Position | None:
        """Where a resume should start: the last event delivered, or a later acknowledged one."""
        return self._position

    def acknowledged(self, position: Position | None) -> list[StreamItem]:
        """A `Subscribe` without `resume_from` was acknowledged at `position`.

        Every event up to `position` that matched the earlier subscriptions came
        before this `Ack` on the same connection, so the cursor moves there. An
        acknowledged position of another epoch means the stream restarted under
        us: that is a `NotRecovered`.
        """
        if position is None:
            return []
        current = self._position
        self._position = self._later(current, position)
        if current is not None and current.epoch != position.epoch:
            return [NotRecovered(current, position)]
        return []

    def resumed(
        self, resumed_from: Position, *, recovered: bool, position: Position | None, replayed: int
    ) -> list[StreamItem]:
        """A `Subscribe` with `resume_from=resumed_from` was acknowledged.

        The next `replayed` events are the replay; once they have been observed
        the cursor moves to the acknowledged `position`. When not `recovered`,
        the answer is a `NotRecovered`, and the cursor forgets the old position
        so that the replay and live events of the new stream pass.
        """
        items: list[StreamItem] = []
        if not recovered:
            reported = position if position is not None else resumed_from
            items.append(NotRecovered(resumed_from, reported))
            self._position = None
        self._replay_left = replayed
        self._replay_end = position
        if replayed == 0:
            self._end_replay()
        return items

    def observe(self, event: Event) -> list[StreamItem]:
        """An event arrived: returns `[event]`, `[]` for a duplicate, or `[NotRecovered, event]`."""
        current = self._position
        position = event.position
        items: list[StreamItem]
        if current is None:
            items = [event]
        elif current.epoch != position.epoch:
            items = [NotRecovered(current, position), event]
        elif position.seq > current.seq:
            items = [event]
        else:
            items = []
        if items:
            self._position = position
        if self._replay_left > 0:
            self._replay_left -= 1
            if self._replay_left == 0:
                self._end_replay()
        return items

    def _end_replay(self) -> None:
        end, self._replay_end = self._replay_end, None
        if end is not None:
            self._position = self._later(self._position, end)

    @staticmethod
    def _later(current: Position | None, candidate: Position) -> Position:
        if current is None or current.epoch != candidate.epoch or candidate.seq > current.seq:
            return candidate
        return current
