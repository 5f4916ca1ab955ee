"""What each connection is subscribed to, and the per-tenant index that fanout reads."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Set
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

from pm_ws.client_messages import SubscriptionIds
from pm_ws.events import Scope

S = TypeVar("S")
_Kind = Literal["project_ids", "sprint_ids", "work_item_ids"]
_NONE: Final[frozenset[str]] = frozenset()


@dataclass(slots=True)
class SubscriptionSet:
    """The project, sprint and work-item ids one connection holds.

    The three kinds count together against the connection's limit. A kind
    holds a shared empty set until its first id arrives: most connections
    never use all three, and thousands of idle ones add up.
    """

    project_ids: Set[str] = _NONE
    sprint_ids: Set[str] = _NONE
    work_item_ids: Set[str] = _NONE

    def _mutable(self, kind: _Kind) -> set[str]:
        current: Set[str] = getattr(self, kind)
        if isinstance(current, set):
            return current
        fresh = set(current)
        setattr(self, kind, fresh)
        return fresh

    def __len__(self) -> int:
        return len(self.project_ids) + len(self.sprint_ids) + len(self.work_item_ids)

    def copy(self) -> SubscriptionSet:
        """An independent copy: what was held before a change."""
        return SubscriptionSet(set(self.project_ids), set(self.sprint_ids), set(self.work_item_ids))

    def count_new(self, ids: SubscriptionIds) -> int:
        """How many of `ids` this set doesn't hold yet: what adding them would cost."""
        return (
            sum(1 for i in ids.project_ids if i not in self.project_ids)
            + sum(1 for i in ids.sprint_ids if i not in self.sprint_ids)
            + sum(1 for i in ids.work_item_ids if i not in self.work_item_ids)
        )

    def matches(self, scope: Scope) -> bool:
        """Whether an event with this scope is for this connection (SPEC §2 delivery filter)."""
        return (
            scope.project_id in self.project_ids
            or (bool(scope.sprint_id) and scope.sprint_id in self.sprint_ids)
            or (bool(scope.work_item_id) and scope.work_item_id in self.work_item_ids)
        )


@dataclass(slots=True)
class TenantIndex(Generic[S]):
    """Subscribers of one tenant by project, sprint and work item.

    Fanout asks it for the recipients of one event: the cost is proportional to
    the number of interested subscribers, never to the size of the tenant.
    """

    by_project: dict[str, set[S]] = field(default_factory=dict)
    by_sprint: dict[str, set[S]] = field(default_factory=dict)
    by_work_item: dict[str, set[S]] = field(default_factory=dict)

    def add(self, subscriber: S, held: SubscriptionSet, ids: SubscriptionIds) -> None:
        """Subscribe `subscriber` to `ids`, recording them in its `held` set too."""
        _add(self.by_project, held, "project_ids", ids.project_ids, subscriber)
        _add(self.by_sprint, held, "sprint_ids", ids.sprint_ids, subscriber)
        _add(self.by_work_item, held, "work_item_ids", ids.work_item_ids, subscriber)

    def remove(self, subscriber: S, held: SubscriptionSet, ids: SubscriptionIds) -> None:
        """Unsubscribe `subscriber` from `ids`; ids it doesn't hold are ignored."""
        _remove(self.by_project, held, "project_ids", ids.project_ids, subscriber)
        _remove(self.by_sprint, held, "sprint_ids", ids.sprint_ids, subscriber)
        _remove(self.by_work_item, held, "work_item_ids", ids.work_item_ids, subscriber)

    def remove_all(self, subscriber: S, held: SubscriptionSet) -> None:
        """Drop every subscription of `subscriber` (it disconnected)."""
        self.remove(
            subscriber,
            held,
            SubscriptionIds(
                tuple(held.project_ids), tuple(held.sprint_ids), tuple(held.work_item_ids)
            ),
        )

    def recipients(self, scope: Scope) -> Collection[S]:
        """Every subscriber an event with `scope` goes to, each once.

        The returned collection may be one of the index's own sets: iterate it
        before changing the index.
        """
        by_project = self.by_project.get(scope.project_id)
        by_sprint = self.by_sprint.get(scope.sprint_id) if scope.sprint_id else None
        by_item = self.by_work_item.get(scope.work_item_id) if scope.work_item_id else None
        found = [s for s in (by_project, by_sprint, by_item) if s]
        if not found:
            return ()
        if len(found) == 1:
            return found[0]
        return set().union(*found)

    def __bool__(self) -> bool:
        return bool(self.by_project or self.by_sprint or self.by_work_item)


def _add(
    index: dict[str, set[S]], held: SubscriptionSet, kind: _Kind, ids: Iterable[str], subscriber: S
) -> None:
    keys = tuple(ids)
    if not keys:
        return
    mine = held._mutable(kind)
    for key in keys:
        mine.add(key)
        index.setdefault(key, set()).add(subscriber)


def _remove(
    index: dict[str, set[S]], held: SubscriptionSet, kind: _Kind, ids: Iterable[str], subscriber: S
) -> None:
    if not getattr(held, kind):
        return
    mine = held._mutable(kind)
    for key in ids:
        if key not in mine:
            continue
        mine.discard(key)
        members = index.get(key)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del index[key]
