"""What a soak run checks, without I/O: each subscription got every event once and in order.

A `Window` is one subscriber's uninterrupted view of one stream (a tenant's events of one
project): it starts at the position its `Subscribe` was acknowledged at (exclusive) and
ends at a fence — the moment the client sent a `Ping` whose `Pong` came back, or the
moment the connection was lost. A resume with `recovered=true` continues the window on the
new connection. The `Ledger` holds every published event's seq and when its publish was
answered; from both, `Ledger.evaluate` counts the events a window should have received and
didn't.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Stream = tuple[str, str]
"""(tenant id, project id)."""

_RECENT: int = 32
_TAIL_SCAN_SECS: float = 10.0


@dataclass(slots=True)
class Window:
    """What one subscriber received of one stream between its subscribe and its fence.

    `start_seq` is exclusive. Events are counted only while the window is open; an event of
    another project (`foreign`), a seq at or below one already received (`duplicates` when
    it is among the last 32 received, else `out_of_order`), a seq at or below the start
    (`stale`) or another epoch than the window's (`epoch_changes`) is counted and ignored.
    """

    stream: Stream
    epoch: str
    start_seq: int
    last_seq: int = -1
    received: int = 0
    foreign: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    stale: int = 0
    epoch_changes: int = 0
    end_at: float | None = None
    grace_secs: float = 0.0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=_RECENT))

    def __post_init__(self) -> None:
        if self.last_seq < self.start_seq:
            self.last_seq = self.start_seq

    @property
    def open(self) -> bool:
        """Not fenced yet."""
        return self.end_at is None

    def receive(self, epoch: str, seq: int, own_project: bool) -> None:
        """Count one event the subscriber got."""
        if not own_project:
            self.foreign += 1
            return
        if epoch != self.epoch:
            if self.epoch:
                self.epoch_changes += 1
                return
            self.epoch = epoch
        if seq <= self.last_seq:
            if seq <= self.start_seq:
                self.stale += 1
            elif seq in self.recent:
                self.duplicates += 1
            else:
                self.out_of_order += 1
            return
        self.last_seq = seq
        self.received += 1
        self.recent.append(seq)

    def as_row(self) -> list[Any]:
        """The window as JSON-ready data (what `from_row` reads), without its recent seqs."""
        return [getattr(self, name) for name in _ROW]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Window:
        """A window from `as_row`'s data (from another process)."""
        values = dict(zip(_ROW, row, strict=True))
        values["stream"] = tuple(values["stream"])
        return cls(**values)

    def end(self, at: float, grace_secs: float) -> None:
        """Fence the window at monotonic time `at`.

        Every event whose publish was answered more than `grace_secs` before `at` must
        have been received: 0 when delivery finishes before the publish is answered (the
        memory broker) and the fence is a Ping answered after it; more when delivery can
        trail the answer (Redis pub/sub) or the fence is a lost connection.
        """
        if self.end_at is None:
            self.end_at = at
            self.grace_secs = grace_secs


_ROW: tuple[str, ...] = tuple(name for name in Window.__dataclass_fields__ if name != "recent")


@dataclass(frozen=True, slots=True)
class Loss:
    """The windows' verdict, summed."""

    windows: int
    expected: int
    received: int
    lost: int
    lost_windows: int
    unaccounted: int
    foreign: int
    duplicates: int
    out_of_order: int
    stale: int
    epoch_changes: int


class Ledger:
    """Every accepted publish: its stream, seq and when its answer arrived (monotonic)."""

    def __init__(self) -> None:
        self._published: dict[Stream, list[tuple[int, float]]] = {}
        self.count = 0

    def published(self, stream: Stream, seq: int, answered_at: float) -> None:
        """Record one publish answered 200 with position `seq`."""
        self._published.setdefault(stream, []).append((seq, answered_at))
        self.count += 1

    def evaluate(self, windows: Iterable[Window]) -> Loss:
        """Count, over every fenced window, the events it should have had and didn't.

        A window should have every published event of its stream with a seq after its
        start and up to the last seq it received (a gap is a loss wherever it falls), and
        every later one whose publish was answered `grace_secs` before its end (a tail
        loss). Received events with no publish on record are `unaccounted`: a publish that
        failed on the client side but was numbered by the server, or a miscount.
        """
        sorted_streams = {
            stream: (
                [seq for seq, _ in entries],
                [answered for _, answered in entries],
            )
            for stream, entries in ((s, sorted(e)) for s, e in self._published.items())
        }
        empty: tuple[list[int], list[float]] = ([], [])
        totals = dict.fromkeys(
            ("windows", "expected", "received", "lost", "lost_windows", "unaccounted"), 0
        )
        counts = dict.fromkeys(
            ("foreign", "duplicates", "out_of_order", "stale", "epoch_changes"), 0
        )
        for window in windows:
            if window.end_at is None:
                raise ValueError(f"window of {window.stream} was never fenced")
            seqs, answered = sorted_streams.get(window.stream, empty)
            first = bisect.bisect_right(seqs, window.start_seq)
            upto = bisect.bisect_right(seqs, window.last_seq)
            in_range = upto - first
            tail = _tail(seqs, answered, upto, window.end_at - window.grace_secs)
            lost = max(0, in_range - window.received) + tail
            totals["windows"] += 1
            totals["expected"] += in_range + tail
            totals["received"] += window.received
            totals["lost"] += lost
            totals["lost_windows"] += lost > 0
            totals["unaccounted"] += max(0, window.received - in_range)
            for name in counts:
                counts[name] += getattr(window, name)
        return Loss(**totals, **counts)


def _tail(seqs: Sequence[int], answered: Sequence[float], start: int, due: float) -> int:
    # Answers arrive roughly in seq order (16 publishes in flight): once they are more than
    # _TAIL_SCAN_SECS past the due time, later seqs can't have been answered before it.
    missing = 0
    for index in range(start, len(seqs)):
        at = answered[index]
        if at <= due:
            missing += 1
        elif at > due + _TAIL_SCAN_SECS:
            break
    return missing


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value per hour; None for < 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600
