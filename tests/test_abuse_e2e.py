"""What a hostile authenticated client can cost a real server: bounded, and then closed."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pm_proto as pb
import pytest
from pm_testkit import ServerProcess
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE_BYTES = 65_536

pytestmark = pytest.mark.pm_server({"RATE_LIMIT_MAX_REQUESTS": "10"})


def a_full_size_ping(index: int) -> bytes:
    """A valid `Ping` padded with an unknown field to exactly MAX_MESSAGE_BYTES."""
    message = pb.ClientMessage(request_id=f"flood-{index}", ping=pb.Ping(client_time_ms=1))
    body = message.SerializeToString()
    # Field 1000, wire type 2 (bytes): protobuf keeps it as an unknown field.
    tag = b"\xc2\x3e"
    room = MAX_MESSAGE_BYTES - len(body) - len(tag) - 3
    padding = tag + bytes([0x80 | (room & 0x7F), 0x80 | ((room >> 7) & 0x7F), room >> 14])
    frame = body + padding + b"\0" * room
    assert len(frame) == MAX_MESSAGE_BYTES
    return frame


async def test_a_client_flooding_full_size_frames_past_the_rate_limit_is_closed_1008(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    async def flood() -> int:
        sent = 0
        with contextlib.suppress(ConnectionClosed):
            while sent < 1_000:
                await client.ws.send(a_full_size_ping(sent))
                sent += 1
        return sent

    sender = asyncio.create_task(flood())
    answers: list[pb.ServerMessage] = []

    async def read_to_the_close() -> None:
        while True:
            answers.append(await client.recv())

    with pytest.raises(ConnectionClosed) as closed:
        await read_to_the_close()
    sent = await sender

    kinds = [answer.WhichOneof("payload") for answer in answers]
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert kinds.count("pong") == 10
    assert kinds.count("error") == 20  # the default RATE_LIMIT_MAX_VIOLATIONS, in a row
    assert kinds[-1] == "closing"
    assert answers[-1].closing.code == "POLICY_VIOLATION"
    assert sent > 30  # the client kept sending after it was refused
    metrics = (await server.get("/metrics")).text
    assert re.search(r'pm_ws_connections_closed_total\{code="1008"\} [1-9]', metrics)
    # Frames that arrived after the close were read and dropped, never handled.
    assert re.search(r"^pm_ws_rate_limited_frames_total 20\.0$", metrics, re.MULTILINE)
