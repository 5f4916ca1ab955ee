"""The delivery invariant of SPEC §2, checked over what a publisher and subscribers recorded.

Everything here is plain data and one pure function, `delivery_violations`,
so the rule every chaos test asserts is written once and can be tested
without a socket (`test_invariants.py`).

The rule, per subscriber, over its journal (what it saw, in order, across
all of its connections):

- Within an epoch, events come in seq order without a hole: each is the seq
  after the last one seen. A hole (or a change of epoch) is excused only by a
  resume answered `recovered=false`: it excuses the events up to the position
  that Ack gave, and the rest of the epoch the client was in when the Ack
  named another one. Error BROADCAST_LAGGED and close 4011 are how a client
  learns to resume; the Ack of that resume says whether anything was lost.
  (Events at or before that Ack's position may still follow it: live events
  that arrived during the history read. They are not duplicates on the wire;
  `summary` counts them.)
- Nothing twice: no event id and no (epoch, seq) delivered twice to one
  subscriber, no return to an epoch already left.
- Every publish answered 200 reaches every subscriber at the position the
  publisher was told, unless that position was excused (above) or comes
  before the subscriber's first Ack.
- A publish answered with an error (or whose connection was refused) is never
  delivered; one whose answer never came (timeout, connection lost) may be.
- Every publish answered 200 in the final epoch is still in its history
  (replayable), at its position, and every subscriber agrees with that
  history on which event sits at which position.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class Position(NamedTuple):
    """A stream position: the epoch and the seq within it."""

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch[:8]}:{self.seq}"


class PublishStatus(enum.Enum):
    """What a publish attempt is known to have done."""

    STORED = "stored"
    """Answered 200 with a position: it must be delivered or excused."""
    FAILED = "failed"
    """Answered with an error status, or the connection was refused: never delivered."""
    UNKNOWN = "unknown"
    """No answer (timeout, connection lost mid-request): may or may not be delivered."""


@dataclass(frozen=True)
class PublishAttempt:
    """One publish, identified by the event id the publisher chose for it."""

    event_id: str
    status: PublishStatus
    position: Position | None = None
    detail: str = ""


@dataclass(frozen=True)
class Connected:
    """A connection was upgraded; `welcome` is the stream position its Welcome gave."""

    url: str
    welcome: Position | None


@dataclass(frozen=True)
class Acked:
    """The Ack of a Subscribe; `resume_from` is None for the first, plain subscribe."""

    resume_from: Position | None
    recovered: bool
    replayed: int
    position: Position | None


@dataclass(frozen=True)
class Delivered:
    """An Event."""

    event_id: str
    position: Position


@dataclass(frozen=True)
class ErrorReceived:
    """An Error message (e.g. BROADCAST_LAGGED)."""

    code: str


@dataclass(frozen=True)
class ClosingReceived:
    """A Closing message, sent just before a server-initiated close."""

    code: str
    reconnect_after_ms: int


@dataclass(frozen=True)
class Closed:
    """The connection ended; 1006 when no close frame came (abnormal closure)."""

    code: int


@dataclass(frozen=True)
class Refused:
    """A connection attempt that failed (refused, HTTP 503, timeout...)."""

    url: str
    detail: str


Entry = Connected | Acked | Delivered | ErrorReceived | ClosingReceived | Closed | Refused


@dataclass(frozen=True)
class Observation:
    """Everything one chaos run recorded: the input of `delivery_violations`.

    `history` is the final epoch's history read from its start (a resume from
    seq 0), `final` the stream's position at the end.
    """

    publishes: Sequence[PublishAttempt]
    journals: Mapping[str, Sequence[Entry]]
    history: Sequence[Delivered]
    final: Position
    history_complete: bool = True


@dataclass
class _Excuses:
    """The holes a subscriber was told about: per epoch, the seqs it may miss."""

    through: dict[str, int] = field(default_factory=dict)
    """Epoch → every seq up to this one may be missing (before the first Ack, or before
    a recovered=false Ack's position)."""
    tails: dict[str, int] = field(default_factory=dict)
    """Epoch → every seq after this one may be missing (the client was in that epoch
    when a recovered=false Ack named another)."""

    def excuse_through(self, position: Position) -> None:
        self.through[position.epoch] = max(self.through.get(position.epoch, 0), position.seq)

    def excuses(self, position: Position) -> bool:
        epoch, seq = position
        if seq <= self.through.get(epoch, 0):
            return True
        return epoch in self.tails and seq > self.tails[epoch]


@dataclass
class _Walk:
    """One subscriber's journal, replayed: what it holds and what it was excused."""

    name: str
    violations: list[str] = field(default_factory=list)
    delivered: dict[str, Position] = field(default_factory=dict)
    at: dict[Position, str] = field(default_factory=dict)
    excuses: _Excuses = field(default_factory=_Excuses)
    cursor: Position | None = None
    left: set[str] = field(default_factory=set)
    not_recovered_at: Position | None = None
    stale: int = 0
    """Events at or before the position of the last recovered=false Ack that came after it."""

    def fail(self, message: str) -> None:
        self.violations.append(f"{self.name}: {message}")

    def ack(self, ack: Acked) -> None:
        if ack.resume_from is None:
            if ack.position is None:
                self.fail("the first Ack carried no position")
                return
            if self.cursor is None:
                self.cursor = ack.position
                self.excuses.excuse_through(ack.position)
            return
        if ack.recovered or ack.position is None:
            return
        self.not_recovered_at = ack.position
        self.excuses.excuse_through(ack.position)
        cursor = self.cursor
        if cursor is not None and cursor.epoch != ack.position.epoch:
            self.excuses.tails.setdefault(cursor.epoch, cursor.seq)

    def event(self, event: Delivered) -> None:
        position, cursor = event.position, self.cursor
        if event.event_id in self.delivered:
            self.fail(
                f"duplicate event id {event.event_id} at {position} "
                f"(first at {self.delivered[event.event_id]})"
            )
            return
        if position in self.at:
            self.fail(f"two events at {position}: {self.at[position]} and {event.event_id}")
            return
        self.delivered[event.event_id] = position
        self.at[position] = event.event_id
        told = self.not_recovered_at
        if told is not None and told.epoch == position.epoch and position.seq <= told.seq:
            self.stale += 1
        if cursor is None:
            self.fail(f"event {position} before the first Ack")
        elif position.epoch == cursor.epoch:
            if position.seq <= cursor.seq:
                self.fail(f"out of order: {position} after {cursor}")
                return
            missing = Position(position.epoch, position.seq - 1)
            if position.seq > cursor.seq + 1 and not self.excuses.excuses(missing):
                self.fail(
                    f"silent gap: {position} after {cursor} (seqs {cursor.seq + 1}.."
                    f"{position.seq - 1} missing, no recovered=false covered them)"
                )
        elif position.epoch in self.left:
            self.fail(f"back to a left epoch: {position} after {cursor}")
        else:
            head_excused = position.seq == 1 or self.excuses.excuses(
                Position(position.epoch, position.seq - 1)
            )
            tail_excused = cursor.epoch in self.excuses.tails
            if not (head_excused and tail_excused):
                self.fail(f"epoch changed without a recovered=false: {position} after {cursor}")
            self.left.add(cursor.epoch)
        self.cursor = position


def _walk(name: str, journal: Sequence[Entry], *, lossless: bool) -> _Walk:
    walk = _Walk(name)
    for entry in journal:
        match entry:
            case Acked():
                if lossless and entry.resume_from is not None and not entry.recovered:
                    walk.fail(
                        f"resume from {entry.resume_from} answered recovered=false "
                        f"(position {entry.position}) though nothing was lost"
                    )
                walk.ack(entry)
            case Delivered():
                walk.event(entry)
    return walk


class _Origins:
    """Delivered events matched with the publishes that asked for them, mismatches grouped."""

    def __init__(self, publishes: Sequence[PublishAttempt]) -> None:
        self._by_id = {attempt.event_id: attempt for attempt in publishes}
        self._found: dict[tuple[str, str], list[str]] = {}

    def check(self, who: str, event: Delivered) -> None:
        attempt = self._by_id.get(event.event_id)
        if attempt is None:
            problem = "events nobody published"
        elif attempt.status is PublishStatus.FAILED:
            problem = f"events delivered though their publish failed ({attempt.detail})"
        elif attempt.status is PublishStatus.STORED and attempt.position != event.position:
            problem = (
                f"events delivered elsewhere than their publish was answered ({attempt.position})"
            )
        else:
            return
        self._found.setdefault((who, problem), []).append(f"{event.event_id} at {event.position}")

    def violations(self) -> list[str]:
        return [
            f"{who}: {len(found)} {problem}: {', '.join(found[:5])}{' ...' * (len(found) > 5)}"
            for (who, problem), found in self._found.items()
        ]


def delivery_violations(observation: Observation, *, lossless: bool = False) -> list[str]:
    """Every way the run broke the invariant of this module's docstring; empty when it held.

    With `lossless`, the fault lost nothing the broker could not recover (Redis
    kept its data): every resume must answer `recovered=true`, so nothing is
    excused after the first Ack.
    """
    violations: list[str] = []
    origins = _Origins(observation.publishes)
    stored = [a for a in observation.publishes if a.status is PublishStatus.STORED]
    history = {event.position: event.event_id for event in observation.history}
    final_epoch = observation.final.epoch

    where: dict[Position, str] = {}
    for attempt in stored:
        assert attempt.position is not None
        if attempt.position in where:
            violations.append(
                f"publisher: {attempt.event_id} and {where[attempt.position]} were both "
                f"answered position {attempt.position}"
            )
        where[attempt.position] = attempt.event_id
    if not observation.history_complete:
        violations.append(f"history of epoch {final_epoch[:8]} does not reach back to seq 1")
    for attempt in stored:
        assert attempt.position is not None
        if attempt.position.epoch == final_epoch and attempt.position not in history:
            violations.append(
                f"publisher: {attempt.event_id} answered 200 at {attempt.position} "
                "is not in the final history (not replayable)"
            )
    for event in observation.history:
        origins.check("history", event)

    for name, journal in observation.journals.items():
        walk = _walk(name, journal, lossless=lossless)
        violations.extend(walk.violations)
        for event_id, position in walk.delivered.items():
            origins.check(name, Delivered(event_id, position))
            if position.epoch == final_epoch and history.get(position, event_id) != event_id:
                violations.append(
                    f"{name}: got {event_id} at {position}, history has {history[position]}"
                )
        lost = [
            a
            for a in stored
            if a.event_id not in walk.delivered
            and a.position is not None
            and not walk.excuses.excuses(a.position)
        ]
        if lost:
            shown = ", ".join(
                f"{a.position}{'' if a.position in history else ' (not in history)'}"
                for a in lost[:10]
            )
            violations.append(
                f"{name}: {len(lost)} publishes answered 200 never delivered and never "
                f"excused: {shown}{' ...' if len(lost) > 10 else ''}"
            )
    return violations + origins.violations()


def summary(observation: Observation) -> str:
    """A few lines on what happened: publish outcomes, and per subscriber what it saw."""
    outcomes = Counter(a.status.value for a in observation.publishes)
    details = Counter(
        a.detail for a in observation.publishes if a.status is not PublishStatus.STORED
    )
    delivered_ids = {
        e.event_id for j in observation.journals.values() for e in j if isinstance(e, Delivered)
    } | {e.event_id for e in observation.history}
    late = Counter(
        a.status.value
        for a in observation.publishes
        if a.status is not PublishStatus.STORED and a.event_id in delivered_ids
    )
    lines = [
        f"final position {observation.final}; publishes {dict(outcomes)}; "
        f"failures {dict(details)}; delivered though not answered 200: {dict(late)}"
    ]
    for name, journal in observation.journals.items():
        kinds = Counter(type(e).__name__ for e in journal)
        closes = [e.code for e in journal if isinstance(e, Closed)]
        errors = [e.code for e in journal if isinstance(e, ErrorReceived)]
        acks = [
            f"{'recovered' if e.recovered else 'NOT recovered'}/{e.replayed}"
            for e in journal
            if isinstance(e, Acked) and e.resume_from is not None
        ]
        hosts = [
            e.url.rsplit(":", 1)[-1].split("/")[0] for e in journal if isinstance(e, Connected)
        ]
        stale = _walk(name, journal, lossless=False).stale
        lines.append(
            f"  {name}: {kinds['Delivered']} events, ports {hosts}, closes {closes}, "
            f"errors {errors}, resumes {acks}, refused {kinds['Refused']}, "
            f"events at or before a recovered=false Ack's position {stale}"
        )
    return "\n".join(lines)
