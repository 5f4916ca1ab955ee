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
PROTOCOL_ERROR: Final = CloseReason(1002, "PROTOCOL_ERROR", reconnect=False)
POLICY_VIOLATION: Final = CloseReason(1008, "POLICY_VIOLATION", reconnect=False)
MESSAGE_TOO_BIG: Final = CloseReason(1009, "MESSAGE_TOO_BIG", reconnect=False)
INTERNAL_ERROR: Final = CloseReason(1011, "INTERNAL_ERROR", reconnect=True)
TOKEN_EXPIRED: Final = CloseReason(4001, "TOKEN_EXPIRED", reconnect=False)
IDENTITY_CHANGED: Final = CloseReason(4003, "IDENTITY_CHANGED", reconnect=False)
SLOW_CLIENT: Final = CloseReason(4008, "SLOW_CLIENT", reconnect=True)
HEARTBEAT_TIMEOUT: Final = CloseReason(4009, "HEARTBEAT_TIMEOUT", reconnect=True)
OPERATOR_DISCONNECT: Final = CloseReason(4010, "DISCONNECTED_BY_OPERATOR", reconnect=False)
BROADCAST_LAGGED: Final = CloseReason(4011, "BROADCAST_LAGGED", reconnect=True)

SERVER_CODES: Final = frozenset(
    reason.code
    for reason in (
        NORMAL,
        SERVER_SHUTDOWN,
        PROTOCOL_ERROR,
        POLICY_VIOLATION,
        MESSAGE_TOO_BIG,
        INTERNAL_ERROR,
        TOKEN_EXPIRED,
        IDENTITY_CHANGED,
        SLOW_CLIENT,
        HEARTBEAT_TIMEOUT,
        OPERATOR_DISCONNECT,
        BROADCAST_LAGGED,
    )
)
"""Every code this server closes with."""

NO_STATUS: Final = 0
"""What aiohttp reports for a close frame without a status code (RFC 6455 allows it)."""

# RFC 6455 §7.4.1 and the IANA registry: codes a peer may put in its close frame.
# 1004 is reserved, 1005, 1006 and 1015 must never be sent, 1016-2999 are reserved
# for future RFCs, and nothing is defined at 5000 or above.
_SENDABLE_RFC_CODES: Final = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def is_valid_peer_code(code: int) -> bool:
    """Whether a client may close with `code`; any other is a protocol error (close 1002)."""
    return code == NO_STATUS or code in _SENDABLE_RFC_CODES or 3000 <= code <= 4999


def metric_label(code: int) -> str:
    """The `code` label for a closed connection: bounded, whatever a client sends.

    The server's own codes and RFC 6455's 1000-1015 are labelled as themselves;
    anything else a client chose (3000-4999 are theirs to pick) is `other`, so a
    client can't mint new metric series.
    """
    if code in SERVER_CODES or 1000 <= code <= 1015:
        return str(code)
    return "other"
