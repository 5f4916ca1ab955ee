"""The TCP proxy forwards, cuts, refuses and holds, as a test of a network fault needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pm_testkit import TcpProxy


@pytest_asyncio.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP server that sends every line back."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def rest(reader: asyncio.StreamReader) -> bytes:
    """What comes until the connection ends (nothing, when it was reset)."""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""


async def roundtrip(port: int, line: bytes = b"hello\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(line)
        writer.write_eof()
        return await rest(reader)
    finally:
        writer.close()


async def test_the_proxy_url_is_the_targets_with_the_proxys_port(echo_port: int) -> None:
    async with TcpProxy(f"redis://user:pw@127.0.0.1:{echo_port}/0") as proxy:
        assert proxy.url == f"redis://user:pw@127.0.0.1:{proxy.port}/0"
        assert proxy.port != echo_port


async def test_the_proxy_forwards_both_ways(echo_port: int) -> None:
    async with TcpProxy(f"tcp://127.0.0.1:{echo_port}") as proxy:
        assert await roundtrip(proxy.port) == b"hello\n"
        assert proxy.accepted == 1


async def test_a_cut_resets_open_connections_and_refuses_new_ones_until_restored(
    echo_port: int,
) -> None:
    async with TcpProxy(f"tcp://127.0.0.1:{echo_port}") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"before\n")
        assert await reader.readline() == b"before\n"

        await proxy.cut()

        assert await rest(reader) == b""  # the open one is gone
        writer.close()
        assert await roundtrip(proxy.port) == b""  # a new one is dropped at once
        proxy.restore()
        assert await roundtrip(proxy.port, b"after\n") == b"after\n"


async def test_held_data_reaches_the_server_only_when_released(echo_port: int) -> None:
    async with TcpProxy(f"tcp://127.0.0.1:{echo_port}") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.hold()
        writer.write(b"late\n")

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), 0.2)
        proxy.release()

        assert await asyncio.wait_for(reader.readline(), 5) == b"late\n"
        writer.close()
