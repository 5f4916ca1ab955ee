"""The gateway on aiohttp: headers in, a JSON refusal or an upgrade out, then the receive loop.

Every decision is the gateway's (`admit`, `open_session`, `start_session`,
`end_session`); this module only moves bytes and translates: aiohttp's request
and WebSocket to the session's transport and socket, aiohttp's message types and
failure codes to session calls and close reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from aiohttp import WebSocketError, WSMsgType, web

from pm_ws import close_codes
from pm_ws.admission import NOT_AN_UPGRADE, Refusal
from pm_ws.close_codes import CloseReason
from pm_ws.codec import close_frame
from pm_ws.session import Session

if TYPE_CHECKING:
    from pm_ws.gateway import Gateway

logger = logging.getLogger(__name__)

_FAILED_BY_AIOHTTP: Final = {
    reason.code: reason for reason in (close_codes.PROTOCOL_ERROR, close_codes.MESSAGE_TOO_BIG)
}
_NO_HANDSHAKE = frozenset({close_codes.SLOW_CLIENT.code, close_codes.HEARTBEAT_TIMEOUT.code})


def mount(gateway: Gateway, app: web.Application, path: str) -> None:
    """Serve `gateway.handle` at `path`; start, drain and close it with the app."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.close()

    async def on_shutdown(app: web.Application) -> None:
        await gateway.drain()

    app.router.add_get(path, gateway.handle)
    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)


async def handle(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """Admit, upgrade and serve one request (see `Gateway.handle`)."""
    admitted = await gateway.admit(request.headers)
    if isinstance(admitted, Refusal):
        return _refuse(gateway, admitted)
    with admitted:
        options = gateway.options
        ws = web.WebSocketResponse(
            protocols=(admitted.subprotocol,) if admitted.subprotocol is not None else (),
            # aiohttp refuses a frame of exactly max_msg_size; the contract serves it.
            max_msg_size=options.limits.max_message_bytes + 1,
            autoping=False,
            autoclose=False,
            compress=False,
            timeout=options.close_timeout_secs,
        )
        if not ws.can_prepare(request).ok:
            return _refuse(gateway, NOT_AN_UPGRADE)
        transport = request.transport
        if transport is None:
            return ws
        socket = _AiohttpSocket(request, ws, options.close_timeout_secs)
        session = await gateway.open_session(
            admitted, transport=transport, socket=socket, remote=request.remote or ""
        )
        if isinstance(session, Refusal):
            return _refuse(gateway, session)
        try:
            await ws.prepare(request)
        except (ConnectionError, asyncio.CancelledError):
            await session.leave()
            raise
        try:
            gateway.start_session(session)
            await _receive(ws, session)
        except Exception:
            logger.exception("connection failed")
            session.close(close_codes.INTERNAL_ERROR, "internal error")
        finally:
            await gateway.end_session(session, ws.close_code)
        await socket.finished()
        _drop_traceback(ws.exception())
    return ws


def _refuse(gateway: Gateway, refusal: Refusal) -> web.Response:
    gateway.metrics.connections_refused.labels(refusal.reason).inc()
    return web.json_response(refusal.body(), status=refusal.status, headers=dict(refusal.headers))


async def _receive(ws: web.WebSocketResponse, session: Session) -> None:
    while True:
        message = await ws.receive()
        kind = message.type
        if kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
            await session.handle_frame(message.data)
        elif kind is WSMsgType.PONG:
            session.pong_received()
        elif kind is WSMsgType.PING:
            await ws.pong(message.data)
        elif kind is WSMsgType.CLOSE:
            # Answered here, not by aiohttp's autoclose, to refuse the codes RFC 6455
            # forbids a peer to send (aiohttp accepts 1006 and anything from 3000 up).
            if close_codes.is_valid_peer_code(message.data):
                await ws.close(drain=False)
                return
            reason = close_codes.PROTOCOL_ERROR
            session.close(reason, notify=False)
            await ws.close(code=reason.code, message=reason.reason.encode(), drain=False)
            return
        else:
            if kind is WSMsgType.ERROR and isinstance(message.data, WebSocketError):
                # aiohttp already failed the connection (a malformed or oversized
                # frame); record why, so the close is counted under its real code.
                failed = _FAILED_BY_AIOHTTP.get(message.data.code)
                if failed is not None:
                    session.close(failed, notify=False)
            return


class _AiohttpSocket:
    """A session's view of its aiohttp WebSocket."""

    __slots__ = ("_closing", "_grace_secs", "_request", "_ws")

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, grace_secs: float) -> None:
        self._request = request
        self._ws = ws
        self._grace_secs = grace_secs
        self._closing: asyncio.Task[None] | None = None

    def send_control(self, frame: bytes) -> None:
        transport = self._request.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)

    def close(self, reason: CloseReason) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))

    async def _close(self, reason: CloseReason) -> None:
        transport = self._request.transport
        if reason.code in _NO_HANDSHAKE and transport is not None:
            # The peer isn't reading (slow) or answering (heartbeat): don't wait for its
            # close frame. Ours goes out if the buffers drain; the socket goes regardless.
            transport.write(close_frame(reason.code, reason.reason))
            transport.close()
            asyncio.get_running_loop().call_later(self._grace_secs, self.abort)
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.close(code=reason.code, message=reason.reason.encode())

    async def finished(self) -> None:
        """Wait for a closing handshake under way (bounded by the grace).

        The handler must not return before it: aiohttp then closes the socket, and
        closing a socket with unread input (a client still sending) makes the
        kernel reset it, which throws away the close frame and the `Closing` the
        peer had not read yet.
        """
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await self._closing

    def abort(self) -> None:
        # Once the connection is lost, aiohttp forgets its transport; aborting that
        # transport then would touch a socket asyncio already released.
        transport = self._request.transport
        if transport is not None:
            transport.abort()


def _drop_traceback(error: BaseException | None) -> None:
    # A peer that vanished leaves aiohttp's WebSocketResponse holding the write error
    # (chained to the read's EofStream), whose tracebacks hold the frames that hold
    # the response: a cycle keeping the whole connection until a full collection,
    # which the server makes rare. Without the tracebacks, it goes with the handler.
    while error is not None:
        chained = error.__context__ or error.__cause__
        error.__traceback__ = error.__context__ = error.__cause__ = None
        error = chained
