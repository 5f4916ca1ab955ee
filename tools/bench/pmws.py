"""A lean WebSocket client (`asyncio.BufferedProtocol`) for thousands of connections at once.

The soak holds 2,000 connections that together receive ~20,000 messages a second. A client
library's reader task, queue and future per message would cost more CPU than the server
under test; this one parses the server's (unmasked) frames as they are read and hands each
binary message to a callback. It answers pings and the closing handshake itself. It does not
support fragmented messages or compression: pm-server sends neither.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import Callable
from typing import Final

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BINARY: Final = 0x2
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
_NO_STATUS: Final = 1005
_ABNORMAL: Final = 1006
_CLOSE_WAIT_SECS: Final = 5.0


class HandshakeError(Exception):
    """The upgrade failed; `reason` is short and countable (`http_401`, `bad_accept`, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Every connection reads into this one buffer and handles what it read before returning, so
# one is enough. The default `Protocol` path allocates 256 KiB for each `recv` and shrinks it.
_READ_BUFFER: Final = memoryview(bytearray(64 * 1024))


class WebSocketClient(asyncio.BufferedProtocol):
    """One client connection: the upgrade, then binary messages to `on_message`.

    `on_close(code)` runs once, when the TCP connection is gone: `code` is the one in the
    server's close frame, 1005 when that frame had none, 1006 when there was no close frame.
    """

    def __init__(
        self,
        request: bytes,
        accept: bytes,
        on_message: Callable[[bytes], None],
        on_close: Callable[[int], None],
    ) -> None:
        self._request = request
        self._accept = accept
        self._on_message = on_message
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._pending = b""
        self._close_sent = False
        self._upgraded = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code = _ABNORMAL

    @property
    def open(self) -> bool:
        """Upgraded, and neither side has started closing."""
        return self.opened.done() and self._transport is not None and not self._close_sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        view = _READ_BUFFER
        if not self._pending and self._upgraded:
            # The usual read: exactly one whole binary frame of < 64 KiB.
            first, second = view[0], view[1]
            if first == 0x82 and second < 126 and nbytes == 2 + second:
                self._on_message(bytes(view[2:nbytes]))
                return
            if first == 0x82 and second == 126 and nbytes == 4 + (view[2] << 8 | view[3]):
                self._on_message(bytes(view[4:nbytes]))
                return
        data = bytes(view[:nbytes])
        if not self._upgraded:
            self._read_head(data)
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        self._read_frames(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if not self.opened.done():
            self.opened.set_exception(HandshakeError("closed_during_handshake"))
            return
        self._on_close(self.close_code)

    def send(self, payload: bytes) -> None:
        """Send one binary message (dropped when the connection is closing)."""
        if self.open:
            self._send_frame(_BINARY, payload)

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server's close frame or 5 s later ends the TCP."""
        if self._transport is None or self._close_sent:
            return
        self._send_frame(_CLOSE, code.to_bytes(2, "big"))
        self._close_sent = True
        self._abort_timer = asyncio.get_running_loop().call_later(
            _CLOSE_WAIT_SECS, self._transport.abort
        )

    def reset(self) -> None:
        """Drop the connection with a TCP RST and no closing handshake (a vanished peer)."""
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close_sent = True
        transport.abort()

    def _read_head(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self._head[:end], self._head[end + 4 :]
        self._head = b""
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            code = status[1].decode("latin-1") if len(status) > 1 else "none"
            self._fail(f"http_{code}")
            return
        accepts = [
            line.split(b":", 1)[1].strip()
            for line in lines[1:]
            if line.lower().startswith(b"sec-websocket-accept:")
        ]
        if accepts != [self._accept]:
            self._fail("bad_accept")
            return
        self.opened.set_result(None)
        self._upgraded = True
        if rest:
            self._read_frames(rest)

    def _fail(self, reason: str) -> None:
        self.opened.set_exception(HandshakeError(reason))
        if self._transport is not None:
            self._transport.abort()

    def _read_frames(self, buf: bytes) -> None:
        n = len(buf)
        p = 0
        while n - p >= 2:
            b0 = buf[p]
            length = buf[p + 1] & 0x7F
            header = 2
            if length == 126:
                if n - p < 4:
                    break
                length = int.from_bytes(buf[p + 2 : p + 4], "big")
                header = 4
            elif length == 127:
                if n - p < 10:
                    break
                length = int.from_bytes(buf[p + 2 : p + 10], "big")
                header = 10
            end = p + header + length
            if end > n:
                break
            opcode = b0 & 0x0F
            payload = buf[p + header : end]
            p = end
            if opcode == _BINARY and b0 & 0x80:
                self._on_message(payload)
            elif opcode == _PING:
                self._send_frame(_PONG, payload)
            elif opcode == _CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if length >= 2 else _NO_STATUS
                if not self._close_sent:
                    self._send_frame(_CLOSE, payload[:2])
                    self._close_sent = True
                if self._transport is not None:
                    self._transport.close()
                return
            elif opcode != _PONG:
                # Text, continuation, reserved: pm-server sends none of them. Fail the connection.
                self.close_code = 1002
                if self._transport is not None:
                    self._transport.abort()
                return
        if p < n:
            self._pending = buf[p:]

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        keystream = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(
            n, "little"
        )
        transport.write(header + mask + masked)


async def connect(
    host: str,
    port: int,
    token: str,
    *,
    on_message: Callable[[bytes], None],
    on_close: Callable[[int], None],
    handshake_secs: float,
    path: str = "/ws",
) -> WebSocketClient:
    """Upgrade `ws://host:port/path` with `Authorization: Bearer <token>`.

    Raises:
        HandshakeError: The server refused or answered something else than a valid 101.
        OSError: The TCP connection failed.
        TimeoutError: No upgrade within `handshake_secs`.
    """
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (RFC 6455)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    client = WebSocketClient(request, accept, on_message, on_close)
    async with asyncio.timeout(handshake_secs):
        transport, _ = await loop.create_connection(lambda: client, host, port)
        try:
            await client.opened
        except BaseException:
            transport.abort()
            raise
    return client
