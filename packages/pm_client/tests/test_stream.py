from collections.abc import Sequence

import pm_proto as pb
from hypothesis import given
from hypothesis import strategies as st
from pm_client import Event, NotRecovered, Position, Scope, StreamCursor, StreamItem


def event(seq: int, epoch: str = "A") -> Event:
    return Event(
        event_id=f"{epoch}{seq}",
        type="card.moved",
        scope=Scope("p1"),
        position=Position(epoch, seq),
        occurred_at_ms=0,
        actor_user_id="u0",
        payload=b"{}",
    )


def seqs(items: Sequence[StreamItem]) -> list[int]:
    return [item.position.seq for item in items if isinstance(item, Event)]


def test_events_pass_in_order_and_move_the_cursor() -> None:
    cursor = StreamCursor()
    assert cursor.position is None
    out = [item for seq in (1, 2, 5) for item in cursor.observe(event(seq))]
    assert seqs(out) == [1, 2, 5]
    assert cursor.position == Position("A", 5)


@given(st.lists(st.integers(1, 50), max_size=60))
def test_whatever_repeats_the_output_is_strictly_increasing_new_events_only(
    arrivals: list[int],
) -> None:
    cursor = StreamCursor()
    out = [item for seq in arrivals for item in cursor.observe(event(seq))]
    expected: list[int] = []
    for seq in arrivals:
        if not expected or seq > expected[-1]:
            expected.append(seq)
    assert seqs(out) == expected


def test_an_acknowledged_subscription_moves_the_cursor_forward_only() -> None:
    cursor = StreamCursor()
    assert cursor.acknowledged(Position("A", 7)) == []
    assert cursor.position == Position("A", 7)
    assert cursor.acknowledged(Position("A", 3)) == []
    assert cursor.position == Position("A", 7)
    assert cursor.observe(event(6)) == []


def test_a_recovered_resume_replays_then_moves_to_the_acknowledged_position() -> None:
    cursor = StreamCursor()
    cursor.observe(event(3))
    assert (
        cursor.resumed(Position("A", 3), recovered=True, position=Position("A", 9), replayed=2)
        == []
    )
    replay = cursor.observe(event(5)) + cursor.observe(event(7))
    assert seqs(replay) == [5, 7]
    assert cursor.position == Position("A", 9)
    assert cursor.observe(event(9)) == []
    assert seqs(cursor.observe(event(10))) == [10]


def test_a_resume_with_nothing_to_replay_moves_at_once() -> None:
    cursor = StreamCursor()
    cursor.observe(event(3))
    cursor.resumed(Position("A", 3), recovered=True, position=Position("A", 4), replayed=0)
    assert cursor.position == Position("A", 4)


def test_an_unrecovered_resume_says_so_before_the_new_streams_events() -> None:
    cursor = StreamCursor()
    cursor.observe(event(3))
    items = cursor.resumed(Position("A", 3), recovered=False, position=Position("B", 0), replayed=0)
    assert items == [NotRecovered(Position("A", 3), Position("B", 0))]
    assert seqs(cursor.observe(event(1, "B"))) == [1]
    assert cursor.position == Position("B", 1)


def test_an_unrecovered_partial_replay_still_delivers_what_history_holds() -> None:
    cursor = StreamCursor()
    cursor.observe(event(3))
    items = cursor.resumed(
        Position("A", 3), recovered=False, position=Position("A", 50), replayed=2
    )
    assert isinstance(items[0], NotRecovered)
    assert seqs(cursor.observe(event(40)) + cursor.observe(event(45))) == [40, 45]
    assert cursor.position == Position("A", 50)


def test_an_epoch_change_under_a_live_connection_is_not_silent() -> None:
    cursor = StreamCursor()
    cursor.observe(event(3))
    items = cursor.observe(event(1, "B"))
    assert items[0] == NotRecovered(Position("A", 3), Position("B", 1))
    assert items[1] == event(1, "B")


def test_an_acknowledged_position_of_another_epoch_is_not_silent() -> None:
    cursor = StreamCursor()
    cursor.observe(event(3))
    assert cursor.acknowledged(Position("B", 0)) == [
        NotRecovered(Position("A", 3), Position("B", 0))
    ]


def test_events_convert_from_the_wire() -> None:
    wire = pb.Event(
        event_id="e1",
        type="card.moved",
        scope=pb.Scope(project_id="p", sprint_id="s", work_item_id="w"),
        position=pb.StreamPosition(epoch="A", seq=4),
        occurred_at_ms=12,
        actor_user_id="u",
        payload=b"x",
    )
    converted = Event.from_proto(wire)
    assert converted.scope == Scope("p", "s", "w")
    assert converted.position.to_proto() == wire.position
    assert converted.payload == b"x"
