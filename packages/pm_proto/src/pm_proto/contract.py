"""The rules of the pm.v1 contract that no .proto can state: id, size and name limits (SPEC §2, §3).

Hand-written, beside the generated code of `pm_proto.v1` (tools/gen_proto.py writes
only there). The engine, the server's configuration, the JWT claims and the Python
client all check these rules through this module, so they cannot drift apart; the
browser client states them in TypeScript (clients/js/src/subscriptions.ts).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BEARER_SUBPROTOCOL_PREFIX",
    "COMMAND_NAME_PATTERN",
    "MAX_IDS_PER_LIST",
    "MAX_ID_CHARS",
    "MAX_REQUEST_ID_CHARS",
    "MAX_TOKEN_BYTES",
    "MIN_HS256_SECRET_BYTES",
    "SUBPROTOCOL",
    "has_control_characters",
    "is_valid_command_name",
    "is_valid_id",
    "is_valid_request_id",
]

MAX_ID_CHARS: Final = 128
"""Longest id, in characters: tenant, user, project, sprint, work item, event, epoch, jti, role."""

MAX_REQUEST_ID_CHARS: Final = 64
"""Longest `request_id`, in characters; it may be empty."""

MAX_IDS_PER_LIST: Final = 100
"""Most ids in one id list of one `Subscribe` or `Unsubscribe`; longer lists take several."""

MAX_TOKEN_BYTES: Final = 8 * 1024
"""Longest token, in bytes, in an upgrade request or a `RefreshToken`."""

MIN_HS256_SECRET_BYTES: Final = 32
"""Shortest HS256 secret the server accepts, in bytes of UTF-8."""

COMMAND_NAME_PATTERN: Final = "[a-z][a-z0-9_.]{0,63}"
"""What a `Command.name` must match, whole."""

SUBPROTOCOL: Final = "pm.v1"
"""The WebSocket subprotocol a client offers and the server selects."""

BEARER_SUBPROTOCOL_PREFIX: Final = "pm.bearer."
"""Followed by the token, the subprotocol carrying it for browsers (which cannot set headers)."""

# Cc (C0 controls, DEL, C1 controls) and Cs (surrogates: alone they are not text, and
# UTF-8 cannot encode them; they come from JSON escapes or undecodable environment bytes).
_FORBIDDEN: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_COMMAND_NAME: Final = re.compile(COMMAND_NAME_PATTERN)


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a character no id or request_id may hold.

    Those are the control characters (Unicode category Cc: C0, DEL and C1) and
    lone surrogates (Cs), which are not text: UTF-8, and so protobuf, cannot
    carry them.
    """
    return _FORBIDDEN.search(text) is not None


def is_valid_id(value: str) -> bool:
    """Whether `value` is a valid opaque id: 1 to `MAX_ID_CHARS` characters, no control character.

    Ids are compared as given: no normalisation, case folding or trimming.
    """
    return 0 < len(value) <= MAX_ID_CHARS and _FORBIDDEN.search(value) is None


def is_valid_request_id(value: str) -> bool:
    """Whether `value` may be a `request_id`: at most 64 characters, no control character."""
    return len(value) <= MAX_REQUEST_ID_CHARS and _FORBIDDEN.search(value) is None


def is_valid_command_name(name: str) -> bool:
    """Whether `name` may name a command: `COMMAND_NAME_PATTERN`, whole."""
    return _COMMAND_NAME.fullmatch(name) is not None
