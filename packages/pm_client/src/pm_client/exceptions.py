"""The client's errors, all under one base class.

PmClientError
├── ClientClosed       the connection ended for good (terminal close code, or closed here)
├── ConnectFailed      the upgrade was refused for good, or reconnect attempts ran out
├── RequestFailed      the server answered a request with `Error`
└── ConnectionLost     the connection dropped before a non-repeatable request was answered
"""

from __future__ import annotations


class PmClientError(Exception):
    """Base class of every error this package raises on purpose."""


class ClientClosed(PmClientError):
    """The client stopped for good; it will not reconnect.

    Raised out of `PmClient.events()` (after every event received before it) and
    by any later call. `code` is the WebSocket close code: a terminal one sent by
    the server (4003 token for another identity, 4010 disconnected by an
    operator, 1008 policy, 1009 too big, ...), or 1000 when the application
    closed the client itself.

    Attributes:
        code: The WebSocket close code.
        reason: The close frame's reason, or the `Closing` message when there was one.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection closed for good with {self.code}" + (
            f" ({self.reason})" if self.reason else ""
        )


class ConnectFailed(PmClientError):
    """The client could not connect and will not try again.

    Either the server refused the upgrade in a way retrying cannot fix (403, a
    404 for a wrong URL, a second 401 in a row with the provider's next token), or
    `Backoff.max_attempts` consecutive attempts failed.

    Attributes:
        status: The HTTP status of the refusal, or None when no response came
            (connection refused, timeout, attempts exhausted).
        message: What went wrong, safe to show (never the token).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestFailed(PmClientError):
    """The server answered a request with `Error` (SPEC §2 codes).

    Attributes:
        code: The stable error code, e.g. `SUBSCRIPTION_LIMIT`, `INVALID_MESSAGE`.
        message: The server's client-safe message.
        field: The offending field, when the server named one.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(code, message, field)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.code}: {self.message}{where}"


class ConnectionLost(PmClientError):
    """The connection dropped before the answer to a `ping` or `command` came.

    The client reconnects by itself; a command is not sent again because it may
    already have run.
    """
