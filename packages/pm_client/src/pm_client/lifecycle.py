"""Where the client is: its state machine, and the report of a connection that ended."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Final

import pm_proto as pb

from pm_client.exceptions import PmClientError


class ClientState(enum.Enum):
    """Where the client is (`PmClient.state`); `Lifecycle` checks every transition.

    IDLE → CONNECTING → OPEN → WAITING → CONNECTING → ...; CONNECTING can fall
    back to WAITING; any state can end in CLOSED, which is final.
    """

    IDLE = "idle"
    """Built, not connected yet."""
    CONNECTING = "connecting"
    """A connection attempt (token, upgrade, Welcome, resubscription) is under way."""
    OPEN = "open"
    """Welcomed and resubscribed: events flow and requests are sent."""
    WAITING = "waiting"
    """Between attempts, waiting out the backoff."""
    CLOSED = "closed"
    """For good: closed by the application or by a terminal error."""


TRANSITIONS: Final[dict[ClientState, frozenset[ClientState]]] = {
    ClientState.IDLE: frozenset({ClientState.CONNECTING, ClientState.CLOSED}),
    ClientState.CONNECTING: frozenset({ClientState.OPEN, ClientState.WAITING, ClientState.CLOSED}),
    ClientState.OPEN: frozenset({ClientState.WAITING, ClientState.CLOSED}),
    ClientState.WAITING: frozenset({ClientState.CONNECTING, ClientState.CLOSED}),
    ClientState.CLOSED: frozenset(),
}


class Lifecycle:
    """The client's state, the error that ended it, and a way to wait for OPEN or CLOSED."""

    def __init__(self) -> None:
        self.state = ClientState.IDLE
        self.error: PmClientError | None = None
        self._settled = asyncio.Event()

    def move(self, state: ClientState) -> None:
        """Go to `state`.

        Raises:
            RuntimeError: The transition is not in `TRANSITIONS` (a bug).
        """
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"bad client state transition {self.state.name} → {state.name}")
        self.state = state
        if state in (ClientState.OPEN, ClientState.CLOSED):
            self._settled.set()
        else:
            self._settled.clear()

    def close(self, error: PmClientError | None = None) -> None:
        """Go to CLOSED (if not there yet), keeping the first error that ended the client."""
        if self.error is None:
            self.error = error
        if self.state is not ClientState.CLOSED:
            self.move(ClientState.CLOSED)

    async def settled(self) -> ClientState:
        """Wait until the client is OPEN or CLOSED; returns which."""
        await self._settled.wait()
        return self.state


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A welcomed connection ended; what `on_disconnect` receives.

    Attributes:
        connection_id: The server's id of the connection that ended.
        code: The close code (1006 when the connection dropped without a close frame).
        reason: The close frame's reason.
        closing: The `Closing` message the server sent before closing, if any.
        delay_secs: How long the client waits before reconnecting; None when it
            stops for good.
    """

    connection_id: str
    code: int
    reason: str
    closing: pb.Closing | None
    delay_secs: float | None

    @property
    def reconnect_after_ms(self) -> int:
        """The server's requested minimum delay (0 without a `Closing`)."""
        return self.closing.reconnect_after_ms if self.closing is not None else 0
