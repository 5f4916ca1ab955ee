"""One client connection's protocol logic, with no socket in sight.

The adapter feeds frames in and supplies the byte transport under the outbox and
a `SessionSocket` (control frames, close, abort), so every decision here
(validation, rate limiting, subscriptions, resume, expiry, heartbeat) is testable
without a network.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import pm_proto as pb
from pm_auth import AuthError, ConnectionRateLimiter, JwtValidator, RateLimitExceeded, TenantContext

from pm_ws import close_codes
from pm_ws.broadcaster import Broadcaster
from pm_ws.brokers.broker import Broker, HistoryRead
from pm_ws.client_messages import (
    ClientRequest,
    CommandRequest,
    PingRequest,
    RefreshTokenRequest,
    SubscribeRequest,
    UnsubscribeRequest,
    decode_client_message,
    decode_request_id,
)
from pm_ws.close_codes import CloseReason
from pm_ws.codec import encode, error_frame, event_frame, ping_frame, position_message
from pm_ws.commands import CommandContext, CommandRouter
from pm_ws.deadlines import Deadline, DeadlineWheel
from pm_ws.events import ConnectionId, Event, StreamPosition, TenantId, UserId
from pm_ws.exceptions import BrokerUnavailable, ProtocolError
from pm_ws.limits import GatewayLimits
from pm_ws.metrics import GatewayMetrics
from pm_ws.outbox import Outbox
from pm_ws.registry import ConnectionInfo
from pm_ws.subscriptions import SubscriptionSet

logger = logging.getLogger(__name__)

_VIOLATIONS: Final = frozenset({"DECODE_ERROR", "INVALID_MESSAGE"})


class SessionSocket(Protocol):
    """What a session asks of the socket under it (the aiohttp adapter provides it)."""

    def send_control(self, frame: bytes) -> None:
        """Write a control frame (a ping) now, ahead of nothing queued in the transport."""

    def close(self, reason: CloseReason) -> None:
        """Close the WebSocket with `reason`, in the background; must not wait."""

    def abort(self) -> None:
        """Drop the TCP connection at once (a drain past its deadline)."""


class SessionState(enum.Enum):
    """Where a connection is in its life; transitions only go forward."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionServices:
    """The process-wide collaborators every session uses."""

    broker: Broker
    broadcaster: Broadcaster
    commands: CommandRouter
    jwt: JwtValidator
    metrics: GatewayMetrics
    limits: GatewayLimits
    deadlines: DeadlineWheel
    wall_clock: Callable[[], float] = time.time


