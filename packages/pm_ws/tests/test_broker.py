"""Answering a history read from the events a broker retains (`history_read`)."""

from __future__ import annotations

import pytest
from pm_ws.brokers.broker import history_read
from pm_ws.events import Event, StreamPosition

from packages.pm_ws.tests.conftest import draft


def numbered(epoch: str, *seqs: int) -> list[Event]:
    return [
        Event.from_draft(draft(f"e{seq}"), StreamPosition(epoch, seq), published_at_ns=0)
        for seq in seqs
    ]


@pytest.mark.parametrize(
    ("held", "after", "current", "expected_seqs", "complete"),
    [
        ((3, 4, 5), 2, 5, [3, 4, 5], True),
        ((3, 4, 5), 0, 5, [3, 4, 5], False),
        ((3, 5), 2, 5, [5], False),
        ((3, 4), 2, 5, [3, 4], False),
        ((), 5, 5, [], True),
        ((), 0, 0, [], True),
        ((1, 2), 4, 2, [], False),
    ],
)
def test_history_read_is_complete_only_for_the_whole_run_after_the_position(
    held: tuple[int, ...], after: int, current: int, expected_seqs: list[int], complete: bool
) -> None:
    read = history_read(
        numbered("e", *held), StreamPosition("e", after), StreamPosition("e", current)
    )

    assert [e.position.seq for e in read.events] == expected_seqs
    assert read.complete is complete
    assert read.position == StreamPosition("e", current)
