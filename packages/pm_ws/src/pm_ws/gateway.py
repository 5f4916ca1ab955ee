"""The engine assembled and mounted on aiohttp: upgrades, refusals, the receive loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import WebSocketError, WSMsgType, web
from pm_auth import (
    SUBPROTOCOL,
    AuthError,
    JwtValidator,
    RateLimiterFactory,
    TenantContext,
    extract_token,
    parse_subprotocol_header,
    token_from_subprotocols,
)
from prometheus_client import CollectorRegistry

from pm_ws import close_codes
from pm_ws.broadcaster import Broadcaster
from pm_ws.brokers.broker import Broker, DisconnectRequest, PublishResult
from pm_ws.close_codes import CloseReason
from pm_ws.codec import close_frame
from pm_ws.commands import CommandRouter
from pm_ws.deadlines import DeadlineWheel
from pm_ws.events import ConnectionId, EventDraft, StreamPosition, TenantId, UserId
from pm_ws.exceptions import BrokerUnavailable, LimitExceeded, PublishOutcomeUnknown
from pm_ws.limits import GatewayLimits
from pm_ws.log_context import ConnectionLogContext, connection_log_context
from pm_ws.metrics import GatewayMetrics
from pm_ws.outbox import FlushScheduler, Outbox
from pm_ws.registry import ConnectionRegistry
from pm_ws.session import Session, SessionServices
from pm_ws.shutdown import ShutdownCoordinator

logger = logging.getLogger(__name__)

TenantCheck = Callable[[TenantContext], Awaitable[bool]]
"""Decides whether an authenticated tenant may connect here (403 when it answers False)."""

_FAILED_BY_AIOHTTP: Final = {
    reason.code: reason for reason in (close_codes.PROTOCOL_ERROR, close_codes.MESSAGE_TOO_BIG)
}
_NO_HANDSHAKE = frozenset({close_codes.SLOW_CLIENT.code, close_codes.HEARTBEAT_TIMEOUT.code})


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How a gateway behaves, beyond the numeric limits.

    `allowed_origins` None admits any `Origin` (and requests without one, which
    browsers always send); a set admits only those. `close_timeout_secs` bounds
    how long a closing handshake waits for the peer.
    """

    limits: GatewayLimits = field(default_factory=GatewayLimits)
    allowed_origins: frozenset[str] | None = None
    tenant_check: TenantCheck | None = None
    shutdown_timeout_secs: float = 30.0
    shutdown_concurrency: int = 256
    close_timeout_secs: float = 5.0


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


