"""One WebSocket connection of the client: frames out, answers matched to their requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import pm_proto as pb

from pm_client.exceptions import ConnectionLost, RequestFailed
from pm_client.stream import Position

RequestKind = Literal["subscribe", "unsubscribe", "ping", "refresh", "command"]


@dataclass(slots=True)
class _Pending:
    kind: RequestKind
    answer: asyncio.Future[pb.ServerMessage]


@dataclass(slots=True)
class Resubscription:
    """The `Subscribe` messages that restore the client's subscriptions on this connection."""

    request_ids: set[str]
    final_request_id: str
    resumed_from: Position | None
    version: int


@dataclass(eq=False, slots=True)
class Connection:
    """An upgraded WebSocket and what the client knows about it.

    Requests wait on futures keyed by `request_id`; `fail_pending` ends them
    with `ConnectionLost` when the socket goes. Sending never waits for an
    answer, so the reader can send (the resubscription) while it reads.
    """

    ws: aiohttp.ClientWebSocketResponse[Any]
    welcome: pb.Welcome | None = None
    closing: pb.Closing | None = None
    close_code: int | None = None
    close_reason: str = ""
    token_expires_at: float | None = None
    resubscription: Resubscription | None = None
    resubscribe_ack: pb.Ack | None = None
    covered_version: int = -1
    discarding_events: bool = False
    opened: bool = False
    pending: dict[str, _Pending] = field(default_factory=dict)

    @property
    def connection_id(self) -> str:
        """The server's id for this connection, once welcomed ("" before)."""
        return self.welcome.connection_id if self.welcome is not None else ""

    async def send(self, message: pb.ClientMessage) -> None:
        """Write one frame.

        Raises:
            ConnectionLost: The socket is closing or closed.
        """
        if self.ws.closed:
            raise ConnectionLost("the connection is closed")
        try:
            await self.ws.send_bytes(message.SerializeToString())
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionLost("the connection dropped while sending") from exc

    async def request(self, kind: RequestKind, message: pb.ClientMessage) -> pb.ServerMessage:
        """Send `message` (its `request_id` set) and return the server's answer.

        Raises:
            RequestFailed: The server answered with `Error`.
            ConnectionLost: The connection ended before the answer.
        """
        answer: asyncio.Future[pb.ServerMessage] = asyncio.get_running_loop().create_future()
        self.pending[message.request_id] = _Pending(kind, answer)
        try:
            await self.send(message)
            return await answer
        finally:
            self.pending.pop(message.request_id, None)

    def answered(self, message: pb.ServerMessage) -> RequestKind | None:
        """Settle the request `message` answers; returns its kind, None if nobody asked."""
        pending = self.pending.get(message.request_id)
        if pending is None or pending.answer.done():
            return None
        if message.WhichOneof("payload") == "error":
            error = message.error
            field_name = error.field if error.HasField("field") else None
            pending.answer.set_exception(RequestFailed(error.code, error.message, field_name))
        else:
            pending.answer.set_result(message)
        return pending.kind

    def fail_pending(self) -> None:
        """End every request still waiting with `ConnectionLost`."""
        for pending in self.pending.values():
            if not pending.answer.done():
                pending.answer.set_exception(ConnectionLost("the connection dropped"))
        self.pending.clear()
