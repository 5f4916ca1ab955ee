"""The HTTP edge: what a connection may do before, and just after, it reaches a handler.

aiohttp leaves these to the deployer, so the server adds them at the protocol:

- a header timeout (slowloris): a connection gets `header_timeout_secs` from
  accept, and a kept-alive connection from the first byte of its next request,
  to deliver a complete request head, or it is closed;
- a cap on such head-owing connections per source address (`address_limits`);
- malformed or oversized request heads answered with a JSON 400 (431 for a line
  or header field over the size limit) that echoes nothing of the input, and
  logged as one throttled line without a traceback;
- RFC 6455 §5.1: a client frame without the mask bit fails the connection with
  close 1002 before anything of it is processed.

This is the only module that touches aiohttp's internals, checked against
aiohttp 3.14.5: `AppRunner._make_server` (overridden, private),
`RequestHandler.handle_error`, `finish_response` and `set_parser` (overridden;
public names, internal contracts), the `web.Server` constructor and its
`request_handler`, `request_factory` and `handler_cancellation` attributes, and
the request factory's call signature. `packages/pm_server/tests/test_edge_functional.py`
and `tests/test_edge_e2e.py` fail if any of them changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpProcessingError, RawRequestMessage, WebSocketReader
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from pm_server.address_limits import PendingConnections, address_key
from pm_server.logs import ThrottledLog

logger = logging.getLogger(__name__)

UNMASKED_FRAME_CLOSE_CODE: Final = 1002
UNMASKED_FRAME_REASON: Final = "frames from a client must be masked"
_THROTTLE_SECS: Final = 60.0

_RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    BaseRequest,
]


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    """What the edge allows a connection before a handler sees its request.

    Attributes:
        header_timeout_secs: Time to deliver a complete request head, counted
            from accept (first request) or from the first byte of a later one.
        max_pending_per_address: Connections one address may hold that have not
            yet delivered their first request head; 0 = no limit. One over it is
            answered 429 `TOO_MANY_PENDING` at accept and closed.
    """

    header_timeout_secs: float = 10.0
    max_pending_per_address: int = 0

    def __post_init__(self) -> None:
        if self.header_timeout_secs <= 0 or self.max_pending_per_address < 0:
            raise ValueError("header_timeout_secs > 0 and max_pending_per_address >= 0")


def json_http_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response with a JSON error body, as bytes.

    For answers written straight to a transport, before aiohttp has a request.
    """
    body = json.dumps({"code": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TOO_MANY_PENDING: Final = json_http_response(
    429,
    "Too Many Requests",
    "TOO_MANY_PENDING",
    "too many connections from this address have not sent a request yet",
)


class FrameMaskCheck:
    """Finds the first client WebSocket frame whose mask bit is clear, across reads.

    Reads only frame headers: it tracks where each frame ends (2-byte header,
    16- or 64-bit extended length, 4-byte mask key, payload) and skips payloads
    without looking at them, so a read costs a few operations per frame whatever
    its size. A header split across reads is carried over (at most 9 bytes).
    """

    __slots__ = ("_carry", "_skip")

    def __init__(self) -> None:
        self._carry = b""
        self._skip = 0

    def feed(self, data: bytes) -> int:
        """Scan the next bytes of the stream; -1 while every frame is masked.

        Otherwise the offset in `data` where the first unmasked frame begins: 0
        when its header began in an earlier read. Bytes from that offset on must
        not be processed.
        """
        carried = len(self._carry)
        if carried:
            data = self._carry + data
            self._carry = b""
        end = len(data)
        pos = self._skip  # where the next frame header starts, relative to `data`
        while pos < end:
            if end - pos < 2:
                break
            second = data[pos + 1]
            if second < 0x80:
                return max(0, pos - carried)
            size = second - 0x80
            if size < 126:
                pos += 6 + size
            elif size == 126:
                if end - pos < 4:
                    break
                pos += 8 + (data[pos + 2] << 8 | data[pos + 3])
            else:
                if end - pos < 10:
                    break
                pos += 14 + int.from_bytes(data[pos + 2 : pos + 10], "big")
        else:
            self._skip = pos - end
            return -1
        self._carry = data[pos:]
        self._skip = 0
        return -1


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked server close frame with `code` and `reason` (cut to 123 bytes of UTF-8)."""
    text = reason.encode()[:123].decode(errors="ignore").encode()
    payload = struct.pack("!H", code) + text
    return struct.pack("!BB", 0x88, len(payload)) + payload


class _MaskCheckingReader:
    """Stands in for aiohttp's `WebSocketReader` and lets only masked frames through."""

    __slots__ = ("_check", "_failed", "_on_unmasked", "_reader")

    def __init__(self, reader: WebSocketReader, on_unmasked: Callable[[], None]) -> None:
        self._reader = reader
        self._on_unmasked = on_unmasked
        self._check = FrameMaskCheck()
        self._failed = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        bad = self._check.feed(data)
        if bad < 0:
            return self._reader.feed_data(data)
        if bad:
            self._reader.feed_data(data[:bad])
        self._failed = True
        self._on_unmasked()
        return True, b""

    def feed_eof(self) -> None:
        self._reader.feed_eof()


@dataclass(frozen=True, slots=True)
class _Edge:
    """What every connection of one server shares."""

    policy: EdgePolicy
    pending: PendingConnections
    malformed_log: ThrottledLog
    refused_log: ThrottledLog
    loop: asyncio.AbstractEventLoop


def _release_transport(transport: asyncio.BaseTransport) -> None:
    # CPython 3.11's selector transport keeps its read callback as a bound method of
    # itself: a cycle that holds each closed socket, its write buffer and its extra
    # info until a full collection, which the server makes rare (gc.set_threshold in
    # app.py). Under churn that is thousands of dead connections. Nothing reads a lost
    # transport again, so dropping the callback lets it go at once.
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[attr-defined]


class EdgeProtocol(RequestHandler):
    """aiohttp's HTTP/1.1 protocol with the header timeout, pending cap, JSON 400s and mask check.

    Built only by `EdgeServer`. While a request is being served (and for a
    WebSocket's whole life) the header timer is off: handlers and the
    WebSocket heartbeat own those phases.
    """

    __slots__ = (
        "_address",
        "_counted",
        "_edge",
        "_head_timer",
        "_lost_transport",
        "_refused",
        "_serving",
        "_ws",
    )

    def __init__(self, manager: web.Server, *, edge: _Edge, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = edge
        self._address = ""
        self._counted = False
        self._refused = False
        self._serving = False
        self._ws = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._lost_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection (or answer 429 and close it) and start the header timer."""
        self._lost_transport = transport
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        self._address = address_key(host if isinstance(host, str) else None)
        if not self._edge.pending.admit(self._address):
            self._refused = True
            self._edge.refused_log.log(
                "refused a connection from %s: %d connections from it have not sent a request",
                host,
                self._edge.pending.held(self._address),
            )
            writable = cast(asyncio.Transport, transport)
            writable.write(_TOO_MANY_PENDING)
            writable.close()
            return
        self._counted = True
        super().connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        """Start the header timer on the first byte of a later request, then parse."""
        if self._refused:
            return
        if data and self._head_timer is None and not self._serving and not self._ws:
            self._start_head_timer()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the header timer, count the connection out, and let its transport go."""
        self._stop_head_timer()
        super().connection_lost(exc)
        transport, self._lost_transport = self._lost_transport, None
        if transport is not None:
            _release_transport(transport)

    def head_received(self) -> None:
        """A complete request head was handed to a handler: the timer stops."""
        self._stop_head_timer()
        self._serving = True

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """aiohttp's, then mark the connection idle (waiting for its next request)."""
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._serving = False

    def set_parser(
        self, parser: WebSocketReader, data_received_cb: Callable[[], None] | None = None
    ) -> None:
        """Put the mask check in front of the WebSocket reader, pipelined frames included."""
        self._ws = True
        self._stop_head_timer()
        checked = _MaskCheckingReader(parser, self._fail_unmasked)
        # Duck-typed: the protocol only calls feed_data and feed_eof on it.
        super().set_parser(cast(WebSocketReader, checked), data_received_cb)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer an unparsable request with JSON that echoes nothing; others as aiohttp does."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong)
        self._edge.malformed_log.log(
            "refused a %s HTTP request from %s (%s)",
            "too large" if too_large else "malformed",
            request.remote,
            type(exc).__name__,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot answer the error")
        if too_large:
            response = web.json_response(
                {
                    "code": "HEADERS_TOO_LARGE",
                    "message": "a request line or header field is too large",
                },
                status=431,
            )
        else:
            response = web.json_response(
                {"code": "BAD_REQUEST", "message": "malformed or oversized HTTP request"},
                status=400,
            )
        response.force_close()
        return response

    def _start_head_timer(self) -> None:
        edge = self._edge
        self._head_timer = edge.loop.call_later(
            edge.policy.header_timeout_secs, self._head_timed_out
        )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._counted:
            self._counted = False
            self._edge.pending.release(self._address)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._stop_head_timer()
        if not self._serving and not self._ws:
            logger.debug("closed a connection that sent no complete request head in time")
            self.force_close()

    def _fail_unmasked(self) -> None:
        # RFC 6455 §5.1 and §7.1.7: send a close frame and drop the TCP connection; the
        # handler then sees the reader end (aiohttp records 1006 on its side).
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(close_frame(UNMASKED_FRAME_CLOSE_CODE, UNMASKED_FRAME_REASON))
            transport.close()


class EdgeServer(web.Server):
    """aiohttp's low-level server whose connections are `EdgeProtocol`s."""

    def __init__(
        self,
        handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
        *,
        request_factory: _RequestFactory,
        handler_cancellation: bool,
        edge: _Edge,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            request_factory=self._announcing(request_factory),
            handler_cancellation=handler_cancellation,
            loop=edge.loop,
            **kwargs,
        )
        self._edge = edge
        self._protocol_kwargs = kwargs

    def __call__(self) -> RequestHandler:
        """A protocol for one new connection (asyncio's protocol factory)."""
        return EdgeProtocol(self, edge=self._edge, loop=self._edge.loop, **self._protocol_kwargs)

    @staticmethod
    def _announcing(factory: _RequestFactory) -> _RequestFactory:
        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> BaseRequest:
            if isinstance(protocol, EdgeProtocol):
                protocol.head_received()
            return factory(message, payload, protocol, writer, task)

        return make_request


class EdgeRunner(web.AppRunner):
    """`web.AppRunner` serving through `EdgeServer` with `policy`.

    Takes AppRunner's arguments; the other keyword arguments (keepalive_timeout,
    max_line_size, max_field_size, access_log_class, ...) reach every protocol as
    they would with AppRunner.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        policy: EdgePolicy,
        handle_signals: bool = False,
        shutdown_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app, handle_signals=handle_signals, shutdown_timeout=shutdown_timeout, **kwargs
        )
        self._policy = policy
        self._protocol_kwargs = kwargs

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        edge = _Edge(
            policy=self._policy,
            pending=PendingConnections(self._policy.max_pending_per_address),
            malformed_log=ThrottledLog(logger, logging.INFO, _THROTTLE_SECS),
            refused_log=ThrottledLog(logger, logging.WARNING, _THROTTLE_SECS),
            loop=asyncio.get_running_loop(),
        )
        return EdgeServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            edge=edge,
            **self._protocol_kwargs,
        )
