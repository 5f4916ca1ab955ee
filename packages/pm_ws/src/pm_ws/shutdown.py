"""Draining a process: stop admitting, say goodbye to every connection, cut the rest."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Iterable

from pm_ws import close_codes
from pm_ws.registry import ConnectionRegistry
from pm_ws.session import Session

logger = logging.getLogger(__name__)


class ShutdownState(enum.Enum):
    """Forward-only: RUNNING → DRAINING → STOPPED."""

    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class ShutdownCoordinator:
    """Runs the drain of SPEC §4 once, however many times it is asked.

    Each connection's queued events are flushed, then it gets
    `Closing{SERVER_SHUTDOWN, reconnect_after_ms}` with jitter (so a fleet of
    clients doesn't reconnect in one wave) and close 1001; at most
    `concurrency` closing handshakes run at once. Connections still open after
    `timeout_secs` are cut.
    """

    def __init__(
        self,
        registry: ConnectionRegistry[Session],
        *,
        timeout_secs: float = 30.0,
        concurrency: int = 256,
        reconnect_after_ms: tuple[int, int] = (1_000, 5_000),
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._timeout = timeout_secs
        self._concurrency = concurrency
        self._reconnect_range = reconnect_after_ms
        self._rng = rng or random.Random()
        self.state = ShutdownState.RUNNING
        self._drained: asyncio.Future[int] | None = None

    @property
    def draining(self) -> bool:
        """True from the first trigger on: readiness reports 503 and upgrades are refused."""
        return self.state is not ShutdownState.RUNNING

    def begin(self) -> None:
        """Stop admitting connections, at once. Idempotent."""
        if self.state is ShutdownState.RUNNING:
            self.state = ShutdownState.DRAINING
            self._registry.stop_admitting()

    async def drain(self) -> int:
        """Close every connection; returns how many had to be cut at the deadline.

        Concurrent and repeated calls share the one drain.
        """
        self.begin()
        if self._drained is None:
            self._drained = asyncio.ensure_future(self._drain(list(self._registry)))
        return await asyncio.shield(self._drained)

    async def _drain(self, sessions: Iterable[Session]) -> int:
        gate = asyncio.Semaphore(self._concurrency)
        low, high = self._reconnect_range

        async def say_goodbye(session: Session) -> None:
            async with gate:
                session.close(
                    close_codes.SERVER_SHUTDOWN,
                    "the server is shutting down; reconnect and resume",
                    reconnect_after_ms=self._rng.randint(low, high),
                )
                await session.wait_finished()

        sessions = list(sessions)
        tasks = [asyncio.ensure_future(say_goodbye(s)) for s in sessions]
        if tasks:
            await asyncio.wait(tasks, timeout=self._timeout)
        for task in tasks:
            task.cancel()
        cut = [s for s in sessions if not s.finished]
        for session in cut:
            session.socket.abort()
        if cut:
            logger.warning("cut %d connections still open at the shutdown deadline", len(cut))
        self.state = ShutdownState.STOPPED
        return len(cut)
