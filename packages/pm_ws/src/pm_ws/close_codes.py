"""Close reasons as data: the WebSocket close codes of the wire contract and what they mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class CloseReason:
    """A close code, the short reason sent in the close frame, and whether a client should retry.

    Codes 1000-1011 are RFC 6455's; 4000-4999 are ours (the range RFC 6455 leaves to
    applications). `reconnect` is the advice of SPEC §2: reconnect (and resume) after
    1001, 1011, 4008, 4009 and 4011; 4001 needs a new token first; 4003 and 4010 are
    terminal.
    """

    code: int
    reason: str
    reconnect: bool


NORMAL: Final = CloseReason(1000, "NORMAL", reconnect=False)
SERVER_SHUTDOWN: Final = CloseReason(1001, "SERVER_SHUTDOWN", reconnect=True)
POLICY_VIOLATION: Final = CloseReason(1008, "POLICY_VIOLATION", reconnect=False)
MESSAGE_TOO_BIG: Final = CloseReason(1009, "MESSAGE_TOO_BIG", reconnect=False)
INTERNAL_ERROR: Final = CloseReason(1011, "INTERNAL_ERROR", reconnect=True)
TOKEN_EXPIRED: Final = CloseReason(4001, "TOKEN_EXPIRED", reconnect=False)
IDENTITY_CHANGED: Final = CloseReason(4003, "IDENTITY_CHANGED", reconnect=False)
SLOW_CLIENT: Final = CloseReason(4008, "SLOW_CLIENT", reconnect=True)
HEARTBEAT_TIMEOUT: Final = CloseReason(4009, "HEARTBEAT_TIMEOUT", reconnect=True)
OPERATOR_DISCONNECT: Final = CloseReason(4010, "DISCONNECTED_BY_OPERATOR", reconnect=False)
BROADCAST_LAGGED: Final = CloseReason(4011, "BROADCAST_LAGGED", reconnect=True)
