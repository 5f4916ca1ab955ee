"""When to reconnect and how long to wait: pure decisions, no socket and no clock."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Final

import pm_proto as pb
from aiohttp import WSCloseCode

TERMINAL_CLOSE_CODES: Final = frozenset(
    {
        pb.CloseCode.CLOSE_CODE_IDENTITY_CHANGED,
        pb.CloseCode.CLOSE_CODE_DISCONNECTED_BY_OPERATOR,
        pb.CloseCode.CLOSE_CODE_POLICY_VIOLATION,
        pb.CloseCode.CLOSE_CODE_MESSAGE_TOO_BIG,
        pb.CloseCode.CLOSE_CODE_PROTOCOL_ERROR,
        WSCloseCode.UNSUPPORTED_DATA,
        WSCloseCode.INVALID_TEXT,
        WSCloseCode.MANDATORY_EXTENSION,
    }
)
"""Close codes after which reconnecting cannot help (SPEC §2: 4003, 4010; 1008 and
1009 mean this client broke the rules; 1002, 1003, 1007 and 1010 mean the two sides
don't speak the same protocol). The server's codes come from `pm.v1.CloseCode`;
1003, 1007 and 1010 are RFC 6455's, which only a WebSocket layer sends."""


class Disposition(enum.Enum):
    """What the client does after a connection ended or an attempt failed."""

    RECONNECT = "reconnect"
    """Wait (backoff, at least `reconnect_after_ms`) and connect again, then resume."""
    NEW_TOKEN = "new_token"  # noqa: S105 - a name, not a password
    """Ask the token provider for a fresh token, then reconnect and resume."""
    TERMINAL = "terminal"
    """Stop: the error goes to the application."""


def close_disposition(code: int) -> Disposition:
    """What to do after the server closed the connection with `code`.

    4001 needs a new token; the codes of `TERMINAL_CLOSE_CODES` end the client;
    every other code reconnects — the ones SPEC §2 names (1001, 1011, 4008, 4009,
    4011), an abnormal end (1006, no close frame), and codes this client does not
    know (a proxy's 1000 or 1012, a future server's 4xxx), because an unknown
    close is more often a hiccup than a verdict and backoff bounds the cost.
    """
    if code == pb.CloseCode.CLOSE_CODE_TOKEN_EXPIRED:
        return Disposition.NEW_TOKEN
    if code in TERMINAL_CLOSE_CODES:
        return Disposition.TERMINAL
    return Disposition.RECONNECT


def refusal_disposition(status: int) -> Disposition:
    """What to do when the server answered the upgrade with HTTP `status` (SPEC §3).

    401 (missing, expired or bad token) asks for a new token; 429 (tenant at its
    connection limit), 408 and any 5xx (global limit, draining, a proxy between
    deploys) retry with backoff; every other status (403 origin or tenant not
    allowed, 404 wrong path, 400 ...) is terminal.
    """
    if status == 401:
        return Disposition.NEW_TOKEN
    if status in (408, 429) or 500 <= status <= 599:
        return Disposition.RECONNECT
    return Disposition.TERMINAL


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between reconnect attempts.

    Attempt `n` (0 for the first retry after a connection ended) waits
    `min(max, initial × multiplier**n)` scaled down by a random factor in
    `(1 - jitter, 1]`: `jitter=0` is no randomness, `jitter=1` is "full
    jitter". Jitter spreads a fleet of clients that lost the same server.

    Attributes:
        initial: The ceiling of the first wait, in seconds.
        max: The ceiling of every wait, in seconds.
        multiplier: How much the ceiling grows per failed attempt.
        jitter: The fraction of the ceiling that is random, 0..1.
        max_attempts: How many consecutive failed connection attempts end the
            client with `ConnectFailed`; None retries forever.
    """

    initial: float = 0.2
    max: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial >= 0):
            raise ValueError(f"initial must be a finite number ≥ 0, got {self.initial}")
        if not (math.isfinite(self.max) and self.max >= self.initial):
            raise ValueError(f"max must be finite and ≥ initial, got {self.max}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"multiplier must be ≥ 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be from 0 to 1, got {self.jitter}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be ≥ 1 or None, got {self.max_attempts}")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number `attempt` (0-based), jitter aside."""
        if attempt < 0:
            raise ValueError(f"attempt must be ≥ 0, got {attempt}")
        try:
            grown = self.initial * self.multiplier**attempt
        except OverflowError:  # thousands of failures in a row: long since at `max`
            return self.max
        return min(self.max, grown)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number `attempt`, jittered with `rng`."""
        return self.ceiling(attempt) * (1.0 - self.jitter * rng.random())


def reconnect_delay(
    backoff: Backoff, attempt: int, rng: random.Random, *, reconnect_after_ms: int = 0
) -> float:
    """Seconds to wait before reconnecting: the backoff delay, but never less than the server asked.

    `reconnect_after_ms` comes from the `Closing` message that preceded the
    close (0 when there was none); the server spreads its clients with it
    during a drain, so it is a floor, not a replacement for the backoff.
    """
    return max(backoff.delay(attempt, rng), max(0, reconnect_after_ms) / 1000.0)
