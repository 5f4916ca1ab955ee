"""What the client is subscribed to, checked locally and cut into messages the server accepts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pm_proto as pb
from pm_proto.contract import MAX_ID_CHARS, MAX_IDS_PER_LIST, is_valid_id

from pm_client.stream import Position


def check_id(value: str, what: str) -> str:
    """`value` when it is a valid id: 1..128 characters, no control characters.

    The rule is `pm_proto.contract.is_valid_id`, the one the server applies.

    Raises:
        ValueError: Naming `what` and the rule broken.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not is_valid_id(value):
        raise ValueError(
            f"{what} must be 1 to {MAX_ID_CHARS} characters without control characters, "
            f"got {value!r}"
        )
    return value


def _ids(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a collection of ids, not one string")
    return tuple(dict.fromkeys(check_id(value, what) for value in values))


@dataclass(frozen=True, slots=True)
class SubscriptionIds:
    """Project, sprint and work-item ids, each list free of duplicates, in first-seen order."""

    projects: tuple[str, ...] = ()
    sprints: tuple[str, ...] = ()
    work_items: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        projects: Iterable[str] = (),
        sprints: Iterable[str] = (),
        work_items: Iterable[str] = (),
    ) -> SubscriptionIds:
        """Checked ids.

        Raises:
            ValueError: An id is empty, longer than 128 characters or has a control character.
            TypeError: A single string was passed where a collection of ids belongs.
        """
        return cls(
            _ids(projects, "project id"),
            _ids(sprints, "sprint id"),
            _ids(work_items, "work item id"),
        )

    def __bool__(self) -> bool:
        return bool(self.projects or self.sprints or self.work_items)

    def __len__(self) -> int:
        return len(self.projects) + len(self.sprints) + len(self.work_items)

    def subscribe_messages(self, resume_from: Position | None = None) -> list[pb.Subscribe]:
        """`Subscribe` messages covering every id, at most 100 per list each.

        `resume_from` goes on the last message only: the server replays what
        matches the subscriptions held when it reads history, so by then all of
        them must be in place.
        """
        messages = [
            pb.Subscribe(project_ids=p, sprint_ids=s, work_item_ids=w) for p, s, w in self._chunks()
        ]
        if resume_from is not None:
            messages[-1].resume_from.CopyFrom(resume_from.to_proto())
        return messages

    def unsubscribe_messages(self) -> list[pb.Unsubscribe]:
        """`Unsubscribe` messages covering every id, at most 100 per list each."""
        return [
            pb.Unsubscribe(project_ids=p, sprint_ids=s, work_item_ids=w)
            for p, s, w in self._chunks()
        ]

    def _chunks(self) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
        longest = max(len(self.projects), len(self.sprints), len(self.work_items))
        count = max(1, -(-longest // MAX_IDS_PER_LIST))
        step = MAX_IDS_PER_LIST
        return [
            (
                self.projects[i * step : (i + 1) * step],
                self.sprints[i * step : (i + 1) * step],
                self.work_items[i * step : (i + 1) * step],
            )
            for i in range(count)
        ]


class SubscriptionSet:
    """The ids the application wants, whatever the state of the connection.

    Re-sent in full after every reconnection. `version` grows with every
    change, so a caller can tell whether a (re)subscription it saw was made
    after its own change.
    """

    def __init__(self) -> None:
        self._projects: dict[str, None] = {}
        self._sprints: dict[str, None] = {}
        self._work_items: dict[str, None] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self._projects) + len(self._sprints) + len(self._work_items)

    def snapshot(self) -> SubscriptionIds:
        """Every id held, in the order they were added."""
        return SubscriptionIds(tuple(self._projects), tuple(self._sprints), tuple(self._work_items))

    def add(self, ids: SubscriptionIds) -> SubscriptionIds:
        """Hold `ids` too; returns those that were not held before."""
        added = SubscriptionIds(
            _add(self._projects, ids.projects),
            _add(self._sprints, ids.sprints),
            _add(self._work_items, ids.work_items),
        )
        self.version += 1
        return added

    def remove(self, ids: SubscriptionIds) -> SubscriptionIds:
        """Stop holding `ids`; returns those that were held."""
        removed = SubscriptionIds(
            _remove(self._projects, ids.projects),
            _remove(self._sprints, ids.sprints),
            _remove(self._work_items, ids.work_items),
        )
        self.version += 1
        return removed


def _add(held: dict[str, None], ids: tuple[str, ...]) -> tuple[str, ...]:
    new = tuple(i for i in ids if i not in held)
    held.update(dict.fromkeys(new))
    return new


def _remove(held: dict[str, None], ids: tuple[str, ...]) -> tuple[str, ...]:
    gone = tuple(i for i in ids if i in held)
    for i in gone:
        del held[i]
    return gone
