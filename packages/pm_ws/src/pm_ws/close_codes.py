"""Close reasons as data: the WebSocket close codes of the wire contract and what they mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pm_proto as pb


@dataclass(frozen=True, slots=True)
class CloseReason:
    """A close code and the short reason sent in the close frame (and in `Closing.code`).

    Codes 1000-1011 are RFC 6455's; 4000-4999 are ours (the range RFC 6455 leaves to
    applications). The table is `pm.v1.CloseCode` in proto/pm/v1/common.proto, which
    the clients read too; `reason` is the enum value's name without `CLOSE_CODE_`.
    Whether a client should reconnect after a code is the clients' decision (their
    reconnect policies), not the server's.
    """

    code: int
    reason: str


def _reason(code: pb.CloseCode) -> CloseReason:
    return CloseReason(int(code), pb.CloseCode.Name(code).removeprefix("CLOSE_CODE_"))


NORMAL: Final = _reason(pb.CloseCode.CLOSE_CODE_NORMAL)
SERVER_SHUTDOWN: Final = _reason(pb.CloseCode.CLOSE_CODE_SERVER_SHUTDOWN)
PROTOCOL_ERROR: Final = _reason(pb.CloseCode.CLOSE_CODE_PROTOCOL_ERROR)
POLICY_VIOLATION: Final = _reason(pb.CloseCode.CLOSE_CODE_POLICY_VIOLATION)
MESSAGE_TOO_BIG: Final = _reason(pb.CloseCode.CLOSE_CODE_MESSAGE_TOO_BIG)
INTERNAL_ERROR: Final = _reason(pb.CloseCode.CLOSE_CODE_INTERNAL_ERROR)
TOKEN_EXPIRED: Final = _reason(pb.CloseCode.CLOSE_CODE_TOKEN_EXPIRED)
IDENTITY_CHANGED: Final = _reason(pb.CloseCode.CLOSE_CODE_IDENTITY_CHANGED)
SLOW_CLIENT: Final = _reason(pb.CloseCode.CLOSE_CODE_SLOW_CLIENT)
HEARTBEAT_TIMEOUT: Final = _reason(pb.CloseCode.CLOSE_CODE_HEARTBEAT_TIMEOUT)
OPERATOR_DISCONNECT: Final = _reason(pb.CloseCode.CLOSE_CODE_DISCONNECTED_BY_OPERATOR)
BROADCAST_LAGGED: Final = _reason(pb.CloseCode.CLOSE_CODE_BROADCAST_LAGGED)

SERVER_CODES: Final = frozenset(
    code for code in pb.CloseCode.values() if code != pb.CloseCode.CLOSE_CODE_UNSPECIFIED
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
