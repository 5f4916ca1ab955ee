from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st
from pm_ws.client_messages import SubscriptionIds
from pm_ws.events import Scope
from pm_ws.subscriptions import SubscriptionSet, TenantIndex

KINDS = ("project_ids", "sprint_ids", "work_item_ids")
INDEX_OF = {"project_ids": "by_project", "sprint_ids": "by_sprint", "work_item_ids": "by_work_item"}


def subscribed(
    index: TenantIndex[str],
    held: dict[str, SubscriptionSet],
    subscriber: str,
    **ids: tuple[str, ...],
) -> None:
    index.add(subscriber, held.setdefault(subscriber, SubscriptionSet()), SubscriptionIds(**ids))


def test_an_event_reaches_a_subscriber_once_however_many_subscriptions_match() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "alice", project_ids=("p",), sprint_ids=("s",), work_item_ids=("w",))

    recipients = list(index.recipients(Scope("p", "s", "w")))

    assert recipients == ["alice"]


def test_an_event_reaches_subscribers_of_its_project_sprint_or_work_item() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "by-project", project_ids=("p",))
    subscribed(index, held, "by-sprint", sprint_ids=("s",))
    subscribed(index, held, "by-item", work_item_ids=("w",))
    subscribed(index, held, "elsewhere", project_ids=("q",), sprint_ids=("t",))

    assert set(index.recipients(Scope("p", "s", "w"))) == {"by-project", "by-sprint", "by-item"}
    assert set(index.recipients(Scope("q", "s"))) == {"elsewhere", "by-sprint"}
    assert set(index.recipients(Scope("x", "", "w"))) == {"by-item"}


def test_ids_of_different_kinds_never_match_each_other() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "sprint-x", sprint_ids=("x",))

    assert not held["sprint-x"].matches(Scope("x", "", "x"))
    assert not index.recipients(Scope("x", "", "x"))
    assert set(index.recipients(Scope("other", "x"))) == {"sprint-x"}


def test_an_event_without_sprint_or_work_item_matches_only_its_project() -> None:
    held = SubscriptionSet(sprint_ids={"s"}, work_item_ids={"w"})

    assert not held.matches(Scope("p"))
    assert SubscriptionSet(project_ids={"p"}).matches(Scope("p"))


def test_an_event_for_a_project_nobody_watches_has_no_recipients() -> None:
    index: TenantIndex[str] = TenantIndex()
    subscribed(index, {}, "alice", project_ids=("p",))

    assert not index.recipients(Scope("unknown", "s", "w"))


def test_count_new_counts_only_ids_not_held_yet_in_their_own_kind() -> None:
    held = SubscriptionSet(project_ids={"p1", "p2"}, sprint_ids={"s1"}, work_item_ids=set())

    new = held.count_new(
        SubscriptionIds(
            project_ids=("p1", "p3"), sprint_ids=("s1", "p1"), work_item_ids=("w1", "w2")
        )
    )

    assert new == 4  # p3, sprint p1, w1, w2


def test_all_three_kinds_count_together_against_the_subscription_limit() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "alice", project_ids=("p1", "p2"), sprint_ids=("s1",))
    limit = 4
    more = SubscriptionIds(sprint_ids=("s1",), work_item_ids=("w1", "w2"))

    assert len(held["alice"]) == 3
    assert held["alice"].count_new(more) == 2
    assert len(held["alice"]) + held["alice"].count_new(more) > limit
    assert (
        len(held["alice"]) + held["alice"].count_new(SubscriptionIds(work_item_ids=("w1",)))
        <= limit
    )


def test_adding_ids_already_held_costs_nothing_and_changes_nothing() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "alice", project_ids=("p",), sprint_ids=("s",))

    subscribed(index, held, "alice", project_ids=("p",), sprint_ids=("s",))

    assert len(held["alice"]) == 2
    assert index.by_project == {"p": {"alice"}}
    assert index.by_sprint == {"s": {"alice"}}


def test_removing_ids_not_held_is_ignored_and_leaves_others_alone() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "alice", project_ids=("p",))
    subscribed(index, held, "bob", project_ids=("p", "q"))

    index.remove("alice", held["alice"], SubscriptionIds(project_ids=("q", "never")))

    assert held["alice"].project_ids == {"p"}
    assert index.by_project == {"p": {"alice", "bob"}, "q": {"bob"}}


def test_removing_the_last_subscriber_of_an_id_drops_the_id_from_the_index() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "alice", project_ids=("p",), work_item_ids=("w",))
    subscribed(index, held, "bob", project_ids=("p",))

    index.remove("alice", held["alice"], SubscriptionIds(project_ids=("p",), work_item_ids=("w",)))

    assert index.by_project == {"p": {"bob"}}
    assert index.by_work_item == {}
    assert len(held["alice"]) == 0


