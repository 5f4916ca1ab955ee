"""`EdgeRunner` serving a small aiohttp app on a real socket, driven by raw sockets.

These fail first if an aiohttp upgrade changes the internals `pm_server.edge` relies on.
"""

import asyncio
import base64
import gc
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from pm_server.edge import EdgePolicy, EdgeRunner

TIMEOUT = 10.0
HEADER_TIMEOUT = 0.3


@dataclass
class Served:
    port: int
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)
    ws_done: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[bytes] = field(default_factory=list)


async def start(policy: EdgePolicy) -> tuple[EdgeRunner, Served]:
    served = Served(port=0)

    async def live(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def slow(request: web.Request) -> web.Response:
        await served.release_slow.wait()
        return web.Response(text="done")

    async def collect(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type is WSMsgType.BINARY:
                    served.received.append(message.data)
        finally:
            served.ws_done.set()
        return ws

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    app = web.Application()
    app.router.add_get("/live", live)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", collect)
    app.router.add_get("/boom", boom)
    runner = EdgeRunner(app, policy=policy, keepalive_timeout=75)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.port = runner.addresses[0][1]
    return runner, served


@pytest.fixture
async def edge() -> AsyncIterator[Served]:
    runner, served = await start(
        EdgePolicy(header_timeout_secs=HEADER_TIMEOUT, max_pending_per_address=2)
    )
    yield served
    served.release_slow.set()
    await runner.cleanup()


async def connect(served: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", served.port), TIMEOUT)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return int(head.split()[1]), await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    except ConnectionError:
        return True


def client_frame(payload: bytes, *, mask: bool = True) -> bytes:
    if not mask:
        return bytes([0x82, len(payload)]) + payload
    key = os.urandom(4)
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + key + masked


def upgrade() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /ws HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def test_frames_before_an_unmasked_one_in_the_same_read_are_still_served(
    edge: Served,
) -> None:
    reader, writer = await connect(edge)
    writer.write(
        upgrade()
        + client_frame(b"first")
        + client_frame(b"second", mask=False)
        + client_frame(b"third")
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)

    close = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    payload = await asyncio.wait_for(reader.readexactly(close[1]), TIMEOUT)
    assert await closed(reader)
    await asyncio.wait_for(edge.ws_done.wait(), TIMEOUT)

    assert head.startswith(b"HTTP/1.1 101")
    assert close[0] == 0x88
    assert payload == b"\x03\xeaframes from a client must be masked"
    assert edge.received == [b"first"]
    writer.close()


async def test_a_slow_handler_is_not_cut_by_the_header_timeout(edge: Served) -> None:
    reader, writer = await connect(edge)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: edge\r\n\r\n")
    idle_reader, idle_writer = await connect(edge)
    assert await closed(idle_reader)  # a header timeout has passed

    edge.release_slow.set()

    assert await read_response(reader) == (200, b"done")
    writer.close()
    idle_writer.close()


async def test_a_closed_pending_connection_frees_its_place(edge: Served) -> None:
    _, first_writer = await connect(edge)
    _, second_writer = await connect(edge)
    third_reader, third_writer = await connect(edge)
    status, body = await read_response(third_reader)
    assert (status, json.loads(body)["code"]) == (429, "TOO_MANY_PENDING")

    first_writer.transport.abort()

    assert await admitted_within(edge, TIMEOUT)
    for writer in (second_writer, third_writer):
        writer.close()


async def admitted_within(served: Served, within: float) -> bool:
    """Poll (bounded) until a new connection is admitted and served."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        reader, writer = await connect(served)
        writer.write(b"GET /live HTTP/1.1\r\nHost: edge\r\n\r\n")
        status, _ = await read_response(reader)
        writer.close()
        if status == 200:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_handler_errors_are_still_aiohttp_500s_with_a_logged_traceback(
    edge: Served, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(edge)
    writer.write(b"GET /boom HTTP/1.1\r\nHost: edge\r\n\r\n")

    status, body = await read_response(reader)

    assert status == 500
    assert b"a bug in a handler" not in body
    assert any(record.exc_info for record in caplog.records)
    writer.close()


def lost_server_transports(port: int) -> int:
    """Transports of the server's side of `port` that asyncio has let go but that still exist."""
    return sum(
        1
        for thing in gc.get_objects()
        if isinstance(thing, asyncio.Transport)
        and getattr(thing, "_sock", 0) is None
        and thing.get_extra_info("sockname", ("", 0))[1] == port
    )


async def test_a_closed_connection_leaves_nothing_for_the_collector() -> None:
    runner, served = await start(EdgePolicy(header_timeout_secs=TIMEOUT))
    gc.collect()
    gc.disable()  # what a closed connection leaves must go by reference counting alone
    try:
        for _ in range(10):
            reader, writer = await connect(served)
            writer.write(b"GET /live HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            # The server's FIN comes from closing its socket, after `connection_lost`.
            assert await closed(reader)
            writer.close()
            await writer.wait_closed()
        assert lost_server_transports(served.port) == 0
    finally:
        gc.enable()
        await runner.cleanup()
