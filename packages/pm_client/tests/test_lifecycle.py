import asyncio

import pytest
from pm_client import ClientClosed, ClientState
from pm_client.lifecycle import TRANSITIONS, Lifecycle


def test_the_normal_life_of_a_client_is_allowed() -> None:
    lifecycle = Lifecycle()
    for state in (
        ClientState.CONNECTING,
        ClientState.OPEN,
        ClientState.WAITING,
        ClientState.CONNECTING,
        ClientState.WAITING,
        ClientState.CONNECTING,
        ClientState.OPEN,
        ClientState.CLOSED,
    ):
        lifecycle.move(state)
    assert lifecycle.state is ClientState.CLOSED


@pytest.mark.parametrize(
    ("start", "target"),
    [(s, t) for s in ClientState for t in ClientState if t not in TRANSITIONS[s]],
)
def test_every_other_transition_is_refused(start: ClientState, target: ClientState) -> None:
    lifecycle = Lifecycle()
    lifecycle.state = start
    with pytest.raises(RuntimeError, match="bad client state transition"):
        lifecycle.move(target)


def test_closed_is_final_and_keeps_the_first_error() -> None:
    lifecycle = Lifecycle()
    lifecycle.move(ClientState.CONNECTING)
    first = ClientClosed(4010)
    lifecycle.close(first)
    lifecycle.close(ClientClosed(1000))
    assert lifecycle.state is ClientState.CLOSED
    assert lifecycle.error is first


async def test_waiting_for_settled_wakes_on_open_and_not_before() -> None:
    lifecycle = Lifecycle()
    lifecycle.move(ClientState.CONNECTING)
    waiter = asyncio.create_task(lifecycle.settled())
    await asyncio.sleep(0)
    lifecycle.move(ClientState.WAITING)
    await asyncio.sleep(0)
    assert not waiter.done()
    lifecycle.move(ClientState.CONNECTING)
    lifecycle.move(ClientState.OPEN)
    assert await asyncio.wait_for(waiter, 1) is ClientState.OPEN
