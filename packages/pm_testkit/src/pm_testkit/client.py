"""A pm.v1 WebSocket client for tests: every wait has a deadline, nothing received is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pm_proto as pb
from multidict import CIMultiDict, CIMultiDictProxy
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pm_testkit.waiting import WAIT_SECS

__all__ = [
    "Client",
    "HttpAnswer",
    "OpenClients",
    "connect",
    "event_ids",
    "open_client",
    "refused",
    "seqs",
]


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP answer as received: status, headers and the whole body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (raises on other bytes)."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (raises `ValueError` when it is not)."""
        return json.loads(self.body)


class Client:
    """A pm.v1 connection (a `websockets` client) as a test drives it.

    Messages that arrive while `request` waits for its answer are kept, and
    later `recv` calls return them first: nothing is skipped or reordered.
    Every read waits at most `within` seconds (`WAIT_SECS` by default) and
    then fails with `TimeoutError`.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome = pb.Welcome()
        self._request_ids = 0
        self._pending: deque[pb.ServerMessage] = deque()
        self._reading = True

    async def _read(self, within: float) -> pb.ServerMessage:
        data = await asyncio.wait_for(self.ws.recv(), within)
        assert isinstance(data, bytes), f"expected a binary frame, got {data!r}"
        return pb.ServerMessage.FromString(data)

    async def recv(self, within: float = WAIT_SECS) -> pb.ServerMessage:
        """The next server message; raises `ConnectionClosed` once the server closed."""
        if self._pending:
            return self._pending.popleft()
        return await self._read(within)

    async def recv_kind(self, kind: str) -> pb.ServerMessage:
        """The next message, which must carry the payload `kind` ("event", "error", ...)."""
        message = await self.recv()
        assert message.WhichOneof("payload") == kind, message
        return message

    async def send(self, message: pb.ClientMessage) -> str:
        """Send `message`, numbered `r1`, `r2`, ... unless it has a request id; that id."""
        if not message.request_id:
            self._request_ids += 1
            message.request_id = f"r{self._request_ids}"
        await self.ws.send(message.SerializeToString())
        return message.request_id

    async def request(self, message: pb.ClientMessage) -> pb.ServerMessage:
        """Send `message` and return its answer; events that come first stay queued for `recv`.

        Anything else than an event before the answer fails the test.
        """
        request_id = await self.send(message)
        deadline = time.monotonic() + WAIT_SECS
        held: list[pb.ServerMessage] = []
        while True:
            answer = await self._read(max(0.0, deadline - time.monotonic()))
            if answer.request_id == request_id:
                self._pending.extend(held)
                return answer
            assert answer.WhichOneof("payload") == "event", answer
            held.append(answer)

    async def subscribe(
        self,
        projects: Sequence[str] = (),
        sprints: Sequence[str] = (),
        items: Sequence[str] = (),
        *,
        resume_from: pb.StreamPosition | None = None,
    ) -> pb.Ack:
        """Subscribe (and resume from `resume_from`); the `Ack`, which must be what came back."""
        subscribe = pb.Subscribe(project_ids=projects, sprint_ids=sprints, work_item_ids=items)
        if resume_from is not None:
            subscribe.resume_from.CopyFrom(resume_from)
        answer = await self.request(pb.ClientMessage(subscribe=subscribe))
        assert answer.WhichOneof("payload") == "ack", answer
        return answer.ack

    async def events(self, count: int) -> list[pb.Event]:
        """The next `count` messages, each of which must be an event."""
        return [(await self.recv_kind("event")).event for _ in range(count)]

    async def expect_nothing_pending(self) -> None:
        """Ping and see the Pong come next: nothing was queued for this client before it.

        The server handles a connection's frames in order and fans events out
        before a publish is answered, so an event that was going to reach this
        client would be ahead of the Pong.
        """
        request_id = await self.send(pb.ClientMessage(ping=pb.Ping(client_time_ms=1)))
        answer = await self.recv()
        assert answer.WhichOneof("payload") == "pong", f"expected only a Pong, got {answer}"
        assert answer.request_id == request_id

    async def until_closed(self) -> tuple[int, list[pb.ServerMessage]]:
        """Read until the server closes; the close code and every message before it."""
        seen: list[pb.ServerMessage] = list(self._pending)
        self._pending.clear()
        deadline = time.monotonic() + WAIT_SECS
        while True:
            try:
                seen.append(await self._read(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed as closed:
                received = closed.rcvd
                break
        assert received is not None, f"closed without a close frame after {seen}"
        return received.code, seen

    async def expect_close(self, code: int, *kinds: str) -> list[pb.ServerMessage]:
        """Read until the server closes; it must close with `code` after messages of `kinds`.

        `kinds` are the payload kinds of every message before the close, in
        order ("closing", or "error", "closing"); those messages are returned.
        """
        closed_with, seen = await self.until_closed()
        assert closed_with == code, f"closed with {closed_with}, not {code}, after {seen}"
        assert [m.WhichOneof("payload") for m in seen] == list(kinds), seen
        return seen

    def stop_reading(self) -> None:
        """Stop reading the socket: the server's writes pile up in the TCP buffers."""
        self._reading = False
        self.ws.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again: what the server wrote meanwhile (its close frame, say) comes in."""
        self._reading = True
        self.ws.transport.resume_reading()

    async def close(self) -> None:
        """Close politely when the client still reads (else no handshake can end), then abort."""
        if self._reading:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        self.ws.transport.abort()


class OpenClients:
    """The clients a test opened, so that they are closed whatever happened in it."""

    def __init__(self) -> None:
        self._clients: list[Client] = []

    def add(self, client: Client) -> None:
        """Close `client` at the next `close_all`."""
        self._clients.append(client)

    async def close_all(self) -> None:
        """Close every client added since the last call (errors of one don't stop the rest)."""
        clients, self._clients = self._clients, []
        await asyncio.gather(*(client.close() for client in clients))


async def open_client(
    url: str,
    token: str | None = None,
    *,
    subprotocol: bool = False,
    track: OpenClients | None = None,
    **kwargs: Any,
) -> Client:
    """Upgrade to `url` with `token` in the Authorization header (or as the browser subprotocol).

    No Welcome is read. `kwargs` go to `websockets`' `connect` (`origin`,
    `additional_headers`, `subprotocols`, ...). Raises `InvalidStatus` when the
    server refuses the upgrade.
    """
    if token is not None and subprotocol:
        kwargs["subprotocols"] = ["pm.v1", f"pm.bearer.{token}"]
    elif token is not None:
        headers = dict(kwargs.pop("additional_headers", None) or {})
        headers["Authorization"] = f"Bearer {token}"
        kwargs["additional_headers"] = headers
    ws = await ws_connect(
        url,
        proxy=None,
        ping_interval=None,
        max_size=None,
        open_timeout=WAIT_SECS,
        close_timeout=2,
        **kwargs,
    )
    client = Client(ws)
    if track is not None:
        track.add(client)
    return client


async def connect(url: str, token: str, **kwargs: Any) -> Client:
    """`open_client`, then read the Welcome, which must come first (kept as `client.welcome`)."""
    client = await open_client(url, token, **kwargs)
    client.welcome = (await client.recv_kind("welcome")).welcome
    return client


async def refused(url: str, token: str | None = None, **kwargs: Any) -> HttpAnswer:
    """Attempt an upgrade that must be refused; the HTTP answer it got instead.

    Fails the test (after closing the connection) when the upgrade is accepted.
    """
    try:
        client = await open_client(url, token, **kwargs)
    except InvalidStatus as refusal:
        response = refusal.response
        headers = CIMultiDictProxy(CIMultiDict(response.headers.raw_items()))
        return HttpAnswer(response.status_code, headers, bytes(response.body))
    await client.close()
    raise AssertionError("the upgrade was accepted")


def event_ids(events: Iterable[pb.Event]) -> list[str]:
    """The events' ids, in order: what a test compares with what it published."""
    return [event.event_id for event in events]


def seqs(events: Iterable[pb.Event]) -> list[int]:
    """The events' positions in their stream, in order."""
    return [event.position.seq for event in events]
