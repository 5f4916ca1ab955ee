import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_client import Position, SubscriptionIds
from pm_client.subscriptions import SubscriptionSet

ids = st.lists(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
    max_size=250,
)


@given(ids, ids, ids)
def test_messages_cover_every_id_with_at_most_100_per_list(
    projects: list[str], sprints: list[str], items: list[str]
) -> None:
    subscription = SubscriptionIds.of(projects, sprints, items)
    messages = subscription.subscribe_messages(Position("E", 3))
    assert [p for m in messages for p in m.project_ids] == list(dict.fromkeys(projects))
    assert [s for m in messages for s in m.sprint_ids] == list(dict.fromkeys(sprints))
    assert [w for m in messages for w in m.work_item_ids] == list(dict.fromkeys(items))
    for message in messages:
        assert (
            max(len(message.project_ids), len(message.sprint_ids), len(message.work_item_ids))
            <= 100
        )


def test_resume_from_rides_on_the_last_message_only() -> None:
    subscription = SubscriptionIds.of(projects=[f"p{i}" for i in range(250)])
    messages = subscription.subscribe_messages(Position("E", 3))
    assert [len(m.project_ids) for m in messages] == [100, 100, 50]
    assert [m.HasField("resume_from") for m in messages] == [False, False, True]
    assert messages[-1].resume_from.seq == 3


def test_one_message_when_lists_are_short() -> None:
    messages = SubscriptionIds.of(["p"], ["s"], ["w"]).unsubscribe_messages()
    assert len(messages) == 1
    assert list(messages[0].sprint_ids) == ["s"]


@pytest.mark.parametrize("bad", ["", "x" * 129, "a\nb", "tab\there", "\x85"])
def test_ids_the_server_would_refuse_are_refused_here(bad: str) -> None:
    with pytest.raises(ValueError, match="project id"):
        SubscriptionIds.of(projects=[bad])


def test_a_single_string_is_not_taken_for_a_list_of_ids() -> None:
    with pytest.raises(TypeError, match="not one string"):
        SubscriptionIds.of(projects="p1")


def test_the_set_reports_what_changed_and_counts_versions() -> None:
    held = SubscriptionSet()
    assert held.add(SubscriptionIds.of(["a", "b"])) == SubscriptionIds(("a", "b"))
    assert held.add(SubscriptionIds.of(["b", "c"], ["s"])) == SubscriptionIds(("c",), ("s",))
    assert held.remove(SubscriptionIds.of(["a", "zz"])) == SubscriptionIds(("a",))
    assert held.snapshot() == SubscriptionIds(("b", "c"), ("s",))
    assert held.version == 3
    assert len(held) == 3
