"""The chaos tests' checker catches each way delivery can break, and accepts what SPEC allows."""

from __future__ import annotations

from collections.abc import Sequence

from tests.chaos.invariants import (
    Acked,
    Closed,
    Delivered,
    Entry,
    ErrorReceived,
    Observation,
    Position,
    PublishAttempt,
    PublishStatus,
    delivery_violations,
)

OLD, NEW = "old-epoch", "new-epoch"


def stored(epoch: str, *seqs: int) -> list[PublishAttempt]:
    return [PublishAttempt(f"{epoch}-{s}", PublishStatus.STORED, Position(epoch, s)) for s in seqs]


def events(epoch: str, *seqs: int) -> list[Entry]:
    return [Delivered(f"{epoch}-{s}", Position(epoch, s)) for s in seqs]


def subscribed(epoch: str = OLD, seq: int = 0) -> Acked:
    return Acked(None, recovered=False, replayed=0, position=Position(epoch, seq))


def resumed(from_: Position, recovered: bool, at: Position, replayed: int = 0) -> Acked:
    return Acked(from_, recovered=recovered, replayed=replayed, position=at)


def check(
    publishes: Sequence[PublishAttempt],
    journal: Sequence[Entry],
    *,
    history: Sequence[Delivered] | None = None,
    final: Position | None = None,
    lossless: bool = False,
) -> list[str]:
    last = final or max((a.position for a in publishes if a.position), default=Position(OLD, 0))
    if history is None:
        # The stream as Redis holds it: what was answered 200, and what else was delivered.
        held = {a.position: a.event_id for a in publishes if a.position is not None}
        held |= {e.position: e.event_id for e in journal if isinstance(e, Delivered)}
        history = [Delivered(held[p], p) for p in sorted(held) if p.epoch == last.epoch]
    observation = Observation(publishes, {"c": journal}, history, last)
    return delivery_violations(observation, lossless=lossless)


def test_every_event_in_order_holds() -> None:
    assert check(stored(OLD, 1, 2, 3), [subscribed(), *events(OLD, 1, 2, 3)]) == []


def test_a_seq_jump_nobody_explained_is_a_silent_gap() -> None:
    [problem, lost] = check(stored(OLD, 1, 2, 3), [subscribed(), *events(OLD, 1, 3)])

    assert "silent gap" in problem
    assert "1 publishes answered 200 never delivered" in lost


def test_a_gap_that_a_recovered_resume_did_not_fill_is_still_a_gap() -> None:
    journal: list[Entry] = [
        subscribed(),
        *events(OLD, 1),
        ErrorReceived("BROADCAST_LAGGED"),
        Closed(4011),
        resumed(Position(OLD, 1), True, Position(OLD, 3)),
        *events(OLD, 3),
    ]

    assert any("silent gap" in p for p in check(stored(OLD, 1, 2, 3), journal))


def test_a_gap_up_to_a_not_recovered_ack_is_excused_but_not_beyond_it() -> None:
    told = [
        subscribed(),
        *events(OLD, 1),
        Closed(4011),
        resumed(Position(OLD, 1), False, Position(OLD, 3)),
    ]

    assert check(stored(OLD, 1, 2, 3, 4), [*told, *events(OLD, 4)]) == []
    assert any(
        "silent gap" in p for p in check(stored(OLD, 1, 2, 3, 4, 5), [*told, *events(OLD, 5)])
    )


def test_a_new_epoch_after_a_not_recovered_resume_is_fine_and_without_one_is_not() -> None:
    publishes = stored(OLD, 1, 2) + stored(NEW, 1, 2, 3)
    before: list[Entry] = [subscribed(), *events(OLD, 1)]
    told = resumed(Position(OLD, 1), False, Position(NEW, 2))

    assert check(publishes, [*before, Closed(4011), told, *events(NEW, 3)]) == []
    assert any("epoch changed" in p for p in check(publishes, [*before, *events(NEW, 1, 2, 3)]))


def test_an_event_twice_is_a_duplicate_even_across_connections() -> None:
    journal: list[Entry] = [
        subscribed(),
        *events(OLD, 1, 2),
        Closed(1001),
        resumed(Position(OLD, 1), True, Position(OLD, 2), replayed=1),
        *events(OLD, 2),
    ]

    assert any("duplicate" in p for p in check(stored(OLD, 1, 2), journal))


def test_a_failed_publish_must_not_be_delivered_and_an_unanswered_one_may_be() -> None:
    failed = PublishAttempt(f"{OLD}-2", PublishStatus.FAILED, detail="HTTP 503")
    unknown = PublishAttempt(f"{OLD}-2", PublishStatus.UNKNOWN, detail="TimeoutError")
    journal = [subscribed(), *events(OLD, 1, 2, 3)]
    final = Position(OLD, 3)

    problems = check([*stored(OLD, 1, 3), failed], journal, final=final)
    assert any(
        "c: 1 events delivered though their publish failed (HTTP 503)" in p for p in problems
    )
    assert check([*stored(OLD, 1, 3), unknown], journal, final=final) == []


def test_an_event_delivered_elsewhere_than_its_publish_was_answered_is_caught() -> None:
    publishes = [PublishAttempt(f"{OLD}-1", PublishStatus.STORED, Position(OLD, 7))]

    journal = [subscribed(), *events(OLD, 1)]
    problems = check(publishes, journal, history=[], final=Position(OLD, 1))
    assert any("c: 1 events delivered elsewhere than" in p for p in problems)


def test_an_acknowledged_publish_missing_from_the_final_history_is_not_replayable() -> None:
    journal = [subscribed(), *events(OLD, 1, 2)]

    problems = check(stored(OLD, 1, 2), journal, history=[Delivered(f"{OLD}-1", Position(OLD, 1))])
    assert any("not in the final history" in p for p in problems)


def test_lossless_runs_accept_no_unrecovered_resume() -> None:
    journal: list[Entry] = [
        subscribed(),
        *events(OLD, 1),
        Closed(1001),
        resumed(Position(OLD, 1), False, Position(OLD, 1)),
    ]

    assert check(stored(OLD, 1), journal) == []
    [problem] = check(stored(OLD, 1), journal, lossless=True)
    assert "recovered=false" in problem
