import asyncio

import pytest
from pm_client._channel import Channel
from pm_client.exceptions import ClientClosed


async def test_put_waits_for_room_when_full() -> None:
    channel: Channel[int] = Channel(2)
    await channel.put(1)
    await channel.put(2)
    blocked = asyncio.create_task(channel.put(3))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert await channel.get() == 1
    await asyncio.wait_for(blocked, 1)
    assert [await channel.get(), await channel.get()] == [2, 3]


async def test_close_keeps_queued_items_then_raises_the_error() -> None:
    channel: Channel[int] = Channel(5)
    await channel.put(1)
    channel.close(ClientClosed(4010))
    await channel.put(2)
    assert await channel.get() == 1
    with pytest.raises(ClientClosed):
        await channel.get()


async def test_a_clean_close_ends_iteration_and_wakes_a_waiting_reader() -> None:
    channel: Channel[int] = Channel(1)
    reader = asyncio.create_task(channel.get())
    await asyncio.sleep(0)
    channel.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reader, 1)


async def test_close_releases_a_blocked_writer() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(1)
    writer = asyncio.create_task(channel.put(2))
    await asyncio.sleep(0)
    channel.close()
    await asyncio.wait_for(writer, 1)
    assert len(channel) == 1