class Session:
    """The server side of one WebSocket connection.

    Its life: `join` the tenant's stream, `start` (Welcome, timers) once the
    upgrade is done, `handle_frame` for each client frame, `closed` when the
    socket is gone, then `leave`. Frames are handled one at a time, in order (the
    adapter awaits `handle_frame` before reading the next). Everything sent goes
    through the session's bounded outbox, so answers and events keep their order;
    when the outbox overflows the session closes itself 4008. A session closes
    itself for the reasons of SPEC §2 (token expiry, heartbeat, repeated
    violations, lag, operator) by calling `close`, which asks the adapter to close
    the socket.
    """

    __slots__ = (
        "__weakref__",
        "_awaiting_pong",
        "_expiry",
        "_finished",
        "_finished_waiter",
        "_heartbeat",
        "_limited_in_a_row",
        "_loop",
        "_pong_check",
        "_position",
        "_rate_limiter",
        "_replay_buffer",
        "_sent",
        "_violations",
        "close_reason",
        "connected_at",
        "connection_id",
        "context",
        "outbox",
        "remote",
        "services",
        "socket",
        "state",
        "subscriptions",
    )

    def __init__(
        self,
        *,
        connection_id: ConnectionId,
        context: TenantContext,
        remote: str,
        services: SessionServices,
        outbox: Outbox,
        rate_limiter: ConnectionRateLimiter,
        socket: SessionSocket,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.connection_id = connection_id
        self.context = context
        self.remote = remote
        self.services = services
        self.connected_at = services.wall_clock()
        self.subscriptions = SubscriptionSet()
        self.state = SessionState.OPEN
        self.close_reason: CloseReason | None = None
        self.outbox = outbox
        self._rate_limiter = rate_limiter
        self.socket = socket
        self._finished = False
        self._finished_waiter: asyncio.Future[None] | None = None
        self._loop = loop
        self._violations = 0
        self._limited_in_a_row = 0
        self._position: StreamPosition | None = None
        self._sent: StreamPosition | None = None
        self._replay_buffer: list[tuple[Event, bytes]] | None = None
        self._expiry: Deadline | None = None
        self._heartbeat: Deadline | None = None
        self._pong_check: Deadline | None = None
        self._awaiting_pong = False

    @property
    def tenant_id(self) -> TenantId:
        """The tenant this connection authenticated for."""
        return TenantId(self.context.tenant_id)

    @property
    def user_id(self) -> UserId:
        """The user this connection authenticated as."""
        return UserId(self.context.user_id)

    def describe(self) -> ConnectionInfo:
        """This connection as the admin endpoint shows it."""
        return ConnectionInfo(
            connection_id=self.connection_id,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            remote=self.remote,
            connected_at_ms=int(self.connected_at * 1000),
            project_ids=tuple(sorted(self.subscriptions.project_ids)),
            sprint_ids=tuple(sorted(self.subscriptions.sprint_ids)),
            work_item_ids=tuple(sorted(self.subscriptions.work_item_ids)),
            queue_depth=len(self.outbox),
        )

    @property
    def finished(self) -> bool:
        """Whether the socket is gone and everything of the connection released."""
        return self._finished

    async def wait_finished(self) -> None:
        """Wait until `finished`, as the drain does.

        The future is made only when asked for: an idle connection holds no
        waiting machinery.
        """
        if self._finished:
            return
        if self._finished_waiter is None:
            self._finished_waiter = self._loop.create_future()
        await asyncio.shield(self._finished_waiter)

    async def join(self) -> None:
        """Join the tenant's stream: fanout reaches the session from now on.

        Raises:
            BrokerUnavailable: the broker could not be reached; the session is not joined.
        """
        self._position = await self.services.broadcaster.join(self)

    async def leave(self) -> None:
        """Leave the tenant's stream, with every subscription; idempotent."""
        await self.services.broadcaster.leave(self)

    def start(self) -> None:
        """Send `Welcome`, with the position `join` found, and arm the expiry and heartbeat timers.

        Raises:
            RuntimeError: the session has not joined its tenant's stream.
        """
        position = self._position
        if position is None:
            raise RuntimeError("a session starts after joining its tenant's stream")
        limits = self.services.limits
        self._send(
            pb.ServerMessage(
                welcome=pb.Welcome(
                    connection_id=self.connection_id,
                    tenant_id=self.tenant_id,
                    user_id=self.user_id,
                    server_time_ms=int(self.services.wall_clock() * 1000),
                    heartbeat_interval_secs=math.ceil(limits.heartbeat_interval_secs),
                    token_expires_at_ms=self.context.expires_at_ms,
                    position=position_message(position),
                    limits=pb.Limits(
                        max_message_bytes=limits.max_message_bytes,
                        rate_limit_max_requests=limits.rate_limit_max_requests,
                        rate_limit_window_secs=math.ceil(limits.rate_limit_window_secs),
                        max_subscriptions=limits.max_subscriptions,
                    ),
                )
            )
        )
        self._arm_expiry()
        self._heartbeat = self.services.deadlines.call_later(
            limits.heartbeat_interval_secs, self._ping
        )

    async def handle_frame(self, data: bytes | str) -> None:
        """Handle one client data frame: rate limit, decode, validate, answer.

        Never raises for anything the client sent: bad input is answered with an
        `Error`, and `max_consecutive_errors` violations in a row close the
        connection (1008); so do `max_consecutive_rate_limited` frames in a row
        refused by the rate limit, after a `Closing`.
        """
        if self.state is not SessionState.OPEN:
            return
        started = time.perf_counter()
        metrics = self.services.metrics
        if not await self._rate_limiter.try_acquire():
            self._rate_limited(data)
            return
        self._limited_in_a_row = 0
        try:
            if isinstance(data, str):
                metrics.message_received(self.tenant_id, "text")
                raise ProtocolError("text frames are not accepted; send binary protobuf")
            request = decode_client_message(data)
            metrics.message_received(self.tenant_id, _kind(request))
            await self._dispatch(request)
            self._violations = 0
        except ProtocolError as exc:
            self._refuse(exc)
        metrics.message_handling.observe(time.perf_counter() - started)

    def push_event(self, event: Event, frame: bytes) -> None:
        """Queue a live event's frame (called by fanout; never waits).

        Events already sent (by a replay) are skipped; during a replay live
        events wait in a buffer so that none overtakes the replayed ones.
        """
        position = event.position
        sent = self._sent
        if sent is not None and sent.epoch == position.epoch and position.seq <= sent.seq:
            return
        if self._replay_buffer is not None:
            if len(self._replay_buffer) >= self.services.limits.send_queue_size:
                self._replay_buffer = None
                self.slow_client()
                return
            self._replay_buffer.append((event, frame))
            return
        self._sent = self._position = position
        if not self.outbox.push(frame) and self.outbox.overflowed:
            self.slow_client()

    def lagged(self) -> None:
        """The broker lost events this connection may need: tell it, and close so it resumes."""
        if self.state is SessionState.OPEN:
            self.services.metrics.lagged_disconnects.inc()
            self._send_error("", "BROADCAST_LAGGED", "events were lost; reconnect and resume")
            self.close(close_codes.BROADCAST_LAGGED, "events were lost; reconnect and resume")

    def disconnect_by_operator(self) -> bool:
        """Close on an operator's order (4010, terminal)."""
        if self.state is not SessionState.OPEN:
            return False
        self.close(close_codes.OPERATOR_DISCONNECT, "disconnected by an operator")
        return True

    def slow_client(self) -> None:
        """The send queue overflowed: close 4008 without queueing anything more.

        Idempotent; called by the session itself when its outbox reports an overflow.
        """
        if self.state is SessionState.OPEN:
            logger.warning("send queue full; closing slow client")
            self.services.metrics.slow_client_disconnects.inc()
            self.close(close_codes.SLOW_CLIENT, notify=False)

    def close(
        self,
        reason: CloseReason,
        message: str = "",
        *,
        notify: bool = True,
        reconnect_after_ms: int = 0,
    ) -> None:
        """Start closing: with `notify`, flush the queue and send `Closing`; then close the socket.

        Idempotent: only the first reason counts.
        """
        if self.state is not SessionState.OPEN:
            return
        self.state = SessionState.CLOSING
        self.close_reason = reason
        self._replay_buffer = None
        if notify:
            self._send(
                pb.ServerMessage(
                    closing=pb.Closing(
                        code=reason.reason, message=message, reconnect_after_ms=reconnect_after_ms
                    )
                )
            )
        self.outbox.close(flush=notify)
        self.socket.close(reason)

    def closed(self) -> None:
        """The socket is gone: release its timers and wake whoever waits for the end.

        Idempotent. The heartbeat and expiry deadlines are cancelled here, so the
        deadline wheel keeps no reference to a closed connection (a 24-hour token
        would otherwise keep it in memory for a day).
        """
        for deadline in (self._expiry, self._heartbeat, self._pong_check):
            if deadline is not None:
                deadline.cancel()
        self._expiry = self._heartbeat = self._pong_check = None
        self.state = SessionState.CLOSED
        self._replay_buffer = None
        self.outbox.close(flush=False)
        self._finished = True
        if self._finished_waiter is not None and not self._finished_waiter.done():
            self._finished_waiter.set_result(None)

    async def _dispatch(self, request: ClientRequest) -> None:
        match request:
            case SubscribeRequest():
                await self._subscribe(request)
            case UnsubscribeRequest():
                self.services.broadcaster.unsubscribe(self, request.ids)
                self._ack(request.request_id)
            case PingRequest():
                self._send(
                    pb.ServerMessage(
                        request_id=request.request_id,
                        pong=pb.Pong(
                            client_time_ms=request.client_time_ms,
                            server_time_ms=int(self.services.wall_clock() * 1000),
                        ),
                    )
                )
            case RefreshTokenRequest():
                self._refresh(request)
            case CommandRequest():
                body = await self.services.commands.dispatch(
                    CommandContext(self.context, self.connection_id),
                    request.name,
                    request.body,
                    request_id=request.request_id,
                )
                if self.state is SessionState.OPEN:
                    self._send(
                        pb.ServerMessage(
                            request_id=request.request_id,
                            command_result=pb.CommandResult(body=body),
                        )
                    )

    async def _subscribe(self, request: SubscribeRequest) -> None:
        limit = self.services.limits.max_subscriptions
        if len(self.subscriptions) + self.subscriptions.count_new(request.ids) > limit:
            raise ProtocolError(
                f"at most {limit} subscriptions per connection",
                code="SUBSCRIPTION_LIMIT",
                request_id=request.request_id,
            )
        broadcaster = self.services.broadcaster
        if request.resume_from is None:
            broadcaster.subscribe(self, request.ids)
            self._ack(request.request_id)
            return
        held_before = self.subscriptions.copy()
        # Live events that arrive while history is read wait in the buffer, so the
        # replay comes first and nothing is sent twice.
        self._replay_buffer = []
        broadcaster.subscribe(self, request.ids)
        try:
            history = await self.services.broker.read_after(self.tenant_id, request.resume_from)
        except BrokerUnavailable:
            history = None
        if self.state is not SessionState.OPEN:
            return
        buffered, self._replay_buffer = self._replay_buffer or [], None
        recovered = history is not None and history.complete
        replay: list[Event] = []
        sent = self._sent
        for event in history.events if history is not None else ():
            if not self.subscriptions.matches(event.scope):
                continue
            position = event.position
            if sent is not None and sent.epoch == position.epoch and position.seq <= sent.seq:
                # Already past it on this connection: sending it now would break seq
                # order. If it was only wanted by the new ids, it is lost to them.
                recovered = recovered and held_before.matches(event.scope)
                continue
            replay.append(event)
        self.services.metrics.history_replays.labels(str(recovered).lower()).inc()
        if not recovered:
            logger.info(
                "resume from %s:%d not recovered: %s",
                request.resume_from.epoch,
                request.resume_from.seq,
                _unrecovered_reason(request.resume_from, history),
            )
        if history is not None:
            self._position = history.position
        self._ack(
            request.request_id, recovered=recovered, replayed=len(replay), position=self._position
        )
        if replay:
            # A replay is bounded by the history size, not the send queue: written at once.
            self.outbox.write_now([event_frame(event) for event in replay])
            self._sent = replay[-1].position
        if history is not None:
            # The Ack's position covers every event up to it (replayed, or lost when not
            # recovered): a live event held back during the read must not follow it.
            sent, read_at = self._sent, history.position
            if sent is None or sent.epoch != read_at.epoch or sent.seq < read_at.seq:
                self._sent = read_at
        for event, frame in buffered:
            self.push_event(event, frame)

    def _refresh(self, request: RefreshTokenRequest) -> None:
        try:
            claims = self.services.jwt.validate(request.token)
        except AuthError as exc:
            self._send_error(request.request_id, exc.code, exc.message, exc.field)
            return
        if claims.sub != self.context.user_id or claims.tenant_id != self.context.tenant_id:
            self._send_error(
                request.request_id,
                "INVALID_CLAIM",
                "the new token is for another user or tenant",
                "sub" if claims.sub != self.context.user_id else "tenant_id",
            )
            self.close(close_codes.IDENTITY_CHANGED, "the new token is for another user or tenant")
            return
        self.context = TenantContext.from_claims(claims)
        self._arm_expiry()
        self._ack(request.request_id)

    def _ack(
        self,
        request_id: str,
        *,
        recovered: bool = False,
        replayed: int = 0,
        position: StreamPosition | None = None,
    ) -> None:
        if position is None:
            position = self.services.broadcaster.position(self.tenant_id) or self._position
        ack = pb.Ack(recovered=recovered, replayed=replayed)
        if position is not None:
            ack.position.CopyFrom(position_message(position))
        self._send(pb.ServerMessage(request_id=request_id, ack=ack))

    def _refuse(self, exc: ProtocolError) -> None:
        self._send_error(exc.request_id, exc.code, exc.message, exc.field)
        if exc.code not in _VIOLATIONS:
            self._violations = 0
            return
        self._violations += 1
        if self._violations >= self.services.limits.max_consecutive_errors:
            self.close(close_codes.POLICY_VIOLATION, "too many invalid messages in a row")

    def _send_error(
        self, request_id: str, code: str, message: str, field: str | None = None
    ) -> None:
        self.services.metrics.errors.labels(code).inc()
        self._push(error_frame(request_id, code, message, field))

    def _send(self, message: pb.ServerMessage) -> None:
        self._push(encode(message))

    def _push(self, frame: bytes) -> None:
        # `push_event` inlines this: it is the fanout's per-delivery path.
        if not self.outbox.push(frame) and self.outbox.overflowed:
            self.slow_client()

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        deadline = self.context.expires_at + self.services.jwt.leeway_secs
        delay = deadline - self.services.wall_clock()
        self._expiry = self.services.deadlines.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self.state is not SessionState.OPEN:
            return
        deadline = self.context.expires_at + self.services.jwt.leeway_secs
        if self.services.wall_clock() < deadline:
            self._arm_expiry()  # the wall clock and the loop's clock disagree: wait more
            return
        self.close(close_codes.TOKEN_EXPIRED, "the token expired; reconnect with a new one")

    def _ping(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()  # a no-op when the wheel is what called
            self._heartbeat = None
        if self.state is not SessionState.OPEN:
            return
        limits = self.services.limits
        deadlines = self.services.deadlines
        self.socket.send_control(ping_frame())
        if not self._awaiting_pong:
            self._awaiting_pong = True
            self._pong_check = deadlines.call_later(limits.heartbeat_timeout_secs, self._check_pong)
        self._heartbeat = deadlines.call_later(limits.heartbeat_interval_secs, self._ping)

    def _rate_limited(self, data: bytes | str) -> None:
        self.services.metrics.rate_limited.inc()
        request_id = decode_request_id(data) if isinstance(data, bytes) else ""
        self._send_error(request_id, RateLimitExceeded.code, "too many requests; slow down")
        self._limited_in_a_row += 1
        if self._limited_in_a_row >= self.services.limits.max_consecutive_rate_limited:
            logger.info("kept sending over the rate limit; closing")
            self.close(close_codes.POLICY_VIOLATION, "kept sending over the rate limit")

    def pong_received(self) -> None:
        """The peer answered a heartbeat ping."""
        self._awaiting_pong = False
        if self._pong_check is not None:
            self._pong_check.cancel()
            self._pong_check = None

    def _check_pong(self) -> None:
        self._pong_check = None
        if self.state is SessionState.OPEN and self._awaiting_pong:
            logger.info("peer stopped answering pings; closing")
            self.services.metrics.heartbeat_timeouts.inc()
            self.close(close_codes.HEARTBEAT_TIMEOUT, notify=False)


def _unrecovered_reason(resume_from: StreamPosition, history: HistoryRead | None) -> str:
    """Why a resume could not promise that nothing was lost, for the log."""
    if history is None:
        return "the broker was unreachable, so history could not be read"
    current = history.position
    if current.epoch != resume_from.epoch:
        return (
            f"the stream restarted its numbering (now epoch {current.epoch} at seq "
            f"{current.seq}): a broker without shared history restarted, or history expired"
        )
    if resume_from.seq > current.seq:
        return f"the position is ahead of the stream, which is at seq {current.seq}"
    if not history.complete:
        oldest = history.events[0].position.seq if history.events else current.seq + 1
        return (
            f"history no longer reaches back to seq {resume_from.seq + 1} "
            f"(the oldest event kept is seq {oldest})"
        )
    return "events wanted only by the newly added ids were already passed on this connection"


def _kind(request: ClientRequest) -> str:
    return {
        SubscribeRequest: "subscribe",
        UnsubscribeRequest: "unsubscribe",
        PingRequest: "ping",
        RefreshTokenRequest: "refresh_token",
        CommandRequest: "command",
    }[type(request)]
