"""Errors of the engine, under one base class.

    PmWsError
    ├── BrokerError
    │   ├── BrokerUnavailable        the broker cannot be reached; retry later
    │   │   └── PublishOutcomeUnknown    a publish timed out after it was sent: it may be stored
    │   └── UnsupportedBrokerUrl     no backend for that URL scheme, or its extra is missing
    ├── LimitExceeded                a connection slot was refused (CONNECTION_LIMIT)
    └── ProtocolError                a client frame the engine will not process
        (code DECODE_ERROR, INVALID_MESSAGE, SUBSCRIPTION_LIMIT, UNKNOWN_COMMAND, …)

Every error carries a stable `code` and a `message` that is safe to send to a
client; internals (paths, stacks, keys) stay in logs.
"""

from __future__ import annotations

from typing import Literal


class PmWsError(Exception):
    """Base of every error the engine raises on purpose."""

    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class BrokerError(PmWsError):
    """A broker could not do what was asked."""


class BrokerUnavailable(BrokerError):
    """The broker is unreachable; the operation did not happen and may be retried."""

    code = "BROKER_UNAVAILABLE"


class PublishOutcomeUnknown(BrokerUnavailable):
    """A publish was sent but not answered in time: it may or may not have been stored.

    A broker that stalls longer than the timeout (a Redis busy in a slow script, a
    fork, `DEBUG SLEEP`) runs the command when it wakes, after the caller gave
    up. Nothing can tell which from here; retrying with the same `event_id` is
    safe (an id still in history is not published twice) and settles it.
    """

    code = "PUBLISH_OUTCOME_UNKNOWN"


class UnsupportedBrokerUrl(BrokerError):
    """No backend serves this URL, or the optional dependency it needs is missing."""

    code = "UNSUPPORTED_BROKER_URL"


class LimitExceeded(PmWsError):
    """A connection slot was refused: the tenant's limit, the global one, or draining."""

    code = "CONNECTION_LIMIT"

    def __init__(self, message: str, *, scope: Literal["tenant", "global", "draining"]) -> None:
        super().__init__(message)
        self.scope = scope


class ProtocolError(PmWsError):
    """A client frame that is answered with an `Error` instead of being processed.

    `request_id` is the id of the request it answers when the frame could be
    decoded far enough to tell, else empty.
    """

    code = "INVALID_MESSAGE"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message, code=code, field=field)
        self.request_id = request_id
