"""Which connection a log line is about, carried in a context variable."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from pm_ws.events import ConnectionId, TenantId, UserId


@dataclass(frozen=True, slots=True)
class ConnectionLogContext:
    """The identity every log line about one connection carries."""

    tenant_id: TenantId
    connection_id: ConnectionId
    user_id: UserId


connection_log_context: ContextVar[ConnectionLogContext | None] = ContextVar(
    "pm_ws_connection", default=None
)
"""Set by the engine for the lifetime of each connection's task.

The engine never formats these ids into messages: a logging filter of the
embedding application (pm_server's, for one) reads this variable and adds them
to each record, so every line logged while serving a connection names it.
"""
