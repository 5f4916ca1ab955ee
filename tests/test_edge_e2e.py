"""A real pm-server against clients that misbehave before, and just after, the upgrade.

Raw sockets play the slowloris, the malformed request, the unmasked frame and the
flood of idle connections; every wait has a deadline, none sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pm_proto as pb
import pytest
from pm_testkit import WAIT_SECS, ServerLauncher, ServerProcess, wait_until

TIMEOUT = WAIT_SECS
HEADER_TIMEOUT = 1.0
LOOPBACK = "127.0.0.1"
OTHER_LOOPBACK = "127.0.0.2"  # Linux routes all of 127/8 to lo: a second client address
LINUX = sys.platform.startswith("linux")


pytestmark = pytest.mark.pm_server({"HTTP_HEADER_TIMEOUT_SECS": str(HEADER_TIMEOUT)})


class Raw:
    """One raw TCP connection to the server, every read bounded by a deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """One HTTP response: status, headers (lower-case names) and its Content-Length body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self, within: float = TIMEOUT) -> bool:
        """Whether the server closes the connection (EOF or reset) before `within` passes."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), within)
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return rest == b"" or self.reader.at_eof()

    async def frame(self) -> tuple[int, bytes]:
        """The next WebSocket frame from the server: opcode and payload."""

        async def exactly(count: int) -> bytes:
            return await asyncio.wait_for(self.reader.readexactly(count), TIMEOUT)

        first, second = await exactly(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(await exactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await exactly(8), "big")
        return first & 0x0F, await exactly(size)

    async def close_frame(self) -> tuple[int, str]:
        """Read frames up to the server's close frame; its code and reason."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big"), payload[2:].decode()

    def abort(self) -> None:
        self.writer.transport.abort()


@asynccontextmanager
async def raw(server: ServerProcess, *, source: str | None = None) -> AsyncIterator[Raw]:
    local = (source, 0) if source is not None else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(LOOPBACK, server.port, local_addr=local), TIMEOUT
    )
    connection = Raw(reader, writer)
    try:
        yield connection
    finally:
        connection.abort()


def upgrade_request(server: ServerProcess, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


def ws_frame(payload: bytes, *, masked: bool = True, opcode: int = 0x2) -> bytes:
    """A client frame; `masked=False` breaks RFC 6455 §5.1."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([0x80 | opcode, mask_bit | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, mask_bit | 127]) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def ping(request_id: str) -> bytes:
    return pb.ClientMessage(
        request_id=request_id, ping=pb.Ping(client_time_ms=1)
    ).SerializeToString()


LIVE = b"GET /live HTTP/1.1\r\nHost: pm\r\n\r\n"


async def dribble_until_cut(connection: Raw, head: bytes, *, every: float = 0.2) -> float:
    """Send `head` one byte at a time (never finishing it); seconds until the server cut us."""
    started = time.monotonic()
    for byte in head:
        with suppress(ConnectionError):
            await connection.send(bytes([byte]))
        if await connection.closed_by_server(within=every):
            return time.monotonic() - started
        assert time.monotonic() - started < TIMEOUT, "still open after the header timeout"
    raise AssertionError("the whole head was sent without the server closing")


SLOW_HEAD = b"GET /ws HTTP/1.1\r\nHost: pm\r\nX-Padding: " + b"a" * 500


# Header timeout (slowloris)


async def test_a_request_head_dribbled_byte_by_byte_is_cut_after_the_header_timeout(
    server: ServerProcess,
) -> None:
    async with raw(server) as connection:
        elapsed = await dribble_until_cut(connection, SLOW_HEAD)

    assert HEADER_TIMEOUT * 0.9 <= elapsed < TIMEOUT


async def test_a_connection_that_sends_nothing_is_cut_after_the_header_timeout(
    server: ServerProcess,
) -> None:
    async with raw(server) as connection:
        assert await connection.closed_by_server()


async def test_a_second_request_dribbled_on_a_kept_alive_connection_is_cut(
    server: ServerProcess,
) -> None:
    async with raw(server) as connection:
        await connection.send(LIVE)
        status, _, body = await connection.response()
        assert (status, body) == (200, b"OK")

        elapsed = await dribble_until_cut(connection, SLOW_HEAD)

    assert HEADER_TIMEOUT * 0.9 <= elapsed < TIMEOUT


async def test_an_idle_kept_alive_connection_outlives_the_header_timeout(
    server: ServerProcess,
) -> None:
    async with raw(server) as kept:
        await kept.send(LIVE)
        assert (await kept.response())[0] == 200
        async with raw(server) as slow:
            await slow.send(b"GET /live HTTP/1.1\r\n")
            assert await slow.closed_by_server()  # a header timeout has passed since

        await kept.send(LIVE)
        status, _, body = await kept.response()

    assert (status, body) == (200, b"OK")


async def test_a_websocket_outlives_the_header_timeout(server: ServerProcess, tenant: str) -> None:
    client = await server.connect(tenant)
    async with raw(server) as slow:
        await slow.send(b"GET /live HTTP/1.1\r\n")
        assert await slow.closed_by_server()

    pong = await client.request(pb.ClientMessage(ping=pb.Ping(client_time_ms=7)))

    assert pong.pong.client_time_ms == 7


# Malformed and oversized request heads


async def test_a_malformed_request_gets_a_json_400_that_echoes_nothing(
    server: ServerProcess,
) -> None:
    async with raw(server) as connection:
        await connection.send(b"GET /live HTTP/1.1\r\nBad Name secret-marker-123: x\r\n\r\n")
        status, headers, body = await connection.response()
        assert await connection.closed_by_server()

    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {
        "code": "BAD_REQUEST",
        "message": "malformed or oversized HTTP request",
    }
    assert b"secret-marker" not in body


async def test_an_oversized_header_gets_a_json_431_that_echoes_nothing(
    server: ServerProcess,
) -> None:
    async with raw(server) as connection:
        await connection.send(b"GET /live HTTP/1.1\r\nX-Big: " + b"m" * 20_000 + b"\r\n\r\n")
        status, headers, body = await connection.response()

    assert status == 431
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["code"] == "HEADERS_TOO_LARGE"
    assert b"mmm" not in body


async def test_a_flood_of_malformed_requests_logs_one_line_and_no_traceback(
    server: ServerProcess,
) -> None:
    before = len(server.stderr.lines)
    for number in range(30):
        async with raw(server) as connection:
            await connection.send(f"GET /live HTTP/1.1\r\nBad Name {number}: x\r\n\r\n".encode())
            assert (await connection.response())[0] == 400

    await server.get("/live")  # its access line follows every line the flood caused
    await server.stderr.wait(r"GET /live 200", after=before)
    written = server.stderr.lines[before:]
    assert not [line for line in written if "Traceback" in line or " ERROR " in line]
    assert len([line for line in written if "HTTP request from" in line]) <= 1


# Tokens longer than SPEC's 8 KiB


@pytest.mark.parametrize("subprotocol", [False, True], ids=["authorization", "subprotocol"])
async def test_a_token_over_8_kib_gets_the_json_401_invalid_token(
    server: ServerProcess, tenant: str, subprotocol: bool
) -> None:
    token = server.token(tenant, padding="p" * 9000)
    assert 9000 < len(token) < 16_000

    answer = await server.refused(token, subprotocol=subprotocol)

    assert answer.status == 401
    assert answer.json()["code"] == "INVALID_TOKEN"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


# Unmasked client frames (RFC 6455 §5.1)


async def test_an_unmasked_client_frame_fails_the_connection_with_1002(
    server: ServerProcess, tenant: str
) -> None:
    async with raw(server) as connection:
        await connection.send(upgrade_request(server, server.token(tenant)))
        assert (await connection.response())[0] == 101
        _, welcome = await connection.frame()
        assert pb.ServerMessage.FromString(welcome).WhichOneof("payload") == "welcome"

        await connection.send(ws_frame(ping("unmasked"), masked=False))
        code, reason = await connection.close_frame()
        assert await connection.closed_by_server()

    assert (code, reason) == (1002, "frames from a client must be masked")
    other = await server.connect(tenant, "someone-else")
    pong = await other.request(pb.ClientMessage(ping=pb.Ping(client_time_ms=3)))
    assert pong.pong.client_time_ms == 3


async def test_an_unmasked_frame_pipelined_with_the_upgrade_is_never_answered(
    server: ServerProcess, tenant: str
) -> None:
    async with raw(server) as connection:
        await connection.send(
            upgrade_request(server, server.token(tenant)) + ws_frame(ping("early"), masked=False)
        )
        assert (await connection.response())[0] == 101
        answered = []
        while True:
            opcode, payload = await connection.frame()
            if opcode == 0x8:
                break
            answered.append(pb.ServerMessage.FromString(payload).WhichOneof("payload"))

    assert int.from_bytes(payload[:2], "big") == 1002
    assert "pong" not in answered


async def test_masked_frames_are_served_as_before(server: ServerProcess, tenant: str) -> None:
    async with raw(server) as connection:
        await connection.send(upgrade_request(server, server.token(tenant)))
        assert (await connection.response())[0] == 101
        await connection.frame()  # Welcome

        big = pb.ClientMessage(
            request_id="big", subscribe=pb.Subscribe(project_ids=[f"p{i:03}" for i in range(100)])
        ).SerializeToString()
        frames = ws_frame(big) + ws_frame(ping("small"))
        await connection.send(frames[:1])
        await connection.send(frames[1:7])
        await connection.send(frames[7:])
        answers = [pb.ServerMessage.FromString((await connection.frame())[1]) for _ in range(2)]

    assert [(a.request_id, a.WhichOneof("payload")) for a in answers] == [
        ("big", "ack"),
        ("small", "pong"),
    ]


# Per-address limits


async def test_connections_owing_a_request_are_capped_per_address(servers: ServerLauncher) -> None:
    server = servers.start({"MAX_PENDING_UPGRADES_PER_IP": "3", "HTTP_HEADER_TIMEOUT_SECS": "60"})
    async with raw(server) as first, raw(server) as _second, raw(server) as _third:
        async with raw(server) as fourth:
            status, _, body = await fourth.response()
            assert await fourth.closed_by_server()
        assert status == 429
        assert json.loads(body)["code"] == "TOO_MANY_PENDING"

        async with raw(server, source=OTHER_LOOPBACK) as elsewhere:
            await elsewhere.send(LIVE)
            assert (await elsewhere.response())[0] == 200

        await first.send(LIVE)
        assert (await first.response())[0] == 200  # no longer owes a request
        async with raw(server) as fifth:
            await fifth.send(LIVE)
            assert (await fifth.response())[0] == 200


async def test_failed_upgrades_exhaust_an_address_until_its_bucket_refills(
    servers: ServerLauncher, tenant: str
) -> None:
    server = servers.start({"MAX_AUTH_FAILURES_PER_IP": "3", "AUTH_FAILURE_WINDOW_SECS": "3600"})
    wrong = server.token(tenant)[:-4] + "AAAA"
    for _ in range(3):
        assert (await server.refused(wrong)).status == 401

    refused = await server.refused(server.token(tenant))  # a good token too: nothing is checked

    assert refused.status == 429
    assert refused.json()["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await server.post_publish(b"")).status == 429
    assert (await server.get("/live")).status == 200
    async with raw(server, source=OTHER_LOOPBACK) as elsewhere:
        await elsewhere.send(upgrade_request(server, server.token(tenant)))
        assert (await elsewhere.response())[0] == 101


async def test_failed_api_keys_count_against_the_address_too(
    servers: ServerLauncher, tenant: str
) -> None:
    server = servers.start({"MAX_AUTH_FAILURES_PER_IP": "2"})
    for _ in range(2):
        assert (await server.post_publish(b"", key="not-the-key-at-all")).status == 401

    refused = await server.refused(server.token(tenant))

    assert refused.status == 429
    assert refused.json()["code"] == "RATE_LIMIT_EXCEEDED"


# Running out of file descriptors

FD_LIMIT = 256


def open_idle_sockets(port: int, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte (the kernel completes them; accept may not)."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


async def wait_all_closed_by_server(sockets: list[socket.socket], within: float) -> None:
    loop = asyncio.get_running_loop()

    async def closed(sock: socket.socket) -> None:
        with suppress(ConnectionError):
            assert await loop.sock_recv(sock, 1) == b""

    await asyncio.wait_for(asyncio.gather(*(closed(sock) for sock in sockets)), within)


async def wait_live(server: ServerProcess, within: float) -> None:
    async def live() -> bool:
        try:
            return (await server.get("/live", within=1.0)).status == 200
        except (TimeoutError, OSError):
            return False

    await wait_until(live, within=within, what=lambda: server.stderr.text[-3000:])


@pytest.mark.skipif(not LINUX, reason="prlimit and /proc are Linux")
async def test_at_the_descriptor_limit_the_header_timeout_frees_idle_sockets_quietly(
    servers: ServerLauncher,
) -> None:
    server = servers.start({"HTTP_HEADER_TIMEOUT_SECS": "2"})
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    mark = len(server.stderr.lines)
    sockets = open_idle_sockets(server.port, FD_LIMIT + 150)
    try:
        await server.wait_log("out of system resource")

        await wait_all_closed_by_server(sockets, within=60)
        await wait_live(server, within=TIMEOUT)
    finally:
        for sock in sockets:
            sock.close()

    written = server.stderr.lines[mark:]
    assert not [line for line in written if "Traceback" in line or " ERROR " in line]
    assert len([line for line in written if "out of system resource" in line]) <= 3
    assert len(written) < 40, "\n".join(written[:60])


@pytest.mark.skipif(not LINUX, reason="prlimit and /proc are Linux")
async def test_at_the_descriptor_limit_the_server_recovers_when_clients_leave(
    servers: ServerLauncher,
) -> None:
    server = servers.start({"HTTP_HEADER_TIMEOUT_SECS": "3600"})
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    mark = len(server.stderr.lines)
    sockets = open_idle_sockets(server.port, FD_LIMIT + 150)
    try:
        await server.wait_log("out of system resource")
    finally:
        for sock in sockets:
            sock.close()

    await wait_live(server, within=TIMEOUT)

    written = server.stderr.lines[mark:]
    assert not [line for line in written if "Traceback" in line or " ERROR " in line]
    assert len([line for line in written if "out of system resource" in line]) <= 3
    assert len(written) < 40, "\n".join(written[:60])


def test_start_up_raises_the_open_files_limit_and_warns_when_max_connections_cannot_fit(
    servers: ServerLauncher,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = max(512, len(os.listdir("/dev/fd")) + 64)
    if hard == resource.RLIM_INFINITY or not lowered < hard < 1_000_000 - 100:
        pytest.skip(f"needs a finite hard open-files limit above {lowered}, got {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:  # the server inherits the lowered soft limit
        server = servers.start({"MAX_CONNECTIONS": str(hard)}, wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server.wait_listening()

    server.stderr.wait_for(rf"raised the open files limit from {lowered} to {hard}")
    server.stderr.wait_for(rf"MAX_CONNECTIONS is {hard} but the open files limit \({hard}\)")
