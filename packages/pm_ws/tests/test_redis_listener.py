"""The pub/sub listener on a real redis-server: channels to their handlers, across reconnects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from pm_testkit import Changes, RedisServer
from pm_ws.brokers._redis_link import RedisLink
from pm_ws.brokers._redis_listener import Backoff, PubSubListener

Listening = tuple[RedisLink, PubSubListener]


class RecordingHandler:
    """A channel handler that records what the listener told it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.messages: list[bytes] = []
        self._changes = Changes()

    def subscribed(self) -> None:
        self.calls.append("subscribed")
        self._changes.notify()

    def interrupted(self) -> None:
        self.calls.append("interrupted")
        self._changes.notify()

    def received(self, data: bytes) -> None:
        self.messages.append(data)
        self._changes.notify()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        await self._changes.wait_for(condition)


def channel() -> bytes:
    return f"test-{uuid.uuid4().hex[:12]}:events".encode()


async def started(url: str) -> AsyncIterator[Listening]:
    link = RedisLink(url, timeout_secs=2.0)
    listener = PubSubListener(link, Backoff(0.01, 0.1))
    await listener.start(timeout_secs=2.0)
    yield link, listener
    await listener.close()
    await link.close()


@pytest.fixture
async def listening(redis_server: RedisServer) -> AsyncIterator[Listening]:
    async for pair in started(redis_server.url):
        yield pair


@pytest.fixture
async def own_listening(own_redis_server: RedisServer) -> AsyncIterator[Listening]:
    async for pair in started(own_redis_server.url):
        yield pair


async def test_each_channel_reaches_only_its_own_handler(listening: Listening) -> None:
    link, listener = listening
    first, second = RecordingHandler(), RecordingHandler()
    first_channel, second_channel = channel(), channel()

    await listener.subscribe(first_channel, first)
    await listener.subscribe(second_channel, second)
    await first.wait_until(lambda: first.calls == ["subscribed"])
    await second.wait_until(lambda: second.calls == ["subscribed"])
    await link.send(first_channel, b"one")
    await link.send(second_channel, b"two")
    await first.wait_until(lambda: bool(first.messages))
    await second.wait_until(lambda: bool(second.messages))

    assert first.messages == [b"one"]
    assert second.messages == [b"two"]


async def test_an_unsubscribed_channel_reaches_nobody(listening: Listening) -> None:
    link, listener = listening
    leaving, staying = RecordingHandler(), RecordingHandler()
    leaving_channel, staying_channel = channel(), channel()
    await listener.subscribe(leaving_channel, leaving)
    await leaving.wait_until(lambda: leaving.calls == ["subscribed"])

    await listener.unsubscribe(leaving_channel)
    await listener.subscribe(staying_channel, staying)
    # Confirmed after the UNSUBSCRIBE sent before it on the same connection.
    await staying.wait_until(lambda: staying.calls == ["subscribed"])
    await link.send(leaving_channel, b"gone")
    await link.send(staying_channel, b"here")
    await staying.wait_until(lambda: bool(staying.messages))

    assert leaving.messages == []
    assert staying.messages == [b"here"]


async def test_a_killed_connection_interrupts_its_handlers_and_subscribes_them_again(
    own_redis_server: RedisServer, own_listening: Listening
) -> None:
    link, listener = own_listening
    handler = RecordingHandler()
    name = channel()
    await listener.subscribe(name, handler)
    await handler.wait_until(lambda: handler.calls == ["subscribed"])

    with own_redis_server.client() as admin:
        killed = admin.client_kill_filter(_type="pubsub")
    await handler.wait_until(lambda: len(handler.calls) == 3)
    await link.send(name, b"after")
    await handler.wait_until(lambda: bool(handler.messages))

    assert killed == 1
    assert handler.calls == ["subscribed", "interrupted", "subscribed"]
    assert handler.messages == [b"after"]
    assert listener.connected


def test_backoff_doubles_up_to_its_ceiling_and_jitters_down_to_half() -> None:
    backoff = Backoff(0.1, 1.0)

    delays = [backoff.delay(failures) for failures in range(1, 40)]

    ceilings = [min(1.0, 0.1 * 2 ** (n - 1)) for n in range(1, 40)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


@pytest.mark.parametrize(("low", "high"), [(0, 1), (-1, 1), (2, 1)])
def test_a_backoff_range_out_of_order_is_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="reconnect_backoff"):
        Backoff(low, high)
