"""The client: one ordered event stream over WebSocket connections that come and go."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType

import aiohttp
import pm_proto as pb

from pm_client._channel import Channel
from pm_client._connection import Connection
from pm_client._supervisor import NORMAL_CLOSURE, AuthMode, LinkOptions, Supervisor
from pm_client.exceptions import ClientClosed, ConnectionLost, PmClientError, RequestFailed
from pm_client.lifecycle import ClientState, Disconnected, Lifecycle
from pm_client.reconnect import Backoff
from pm_client.stream import Position, StreamCursor, StreamItem
from pm_client.subscriptions import SubscriptionIds, SubscriptionSet
from pm_client.tokens import TokenProvider

__all__ = ["AuthMode", "PmClient"]


class PmClient:
    """A pm-realtime client that keeps one ordered, gap-aware event stream alive.

    ```python
    async with PmClient("ws://127.0.0.1:3000/ws", provider) as client:
        await client.subscribe(projects=["p1"])
        async for item in client.events():
            if isinstance(item, NotRecovered):
                ...  # refetch what you derive from events
            else:
                ...  # an Event
    ```

    Behaviour:

    - **Reconnect.** When a connection ends the client reconnects by itself,
      waiting `backoff` (exponential, jittered) and never less than the
      `Closing.reconnect_after_ms` the server sent. Close 4001 first asks the
      token provider for a new token, and so does an upgrade refused with 401.
      Terminal closes (4003, 4010, 1008, 1009 and protocol errors) end the
      stream with `ClientClosed`; upgrade refusals that retrying cannot fix
      (403, 404, a second 401 in a row with the provider's next token) and
      `Backoff.max_attempts` failed attempts in a row end it with
      `ConnectFailed`. A connection silent for twice the server's heartbeat
      interval is considered dead.
    - **Resume.** Every reconnection re-sends all subscriptions with
      `resume_from` = `position`; the server replays what was missed. When it
      cannot (`Ack.recovered` false: new epoch, history too short) the stream
      yields `NotRecovered` before anything else of the new connection. Within
      an epoch an event is never yielded twice and events come in `seq` order.
    - **Token refresh.** With `refresh_before_secs`, a `RefreshToken` carrying
      a token from the provider is sent `refresh_before_secs` before the
      current one expires (but no earlier than half its remaining life). A
      refused refresh is logged; the server then closes with 4001 at expiry
      and the client reconnects with a new token.
    - **Backpressure.** Events wait in a queue of `queue_size`; when it is full
      the reader stops reading, so the server's send queue fills instead. A
      consumer that stalls long enough is closed by the server (4008 slow
      client, or 4009 heartbeat timeout) and the client resumes where the
      queue left off. Answers to requests also wait behind a full queue.

    Args:
        url: The `ws://` or `wss://` URL of the gateway's `/ws` route.
        token_provider: Returns a token; awaited before the first connection,
            after a 4001 or 401, for each proactive refresh, and when the token
            in hand expires within a second. Its exceptions count as failed
            attempts (logged, retried with backoff).
        backoff: Delays between attempts, and an optional attempt limit.
        refresh_before_secs: How long before expiry to refresh the token; None
            turns proactive refresh off.
        auth: "header" sends `Authorization: Bearer`; "subprotocol" offers
            `pm.v1` and `pm.bearer.<token>` as browsers must.
        queue_size: How many stream items may wait for the consumer.
        connect_timeout: Seconds for one attempt to upgrade and get `Welcome`.
        close_timeout: Seconds to wait for the server's close frame on close.
        max_frame_bytes: The largest frame accepted from the server.
        session: An aiohttp session to use (not closed by the client); one is
            made (and closed) otherwise.
        rng: Randomness for jitter; seed it in tests.
        clock: Wall-clock seconds since the epoch, compared with token expiry.
        sleep: Waits out backoff and refresh delays; `asyncio.sleep` by default.
        on_connect: Called with each connection's `Welcome`. Exceptions are logged.
        on_disconnect: Called when a welcomed connection ended. Exceptions are logged.

    Raises:
        ValueError: A URL that is not ws:// or wss://, or a bad numeric argument.
    """

    def __init__(
        self,
        url: str,
        token_provider: TokenProvider,
        *,
        backoff: Backoff | None = None,
        refresh_before_secs: float | None = 60.0,
        auth: AuthMode = "header",
        queue_size: int = 1024,
        connect_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_frame_bytes: int = 32 * 1024 * 1024,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_connect: Callable[[pb.Welcome], None] | None = None,
        on_disconnect: Callable[[Disconnected], None] | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        if auth not in ("header", "subprotocol"):
            raise ValueError(f"auth must be 'header' or 'subprotocol', got {auth!r}")
        if refresh_before_secs is not None and not (
            math.isfinite(refresh_before_secs) and refresh_before_secs >= 0
        ):
            raise ValueError(f"refresh_before_secs must be ≥ 0 or None, got {refresh_before_secs}")
        for name, value in (("connect_timeout", connect_timeout), ("close_timeout", close_timeout)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        self._lifecycle = Lifecycle()
        self._channel: Channel[StreamItem] = Channel(queue_size)
        self._cursor = StreamCursor()
        self._subscriptions = SubscriptionSet()
        self._supervisor = Supervisor(
            LinkOptions(
                url=url,
                auth=auth,
                backoff=backoff or Backoff(),
                refresh_before_secs=refresh_before_secs,
                connect_timeout=connect_timeout,
                close_timeout=close_timeout,
                max_frame_bytes=max_frame_bytes,
                rng=rng or random.Random(),
                clock=clock,
                sleep=sleep,
                on_connect=on_connect,
                on_disconnect=on_disconnect,
            ),
            token_provider,
            lifecycle=self._lifecycle,
            channel=self._channel,
            cursor=self._cursor,
            subscriptions=self._subscriptions,
        )
        self._clock = clock
        self._own_session = session is None
        self._session = session
        self._task: asyncio.Task[None] | None = None
        self._shut = False

    @property
    def state(self) -> ClientState:
        """Where the client is now."""
        return self._lifecycle.state

    @property
    def position(self) -> Position | None:
        """Where a resume starts: the last event queued for the application, or a later Ack's.

        None before the first subscription is acknowledged.
        """
        return self._cursor.position

    @property
    def connection_id(self) -> str | None:
        """The server's id of the current connection; None between connections."""
        connection = self._supervisor.connection
        return connection.connection_id if connection is not None else None

    @property
    def welcome(self) -> pb.Welcome | None:
        """The current connection's `Welcome`; None between connections."""
        connection = self._supervisor.connection
        return connection.welcome if connection is not None else None

    @property
    def error(self) -> PmClientError | None:
        """Why the client stopped for good; None while it runs or after a clean close."""
        return self._lifecycle.error

    async def __aenter__(self) -> PmClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Connect and wait until the first connection is welcomed.

        Transient failures (connection refused, 5xx, 429) are retried with
        backoff, so this waits as long as the server is unreachable unless
        `Backoff.max_attempts` is set. `async with` calls it.

        Raises:
            ConnectFailed: The upgrade was refused for good, or the attempts ran out.
            ClientClosed: The first connection was closed with a terminal code.
            RuntimeError: Called twice.
        """
        if self._lifecycle.state is not ClientState.IDLE:
            raise RuntimeError("connect() may be called once")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._lifecycle.move(ClientState.CONNECTING)
        self._task = asyncio.create_task(self._supervisor.run(self._session), name="pm-client")
        try:
            await self._lifecycle.settled()
        except BaseException:
            await self.aclose()
            raise
        error = self._lifecycle.error
        if error is not None:
            await self.aclose()
            raise error

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop; the event iterator ends cleanly.

        Idempotent. Calls still waiting raise `ClientClosed(1000)` (`ConnectionLost`
        for a `ping` or `command` already sent).
        """
        if self._shut:
            return
        self._shut = True
        self._lifecycle.close()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._channel.close()
        if self._own_session and self._session is not None:
            await self._session.close()

    def events(self) -> AsyncIterator[StreamItem]:
        """The stream: `Event`s in order, and `NotRecovered` where events may be missing.

        Survives reconnections. Meant for one consumer at a time (two would
        share the items).

        Raises (from the iterator, after every item received before):
            ClientClosed: The server closed with a terminal code (4003, 4010, 1008, 1009...).
            ConnectFailed: Reconnecting failed for good.
            RequestFailed: The server refused the resubscription after a reconnect.
        """
        return _Items(self._channel)

    async def subscribe(
        self,
        *,
        projects: Iterable[str] = (),
        sprints: Iterable[str] = (),
        work_items: Iterable[str] = (),
    ) -> pb.Ack:
        """Receive the events of these projects, sprints and work items too.

        Returns once the server acknowledged the subscription — on the current
        connection, or, if that drops first, with the resubscription of the
        next one (whose `Ack` is returned). `Ack.recovered` only means something
        for such a resubscription (a plain subscription's is always False);
        losses reach the application as `NotRecovered` in `events()` anyway.
        More than 100 ids of a kind are sent in several messages; the last
        `Ack` is returned. The subscription is kept across reconnections until
        `unsubscribe`.

        Raises:
            ValueError: No ids, or an id that is empty, over 128 characters or
                has control characters.
            RequestFailed: The server refused it (e.g. `SUBSCRIPTION_LIMIT`);
                the ids it added are forgotten again.
            PmClientError: The client stopped for good (see `events`).
        """
        ids = SubscriptionIds.of(projects, sprints, work_items)
        if not ids:
            raise ValueError("subscribe needs at least one project, sprint or work item id")
        self._raise_if_stopped()
        added = self._subscriptions.add(ids)
        version = self._subscriptions.version
        try:
            while True:
                connection = await self._wait_open()
                ack = connection.resubscribe_ack
                if connection.covered_version >= version and ack is not None:
                    return ack
                try:
                    answer = pb.ServerMessage()
                    for message in ids.subscribe_messages():
                        answer = await connection.request(
                            "subscribe",
                            pb.ClientMessage(
                                request_id=self._supervisor.request_id(), subscribe=message
                            ),
                        )
                    return answer.ack
                except ConnectionLost:
                    continue
        except RequestFailed:
            self._subscriptions.remove(added)
            raise

    async def unsubscribe(
        self,
        *,
        projects: Iterable[str] = (),
        sprints: Iterable[str] = (),
        work_items: Iterable[str] = (),
    ) -> None:
        """Stop receiving the events of these ids (ids not subscribed are ignored).

        Forgotten at once for future reconnections; on a live connection this
        waits for the server's `Ack`. Events already queued stay queued.

        Raises:
            ValueError: An invalid id.
            RequestFailed: The server refused the message.
            PmClientError: The client stopped for good.
        """
        ids = SubscriptionIds.of(projects, sprints, work_items)
        self._raise_if_stopped()
        self._subscriptions.remove(ids)
        connection = self._supervisor.connection
        if not ids or connection is None:
            return
        with contextlib.suppress(ConnectionLost):
            for message in ids.unsubscribe_messages():
                await connection.request(
                    "unsubscribe",
                    pb.ClientMessage(request_id=self._supervisor.request_id(), unsubscribe=message),
                )

    async def ping(self) -> pb.Pong:
        """Send an application `Ping` and return the `Pong` (waits for an open connection).

        Raises:
            ConnectionLost: The connection dropped before the answer.
            RequestFailed: The server refused it (e.g. `RATE_LIMIT_EXCEEDED`).
            PmClientError: The client stopped for good.
        """
        connection = await self._wait_open()
        ping = pb.Ping(client_time_ms=int(self._clock() * 1000))
        answer = await connection.request(
            "ping", pb.ClientMessage(request_id=self._supervisor.request_id(), ping=ping)
        )
        return answer.pong

    async def command(self, name: str, body: bytes = b"") -> bytes:
        """Run a server-side command and return its result body (waits for an open connection).

        Not retried after a dropped connection: it may have run.

        Raises:
            RequestFailed: The server answered with `Error` (`UNKNOWN_COMMAND`, ...).
            ConnectionLost: The connection dropped before the answer.
            PmClientError: The client stopped for good.
        """
        connection = await self._wait_open()
        message = pb.ClientMessage(
            request_id=self._supervisor.request_id(), command=pb.Command(name=name, body=body)
        )
        answer = await connection.request("command", message)
        return answer.command_result.body

    def _raise_if_stopped(self) -> None:
        lifecycle = self._lifecycle
        if lifecycle.error is not None:
            raise lifecycle.error
        if lifecycle.state is ClientState.CLOSED:
            raise ClientClosed(NORMAL_CLOSURE, "the client was closed")
        if lifecycle.state is ClientState.IDLE:
            raise RuntimeError("connect first (or use `async with`)")

    async def _wait_open(self) -> Connection:
        while True:
            self._raise_if_stopped()
            connection = self._supervisor.connection
            if self._lifecycle.state is ClientState.OPEN and connection is not None:
                return connection
            await self._lifecycle.settled()


class _Items:
    """The async iterator behind `PmClient.events()`."""

    def __init__(self, channel: Channel[StreamItem]) -> None:
        self._channel = channel

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> StreamItem:
        return await self._channel.get()