def test_remove_all_forgets_a_disconnected_subscriber_entirely() -> None:
    index: TenantIndex[str] = TenantIndex()
    held: dict[str, SubscriptionSet] = {}
    subscribed(index, held, "alice", project_ids=("p",), sprint_ids=("s",), work_item_ids=("w",))

    index.remove_all("alice", held["alice"])

    assert not index
    assert (index.by_project, index.by_sprint, index.by_work_item) == ({}, {}, {})
    assert len(held["alice"]) == 0
    assert not index.recipients(Scope("p", "s", "w"))


# Property: the index answers exactly what the delivery filter of SPEC §2 says.

# (operation, subscriber, ids): ids is None exactly for "remove_all".
Operation = tuple[str, int, SubscriptionIds] | tuple[str, int, None]

SUBSCRIBERS: st.SearchStrategy[int] = st.integers(0, 4)
# A tiny alphabet shared by all three kinds, so ids collide within and across kinds.
IDS: st.SearchStrategy[tuple[str, ...]] = st.lists(
    st.sampled_from(["a", "b", "c"]), max_size=3
).map(lambda ids: tuple(dict.fromkeys(ids)))
SUBSCRIPTION_IDS: st.SearchStrategy[SubscriptionIds] = st.builds(SubscriptionIds, IDS, IDS, IDS)
OPERATIONS: st.SearchStrategy[list[Operation]] = st.lists(
    st.one_of(
        st.tuples(st.just("add"), SUBSCRIBERS, SUBSCRIPTION_IDS),
        st.tuples(st.just("add"), SUBSCRIBERS, SUBSCRIPTION_IDS),
        st.tuples(st.just("remove"), SUBSCRIBERS, SUBSCRIPTION_IDS),
        st.tuples(st.just("remove_all"), SUBSCRIBERS, st.none()),
    ),
    max_size=12,
)
SCOPES: st.SearchStrategy[Scope] = st.builds(
    Scope,
    st.sampled_from(["a", "b", "c", "z"]),
    st.sampled_from(["", "", "a", "b", "c", "z"]),
    st.sampled_from(["", "", "a", "b", "c", "z"]),
)


def _apply(
    operations: list[Operation],
) -> tuple[TenantIndex[int], dict[int, SubscriptionSet], dict[int, dict[str, set[str]]]]:
    index: TenantIndex[int] = TenantIndex()
    held: dict[int, SubscriptionSet] = {}
    model: dict[int, dict[str, set[str]]] = {}
    for operation, subscriber, ids in operations:
        subscription_set = held.setdefault(subscriber, SubscriptionSet())
        sets = model.setdefault(subscriber, {kind: set() for kind in KINDS})
        if operation == "add":
            index.add(subscriber, subscription_set, cast(SubscriptionIds, ids))
            for kind in KINDS:
                sets[kind] |= set(getattr(ids, kind))
        elif operation == "remove":
            index.remove(subscriber, subscription_set, cast(SubscriptionIds, ids))
            for kind in KINDS:
                sets[kind] -= set(getattr(ids, kind))
        else:
            index.remove_all(subscriber, subscription_set)
            for kind in KINDS:
                sets[kind].clear()
    return index, held, model


@settings(max_examples=200, deadline=None)
@given(OPERATIONS, st.lists(SCOPES, min_size=1, max_size=8))
def test_recipients_are_exactly_the_subscribers_the_delivery_filter_selects_each_once(
    operations: list[Operation], scopes: list[Scope]
) -> None:
    index, held, model = _apply(operations)

    for scope in scopes:
        recipients = list(index.recipients(scope))
        expected = {s for s in held if held[s].matches(scope)}
        assert set(recipients) == expected
        assert len(recipients) == len(set(recipients))
        for subscriber, sets in model.items():
            wanted = (
                scope.project_id in sets["project_ids"]
                or (scope.sprint_id != "" and scope.sprint_id in sets["sprint_ids"])
                or (scope.work_item_id != "" and scope.work_item_id in sets["work_item_ids"])
            )
            assert held[subscriber].matches(scope) is wanted


@settings(max_examples=200, deadline=None)
@given(OPERATIONS, SUBSCRIPTION_IDS)
def test_index_and_subscription_sets_stay_consistent_and_count_new_is_the_growth(
    operations: list[Operation], ids: SubscriptionIds
) -> None:
    index, held, model = _apply(operations)

    for kind in KINDS:
        expected_index: dict[str, set[int]] = {}
        for subscriber, sets in model.items():
            assert getattr(held[subscriber], kind) == sets[kind]
            for key in sets[kind]:
                expected_index.setdefault(key, set()).add(subscriber)
        by_key = getattr(index, INDEX_OF[kind])
        assert by_key == expected_index
        assert all(by_key.values()), "an empty set was left in the index"
    for subscriber, sets in model.items():
        assert len(held[subscriber]) == sum(len(values) for values in sets.values())
    assert bool(index) == any(len(s) for s in held.values())

    subscription_set = held.setdefault(0, SubscriptionSet())
    before = len(subscription_set)
    cost = subscription_set.count_new(ids)
    index.add(0, subscription_set, ids)
    assert len(subscription_set) == before + cost