class Gateway:
    """The real-time engine: mount `handle` on a GET route and serve clients.

    It takes its collaborators — a JWT validator, a broker, a metrics
    registry, a command router — and holds no global state, so several
    gateways can live in one process (one per test, for instance). Lifecycle:
    `start()` connects the broker, `drain()` runs the graceful shutdown,
    `close()` releases the broker; `mount()` wires all three into an aiohttp
    app.
    """

    def __init__(
        self,
        *,
        jwt: JwtValidator,
        broker: Broker,
        metrics: GatewayMetrics | CollectorRegistry,
        options: GatewayOptions | None = None,
        commands: CommandRouter | None = None,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options or GatewayOptions()
        limits = self.options.limits
        self.jwt = jwt
        self.broker = broker
        self.metrics = metrics if isinstance(metrics, GatewayMetrics) else GatewayMetrics(metrics)
        self.commands = commands or CommandRouter()
        self.registry: ConnectionRegistry[Session] = ConnectionRegistry(
            max_connections=limits.max_connections,
            max_connections_per_tenant=limits.max_connections_per_tenant,
        )
        self.broadcaster = Broadcaster(broker, self.metrics)
        self.shutdown = ShutdownCoordinator(
            self.registry,
            timeout_secs=self.options.shutdown_timeout_secs,
            concurrency=self.options.shutdown_concurrency,
            rng=rng,
        )
        self._services = SessionServices(
            broker=broker,
            broadcaster=self.broadcaster,
            commands=self.commands,
            jwt=jwt,
            metrics=self.metrics,
            limits=limits,
            deadlines=DeadlineWheel(resolution_secs=_deadline_resolution(limits)),
            wall_clock=wall_clock,
        )
        self._rate_limits = RateLimiterFactory(
            limits.rate_limit_max_requests, limits.rate_limit_window_secs
        )
        self._scheduler: FlushScheduler | None = None

    async def start(self) -> None:
        """Connect the broker. Raises `BrokerUnavailable`."""
        await self.broker.start()

    async def drain(self) -> int:
        """Graceful shutdown of every connection (SPEC §4); returns how many were cut."""
        return await self.shutdown.drain()

    async def close(self) -> None:
        """Release the broker."""
        await self.broker.close()

    def mount(self, app: web.Application, path: str = "/ws") -> None:
        """Serve WebSockets at `path` of `app` and tie the gateway to the app's lifecycle.

        The broker starts with the app; on shutdown the drain runs in
        `on_shutdown` (before aiohttp waits for handlers to finish), and the
        broker is closed in cleanup.
        """
        app.router.add_get(path, self.handle)
        app.cleanup_ctx.append(self._lifecycle)
        app.on_shutdown.append(self._on_shutdown)

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.drain()

    async def publish(self, draft: EventDraft) -> PublishResult:
        """Publish an event through the broker, timing it.

        Raises:
            PublishOutcomeUnknown: the broker did not answer in time; the event may
                have been stored (and delivered). Retry with the same `event_id`.
            BrokerUnavailable: the event was not stored; nothing was delivered.
        """
        started = time.perf_counter()
        try:
            result = await self.broker.publish(draft)
        except PublishOutcomeUnknown:
            self.metrics.broker_publish.labels("unknown").observe(time.perf_counter() - started)
            raise
        except BrokerUnavailable:
            self.metrics.broker_publish.labels("unavailable").observe(time.perf_counter() - started)
            raise
        outcome = "duplicate" if result.duplicate else "stored"
        self.metrics.broker_publish.labels(outcome).observe(time.perf_counter() - started)
        return result

    async def disconnect(self, request: DisconnectRequest) -> int:
        """Close matching connections here (4010) and on every process sharing the broker.

        Returns how many were closed in this process; the order to the others is
        best effort (`BrokerUnavailable` propagates).
        """
        closed = self.broadcaster.disconnect_local(request)
        await self.broker.publish_disconnect(request)
        return closed

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The `GET /ws` handler: authenticate, admit, upgrade, then serve until closed.

        Refusals are HTTP responses with a JSON body `{"code", "message"}`: 401
        (with `WWW-Authenticate: Bearer`) for a missing or bad token, 403 for an
        origin or tenant not allowed, 429 at the tenant's limit, 503 at the
        global limit or while draining. The slot is reserved before the
        handshake and released on every path.
        """
        options = self.options
        origin = request.headers.get("Origin")
        allowed = options.allowed_origins
        if allowed is not None and origin is not None and origin not in allowed:
            return self._refuse(403, "ORIGIN_NOT_ALLOWED", "origin not allowed", "origin")
        if self.shutdown.draining:
            return self._refuse(503, "SERVER_SHUTTING_DOWN", "server is shutting down", "draining")
        offered = parse_subprotocol_header(request.headers.get("Sec-WebSocket-Protocol"))
        try:
            token = extract_token(request.headers.get("Authorization"), offered)
            context = TenantContext.from_claims(self.jwt.validate(token))
        except AuthError as exc:
            response = self._refuse(401, exc.code, exc.message, "auth", exc.field)
            response.headers["WWW-Authenticate"] = 'Bearer realm="pm-realtime"'
            return response
        if options.tenant_check is not None and not await options.tenant_check(context):
            return self._refuse(403, "TENANT_NOT_ALLOWED", "tenant not allowed", "tenant")
        tenant_id = TenantId(context.tenant_id)
        try:
            reservation = self.registry.reserve(tenant_id)
        except LimitExceeded as exc:
            status = 429 if exc.scope == "tenant" else 503
            code = "SERVER_SHUTTING_DOWN" if exc.scope == "draining" else exc.code
            return self._refuse(status, code, exc.message, f"limit_{exc.scope}")
        with reservation:
            use_subprotocol = token_from_subprotocols(offered) is not None
            ws = web.WebSocketResponse(
                protocols=(SUBPROTOCOL,) if use_subprotocol else (),
                # aiohttp refuses a frame of exactly max_msg_size; the contract serves it.
                max_msg_size=options.limits.max_message_bytes + 1,
                autoping=False,
                autoclose=False,
                compress=False,
                timeout=options.close_timeout_secs,
            )
            if not ws.can_prepare(request).ok:
                return self._refuse(400, "INVALID_MESSAGE", "expected a WebSocket upgrade", "bad")
            transport = request.transport
            if transport is None:
                return ws
            connection_id = ConnectionId(uuid.uuid4().hex)
            connection_log_context.set(
                ConnectionLogContext(tenant_id, connection_id, UserId(context.user_id))
            )
            loop = asyncio.get_running_loop()
            if self._scheduler is None:
                self._scheduler = FlushScheduler(loop)
            scheduler = self._scheduler
            capacity = options.limits.send_queue_size
            socket = _AiohttpSocket(request, ws, options.close_timeout_secs)
            session = Session(
                connection_id=connection_id,
                context=context,
                remote=request.remote or "",
                services=self._services,
                outbox=lambda s: Outbox(
                    transport, scheduler, capacity=capacity, on_overflow=s.slow_client, loop=loop
                ),
                rate_limiter=self._rate_limits.create(),
                socket=socket,
                loop=loop,
            )
            reservation.attach(session)
            # Joining the tenant's stream before the handshake: with the broker down the
            # client gets an HTTP 503 it can retry, not an upgrade closed at once.
            try:
                position = await self.broadcaster.join(session)
            except BrokerUnavailable:
                return self._refuse(
                    503, "BROKER_UNAVAILABLE", "event broker unavailable", "broker_unavailable"
                )
            try:
                await ws.prepare(request)
            except (ConnectionError, asyncio.CancelledError):
                await self.broadcaster.leave(session)
                raise
            await self._serve(ws, session, position)
            await socket.finished()
            _drop_traceback(ws.exception())
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, session: Session, position: StreamPosition
    ) -> None:
        metrics = self.metrics
        metrics.connection_opened(session.tenant_id)
        logger.info("connection opened from %s", session.remote)
        try:
            session.start(position)
            await self._receive(ws, session)
        except Exception:
            logger.exception("connection failed")
            session.close(close_codes.INTERNAL_ERROR, "internal error")
        finally:
            session.closed()
            await self.broadcaster.leave(session)
            reason = session.close_reason
            code = reason.code if reason is not None else (ws.close_code or 1006)
            metrics.connection_closed(session.tenant_id, code)
            logger.info("connection closed with %d", code)

    async def _receive(self, ws: web.WebSocketResponse, session: Session) -> None:
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

    def _refuse(
        self, status: int, code: str, message: str, reason: str, field: str | None = None
    ) -> web.Response:
        self.metrics.connections_refused.labels(reason).inc()
        body: dict[str, str] = {"code": code, "message": message}
        if field is not None:
            body["field"] = field
        return web.json_response(body, status=status)


def _drop_traceback(error: BaseException | None) -> None:
    # A peer that vanished leaves aiohttp's WebSocketResponse holding the write error
    # (chained to the read's EofStream), whose tracebacks hold the frames that hold
    # the response: a cycle keeping the whole connection until a full collection,
    # which the server makes rare. Without the tracebacks, it goes with the handler.
    while error is not None:
        chained = error.__context__ or error.__cause__
        error.__traceback__ = error.__context__ = error.__cause__ = None
        error = chained


def _deadline_resolution(limits: GatewayLimits) -> float:
    # A tenth of the shortest heartbeat period, between 10 ms and 1 s: timeouts are
    # honoured to within 10 %, and ten thousand connections share a few timers.
    shortest = min(limits.heartbeat_interval_secs, limits.heartbeat_timeout_secs)
    return min(1.0, max(0.01, shortest / 10))
