"""The connection loop behind `PmClient`: connect, serve, decide, wait, until it is over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
import pm_proto as pb
from google.protobuf.message import DecodeError
from pm_proto.contract import BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL

from pm_client._channel import Channel
from pm_client._connection import Connection, Resubscription
from pm_client.exceptions import (
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    PmClientError,
    RequestFailed,
)
from pm_client.lifecycle import ClientState, Disconnected, Lifecycle
from pm_client.reconnect import (
    Backoff,
    Disposition,
    close_disposition,
    reconnect_delay,
    refusal_disposition,
)
from pm_client.stream import Event, Position, StreamCursor, StreamItem
from pm_client.subscriptions import SubscriptionSet
from pm_client.tokens import TokenProvider, refresh_delay, token_expiry

logger = logging.getLogger("pm_client.client")

ABNORMAL_CLOSURE: Final = int(aiohttp.WSCloseCode.ABNORMAL_CLOSURE)
"""What the client reports for a connection that ended without a close frame."""
NORMAL_CLOSURE: Final = int(pb.CloseCode.CLOSE_CODE_NORMAL)
INTERNAL_ERROR: Final = int(pb.CloseCode.CLOSE_CODE_INTERNAL_ERROR)
_MAX_AUTH_REFUSALS: Final = 2
"""A 401, then a 401 again with the provider's next token: the credentials are wrong."""

AuthMode = Literal["header", "subprotocol"]


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How the loop connects, waits and refreshes; `PmClient` documents each one."""

    url: str
    auth: AuthMode
    backoff: Backoff
    refresh_before_secs: float | None
    connect_timeout: float
    close_timeout: float
    max_frame_bytes: int
    rng: random.Random
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    on_connect: Callable[[pb.Welcome], None] | None
    on_disconnect: Callable[[Disconnected], None] | None


@dataclass(frozen=True, slots=True)
class _Ended:
    """A welcomed connection ended."""

    code: int
    reason: str
    closing: pb.Closing | None
    opened: bool
    connection_id: str


@dataclass(frozen=True, slots=True)
class _Refused:
    """The upgrade was answered with an HTTP status."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class _Failed:
    """No connection: network error, timeout, provider failure or no Welcome."""

    message: str


_Outcome = _Ended | _Refused | _Failed


class _Fatal(Exception):
    """Raised inside the connection loop to stop the client with `error`."""

    def __init__(self, error: PmClientError) -> None:
        super().__init__(error)
        self.error = error


