"""The engine assembled: admission, sessions, fanout and shutdown behind one object."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pm_auth import JwtValidator, RateLimiterFactory
from prometheus_client import CollectorRegistry

from pm_ws import _aiohttp
from pm_ws.admission import BROKER_UNAVAILABLE, Admission, Admitted, Refusal, TenantCheck
from pm_ws.broadcaster import Broadcaster
from pm_ws.brokers.broker import Broker, DisconnectRequest, PublishResult
from pm_ws.commands import CommandRouter
from pm_ws.deadlines import DeadlineWheel
from pm_ws.events import ConnectionId, EventDraft, UserId
from pm_ws.exceptions import BrokerUnavailable, PublishOutcomeUnknown
from pm_ws.limits import GatewayLimits
from pm_ws.log_context import ConnectionLogContext, connection_log_context
from pm_ws.metrics import GatewayMetrics
from pm_ws.outbox import FlushScheduler, FrameTransport, Outbox
from pm_ws.registry import ConnectionRegistry
from pm_ws.session import Session, SessionServices, SessionSocket
from pm_ws.shutdown import ShutdownCoordinator

__all__ = ["Gateway", "GatewayOptions", "TenantCheck"]

logger = logging.getLogger(__name__)


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


class Gateway:
    """The real-time engine: mount it on an aiohttp app and serve clients.

    It takes its collaborators — a JWT validator, a broker, a metrics
    registry, a command router, clocks — and holds no global state, so several
    gateways can live in one process (one per test, for instance). Lifecycle:
    `start()` connects the broker, `drain()` runs the graceful shutdown,
    `close()` releases the broker; `mount()` wires all three into an aiohttp
    app and serves `handle` on a GET route.

    A connection's life, with no socket needed: `admit` decides on the upgrade
    request and holds a slot, `open_session` builds the session and joins its
    tenant's stream, `start_session` sends the Welcome once the upgrade is done,
    `end_session` releases everything when the socket is gone. The aiohttp
    adapter (`handle`) is only that sequence around a real socket.
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
        deadlines: DeadlineWheel | None = None,
    ) -> None:
        """Assemble the engine; nothing connects until `start`.

        `deadlines` times heartbeats and token expiry; by default a wheel whose
        resolution is a tenth of the shortest heartbeat period (between 10 ms
        and 1 s), so timeouts are honoured to within 10 %.
        """
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
        self._admission = Admission(
            jwt=jwt,
            registry=self.registry,
            shutdown=self.shutdown,
            allowed_origins=self.options.allowed_origins,
            tenant_check=self.options.tenant_check,
        )
        self._services = SessionServices(
            broker=broker,
            broadcaster=self.broadcaster,
            commands=self.commands,
            jwt=jwt,
            metrics=self.metrics,
            limits=limits,
            deadlines=deadlines or DeadlineWheel(resolution_secs=_deadline_resolution(limits)),
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
        _aiohttp.mount(self, app, path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The `GET /ws` handler: admit, upgrade, then serve until closed.

        Refusals are HTTP responses with a JSON body `{"code", "message"}`: 401
        (with `WWW-Authenticate: Bearer`) for a missing or bad token, 403 for an
        origin or tenant not allowed, 429 at the tenant's limit, 503 at the
        global limit, while draining or with the broker down, 400 for a request
        that is no WebSocket handshake. The slot is reserved before the
        handshake and released on every path.
        """
        return await _aiohttp.handle(self, request)

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

    async def admit(self, headers: Mapping[str, str]) -> Admitted | Refusal:
        """Decide on an upgrade request from its headers (see `Admission.admit`).

        An `Admitted` holds a connection slot until it is released, on every
        path. A `Refusal` is counted by whoever answers it (the adapter), under
        its `reason`.
        """
        return await self._admission.admit(headers)

    async def open_session(
        self,
        admitted: Admitted,
        *,
        transport: FrameTransport,
        socket: SessionSocket,
        remote: str,
    ) -> Session | Refusal:
        """Build the session of an admitted upgrade and join its tenant's stream.

        Called before the handshake is answered: with the broker down the client
        gets a 503 `BROKER_UNAVAILABLE` it can retry, not an upgrade closed at
        once. The session occupies the admitted slot (the registry lists it);
        `start_session` sends its Welcome once the upgrade is done. Also names
        the connection in the caller's log context.
        """
        context = admitted.context
        connection_id = ConnectionId(uuid.uuid4().hex)
        connection_log_context.set(
            ConnectionLogContext(admitted.tenant_id, connection_id, UserId(context.user_id))
        )
        loop = asyncio.get_running_loop()
        if self._scheduler is None:
            self._scheduler = FlushScheduler(loop)
        session = Session(
            connection_id=connection_id,
            context=context,
            remote=remote,
            services=self._services,
            outbox=Outbox(
                transport, self._scheduler, capacity=self.options.limits.send_queue_size, loop=loop
            ),
            rate_limiter=self._rate_limits.create(),
            socket=socket,
            loop=loop,
        )
        admitted.reservation.attach(session)
        try:
            await session.join()
        except BrokerUnavailable:
            return BROKER_UNAVAILABLE
        return session

    def start_session(self, session: Session) -> None:
        """The upgrade is done: count the connection and send its Welcome."""
        self.metrics.connection_opened(session.tenant_id)
        logger.info("connection opened from %s", session.remote)
        session.start()

    async def end_session(self, session: Session, peer_close_code: int | None = None) -> None:
        """The socket is gone: stop the session's timers, leave its stream, count the close.

        The close is counted under the session's own close reason, else the
        code the peer closed with, else 1006 (no close frame). Idempotent: a
        session that already ended is left as it is and counted once.
        """
        if session.finished:
            return
        session.closed()
        await session.leave()
        reason = session.close_reason
        code = reason.code if reason is not None else (peer_close_code or 1006)
        self.metrics.connection_closed(session.tenant_id, code)
        logger.info("connection closed with %d", code)


def _deadline_resolution(limits: GatewayLimits) -> float:
    # A tenth of the shortest heartbeat period, between 10 ms and 1 s: timeouts are
    # honoured to within 10 %, and ten thousand connections share a few timers.
    shortest = min(limits.heartbeat_interval_secs, limits.heartbeat_timeout_secs)
    return min(1.0, max(0.01, shortest / 10))