class Supervisor:
    """Owns the current connection and replaces it when it ends.

    Shares with `PmClient` the lifecycle, the stream channel, the cursor and
    the subscription set; everything it learns reaches the application through
    those. One `run()` per client.
    """

    def __init__(
        self,
        options: LinkOptions,
        token_provider: TokenProvider,
        *,
        lifecycle: Lifecycle,
        channel: Channel[StreamItem],
        cursor: StreamCursor,
        subscriptions: SubscriptionSet,
    ) -> None:
        self._options = options
        self._token_provider = token_provider
        self._lifecycle = lifecycle
        self._channel = channel
        self._cursor = cursor
        self._subscriptions = subscriptions
        self._session: aiohttp.ClientSession | None = None
        self.connection: Connection | None = None
        self._token: str | None = None
        self._token_expires_at: float | None = None
        self._request_ids = 0

    def request_id(self) -> str:
        """A new request id, unique for this client."""
        self._request_ids += 1
        return f"c{self._request_ids}"

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Connect, serve, decide, wait, again, until the client stops (never raises)."""
        self._session = session
        failures = 0
        auth_refusals = 0
        need_token = True
        try:
            while True:
                if self._lifecycle.state is not ClientState.CONNECTING:
                    self._lifecycle.move(ClientState.CONNECTING)
                outcome = await self._attempt(need_token)
                need_token = False
                auth_refusals = auth_refusals + 1 if _unauthorized(outcome) else 0
                closing_ms = 0
                if isinstance(outcome, _Ended):
                    disposition = close_disposition(outcome.code)
                    if outcome.closing is not None:
                        closing_ms = outcome.closing.reconnect_after_ms
                    failures = 0 if outcome.opened else failures + 1
                    if disposition is Disposition.TERMINAL:
                        reason = outcome.reason or (
                            outcome.closing.message if outcome.closing is not None else ""
                        )
                        self._report(outcome, None)
                        raise _Fatal(ClientClosed(outcome.code, reason))
                    need_token = disposition is Disposition.NEW_TOKEN
                elif isinstance(outcome, _Refused):
                    disposition = refusal_disposition(outcome.status)
                    failures += 1
                    if disposition is Disposition.TERMINAL or auth_refusals >= _MAX_AUTH_REFUSALS:
                        raise _Fatal(ConnectFailed(outcome.message, status=outcome.status))
                    need_token = disposition is Disposition.NEW_TOKEN
                else:
                    failures += 1
                limit = self._options.backoff.max_attempts
                if limit is not None and failures >= limit:
                    detail = outcome.message if not isinstance(outcome, _Ended) else "closed"
                    raise _Fatal(ConnectFailed(f"{failures} attempts in a row failed: {detail}"))
                delay = reconnect_delay(
                    self._options.backoff,
                    failures,
                    self._options.rng,
                    reconnect_after_ms=closing_ms,
                )
                if isinstance(outcome, _Ended):
                    self._report(outcome, delay)
                else:
                    logger.warning(
                        "connection attempt failed (%s); retrying in %.2fs", outcome.message, delay
                    )
                self._lifecycle.move(ClientState.WAITING)
                await self._options.sleep(delay)
        except _Fatal as fatal:
            self._stop(fatal.error)
        except Exception as exc:
            # A bug here must end the stream loudly, not leave the application waiting.
            logger.exception("the connection loop failed")
            error = ClientClosed(INTERNAL_ERROR, f"client error: {type(exc).__name__}")
            error.__cause__ = exc
            self._stop(error)

    def _report(self, ended: _Ended, delay: float | None) -> None:
        if delay is None:
            logger.warning("connection closed for good with %d %s", ended.code, ended.reason)
        else:
            logger.info(
                "connection closed with %d %s; reconnecting in %.2fs",
                ended.code,
                ended.reason,
                delay,
            )
        if self._options.on_disconnect is not None:
            disconnected = Disconnected(
                ended.connection_id, ended.code, ended.reason, ended.closing, delay
            )
            try:
                self._options.on_disconnect(disconnected)
            except Exception:
                logger.exception("on_disconnect failed")

    def _stop(self, error: PmClientError) -> None:
        self.connection = None
        self._lifecycle.close(error)
        self._channel.close(error)

    async def _attempt(self, need_token: bool) -> _Outcome:
        """One connection, from getting a token to its end."""
        expires_at = self._token_expires_at
        if (
            need_token
            or self._token is None
            or (expires_at is not None and expires_at - self._options.clock() <= 1.0)
        ):
            try:
                token = await self._token_provider()
            except Exception as exc:
                logger.warning("the token provider failed", exc_info=True)
                return _Failed(f"token provider failed: {type(exc).__name__}")
            if not isinstance(token, str) or not token:
                return _Failed("the token provider returned no token")
            self._token, self._token_expires_at = token, token_expiry(token)
        token = self._token
        assert self._session is not None
        headers: dict[str, str] = {}
        protocols: tuple[str, ...] = ()
        if self._options.auth == "header":
            headers["Authorization"] = f"Bearer {token}"
        else:
            protocols = (SUBPROTOCOL, f"{BEARER_SUBPROTOCOL_PREFIX}{token}")
        try:
            async with asyncio.timeout(self._options.connect_timeout):
                ws = await self._session.ws_connect(
                    self._options.url,
                    headers=headers,
                    protocols=protocols,
                    autoping=False,
                    autoclose=True,
                    max_msg_size=self._options.max_frame_bytes,
                    timeout=aiohttp.ClientWSTimeout(
                        ws_receive=None, ws_close=self._options.close_timeout
                    ),
                )
        except aiohttp.WSServerHandshakeError as exc:
            return _Refused(exc.status, _refusal_message(exc.status))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _Failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return await self._serve(Connection(ws))

    async def _serve(self, connection: Connection) -> _Outcome:
        """Read one connection until it ends: Welcome, resubscription, then events and answers."""
        ws = connection.ws
        refresher: asyncio.Task[None] | None = None
        code, reason = ABNORMAL_CLOSURE, ""
        try:
            try:
                first = await self._receive(connection, self._options.connect_timeout)
            except TimeoutError:
                return _Failed("no Welcome within the connect timeout")
            if first is None:
                code = connection.close_code or ABNORMAL_CLOSURE
                return _Failed(f"closed with {code} before Welcome")
            if first.WhichOneof("payload") != "welcome":
                return _Failed("the server did not start with Welcome")
            self._welcomed(connection, first.welcome)
            with contextlib.suppress(ConnectionLost):
                await self._resubscribe(connection)
            if self._options.refresh_before_secs is not None:
                refresher = asyncio.create_task(self._refresh(connection), name="pm-client-refresh")
            heartbeat = first.welcome.heartbeat_interval_secs
            idle_timeout = 2.0 * heartbeat if heartbeat > 0 else None
            while True:
                try:
                    message = await self._receive(connection, idle_timeout)
                except TimeoutError:
                    logger.warning("no frame for %.0fs; dropping the connection", idle_timeout)
                    code, reason = ABNORMAL_CLOSURE, "heartbeat lost"
                    break
                if message is None:
                    code = connection.close_code or ABNORMAL_CLOSURE
                    reason = connection.close_reason
                    break
                await self._dispatch(connection, message)
        finally:
            if refresher is not None:
                refresher.cancel()
                await asyncio.wait({refresher})
            connection.fail_pending()
            if self.connection is connection:
                self.connection = None
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close(code=NORMAL_CLOSURE)
        return _Ended(code, reason, connection.closing, connection.opened, connection.connection_id)

    async def _receive(
        self, connection: Connection, within_secs: float | None
    ) -> pb.ServerMessage | None:
        """The next server message; None once the socket is closed. Answers pings on the way."""
        ws = connection.ws
        while True:
            frame = await ws.receive(timeout=within_secs)
            kind = frame.type
            if kind is aiohttp.WSMsgType.BINARY:
                try:
                    return pb.ServerMessage.FromString(frame.data)
                except DecodeError:
                    logger.warning("ignoring an undecodable frame of %d bytes", len(frame.data))
            elif kind is aiohttp.WSMsgType.PING:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await ws.pong(frame.data)
            elif kind is aiohttp.WSMsgType.TEXT:
                logger.warning("ignoring a text frame; pm.v1 is binary")
            elif kind is aiohttp.WSMsgType.CLOSE:
                # Read the code here: aiohttp's automatic reply may fail on a socket the
                # server already shut (4008, 4009) and then reports 1006 instead.
                connection.close_code = int(frame.data)
                connection.close_reason = str(frame.extra or "")
                return None
            elif kind is not aiohttp.WSMsgType.PONG:
                return None

    def _welcomed(self, connection: Connection, welcome: pb.Welcome) -> None:
        connection.welcome = welcome
        if welcome.token_expires_at_ms > 0:
            connection.token_expires_at = welcome.token_expires_at_ms / 1000.0
            self._token_expires_at = connection.token_expires_at
        self.connection = connection
        logger.info("connected as %s (tenant %s)", welcome.connection_id, welcome.tenant_id)
        if self._options.on_connect is not None:
            try:
                self._options.on_connect(welcome)
            except Exception:
                logger.exception("on_connect failed")

    async def _resubscribe(self, connection: Connection) -> None:
        """Send every subscription again, resuming from `position`; OPEN at once when there is none.

        With more than one message, events that arrive before the last `Ack`
        are dropped: they are all at or before that `Ack`'s position, so its
        replay carries them again, in order.
        """
        ids = self._subscriptions.snapshot()
        connection.covered_version = self._subscriptions.version
        if not ids:
            self._opened(connection, None)
            return
        resume_from = self._cursor.position
        messages = [
            pb.ClientMessage(request_id=self.request_id(), subscribe=m)
            for m in ids.subscribe_messages(resume_from)
        ]
        connection.resubscription = Resubscription(
            request_ids={m.request_id for m in messages},
            final_request_id=messages[-1].request_id,
            resumed_from=resume_from,
            version=connection.covered_version,
        )
        connection.discarding_events = len(messages) > 1
        for message in messages:
            await connection.send(message)

    def _opened(self, connection: Connection, ack: pb.Ack | None) -> None:
        connection.opened = True
        connection.resubscribe_ack = ack
        if self._lifecycle.state is ClientState.CONNECTING:
            self._lifecycle.move(ClientState.OPEN)

    async def _dispatch(self, connection: Connection, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("payload")
        if kind == "event":
            if not connection.discarding_events:
                await self._deliver(self._cursor.observe(Event.from_proto(message.event)))
            return
        if kind == "closing":
            connection.closing = message.closing
            return
        resubscription = connection.resubscription
        if resubscription is not None and message.request_id in resubscription.request_ids:
            await self._resubscribed(connection, resubscription, message)
            return
        request_kind = connection.answered(message)
        if request_kind == "subscribe" and kind == "ack":
            await self._deliver(self._cursor.acknowledged(_position(message.ack)))
        elif request_kind is None and kind == "error":
            error = message.error
            logger.warning("server error %s: %s", error.code, error.message)

    async def _resubscribed(
        self, connection: Connection, resubscription: Resubscription, message: pb.ServerMessage
    ) -> None:
        resubscription.request_ids.discard(message.request_id)
        if message.WhichOneof("payload") == "error":
            error = message.error
            field_name = error.field if error.HasField("field") else None
            raise _Fatal(RequestFailed(error.code, error.message, field_name))
        if message.request_id != resubscription.final_request_id:
            return
        ack = message.ack
        resumed_from = resubscription.resumed_from
        if resumed_from is None:
            items = self._cursor.acknowledged(_position(ack))
        else:
            items = self._cursor.resumed(
                resumed_from,
                recovered=ack.recovered,
                position=_position(ack),
                replayed=ack.replayed,
            )
            if not ack.recovered:
                logger.warning("resume from %s was not recovered", resumed_from)
        connection.discarding_events = False
        await self._deliver(items)
        self._opened(connection, ack)

    async def _deliver(self, items: list[StreamItem]) -> None:
        for item in items:
            await self._channel.put(item)

    async def _refresh(self, connection: Connection) -> None:
        """Replace the connection's token before it expires, for as long as it lives."""
        options = self._options
        before = options.refresh_before_secs
        assert before is not None
        while (expires_at := connection.token_expires_at) is not None:
            await options.sleep(refresh_delay(expires_at, options.clock(), before))
            try:
                token = await self._token_provider()
            except Exception:
                logger.warning("the token provider failed; not refreshing", exc_info=True)
                return
            new_expiry = token_expiry(token)
            if new_expiry is not None and new_expiry <= expires_at:
                logger.warning("the token provider returned no later token; not refreshing")
                return
            try:
                refresh = pb.RefreshToken(token=token)
                await connection.request(
                    "refresh",
                    pb.ClientMessage(request_id=self.request_id(), refresh_token=refresh),
                )
            except RequestFailed as exc:
                logger.warning("the server refused the new token: %s", exc)
                return
            except ConnectionLost:
                return
            self._token, self._token_expires_at = token, new_expiry
            connection.token_expires_at = new_expiry
            logger.info("token refreshed")


def _refusal_message(status: int) -> str:
    if status == 401:
        return "the server refused the token (HTTP 401: missing, expired or invalid)"
    if status == 403:
        return "the server refused the connection (HTTP 403: origin or tenant not allowed)"
    return f"the server refused the upgrade (HTTP {status})"


def _unauthorized(outcome: _Outcome) -> bool:
    return isinstance(outcome, _Refused) and outcome.status == 401


def _position(ack: pb.Ack) -> Position | None:
    return Position.from_proto(ack.position) if ack.HasField("position") else None
