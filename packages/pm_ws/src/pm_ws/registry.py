"""Who is connected: slots reserved against the limits, and the live connections."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pm_ws.events import ConnectionId, TenantId
from pm_ws.exceptions import LimitExceeded


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One connection as the admin endpoint shows it (SPEC §4)."""

    connection_id: str
    tenant_id: str
    user_id: str
    remote: str
    connected_at_ms: int
    project_ids: tuple[str, ...]
    sprint_ids: tuple[str, ...]
    work_item_ids: tuple[str, ...]
    queue_depth: int


class Registrable(Protocol):
    """What the registry needs of a connection."""

    @property
    def connection_id(self) -> ConnectionId:
        """The connection's unique id."""

    @property
    def tenant_id(self) -> TenantId:
        """The tenant the connection belongs to."""

    def describe(self) -> ConnectionInfo:
        """The connection as the admin endpoint shows it."""


C = TypeVar("C", bound=Registrable)


class SlotReservation(Generic[C]):
    """A connection slot held for one upgrade, from before the handshake to the close.

    `release` is idempotent and must run on every path (refusal, failed
    handshake, crash, close): use the reservation as a context manager.
    """

    __slots__ = ("_connection", "_registry", "_released", "tenant_id")

    def __init__(self, registry: ConnectionRegistry[C], tenant_id: TenantId) -> None:
        self._registry = registry
        self.tenant_id = tenant_id
        self._connection: C | None = None
        self._released = False

    def attach(self, connection: C) -> None:
        """Register the connection that now occupies the slot."""
        if self._released or self._connection is not None:
            raise RuntimeError("slot already released or taken")
        self._connection = connection
        self._registry._connections[connection.connection_id] = connection

    def release(self) -> None:
        """Give the slot back and forget the connection."""
        if self._released:
            return
        self._released = True
        self._registry._release(self.tenant_id, self._connection)

    def __enter__(self) -> SlotReservation[C]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ConnectionRegistry(Generic[C]):
    """Connection slots per tenant and in total, and the connections holding them.

    A slot is reserved synchronously before the upgrade handshake, so however
    many upgrades race, at most the limit succeed; the reservation later
    carries the connection. Not thread-safe: use it from the event loop only.
    """

    def __init__(self, *, max_connections: int, max_connections_per_tenant: int) -> None:
        self.max_connections = max_connections
        self.max_connections_per_tenant = max_connections_per_tenant
        self._reserved = 0
        self._per_tenant: dict[TenantId, int] = {}
        self._connections: dict[ConnectionId, C] = {}
        self._admitting = True

    def reserve(self, tenant_id: TenantId) -> SlotReservation[C]:
        """Take a slot for a connection of `tenant_id`.

        Raises:
            LimitExceeded: with scope "draining" after `stop_admitting`, "global" at
                the process's limit, "tenant" at the tenant's.
        """
        if not self._admitting:
            raise LimitExceeded("the server is shutting down", scope="draining")
        if self._reserved >= self.max_connections:
            raise LimitExceeded("the server is at its connection limit", scope="global")
        held = self._per_tenant.get(tenant_id, 0)
        if held >= self.max_connections_per_tenant:
            raise LimitExceeded("the tenant is at its connection limit", scope="tenant")
        self._reserved += 1
        self._per_tenant[tenant_id] = held + 1
        return SlotReservation(self, tenant_id)

    def stop_admitting(self) -> None:
        """Refuse every new reservation from now on (draining)."""
        self._admitting = False

    def _release(self, tenant_id: TenantId, connection: C | None) -> None:
        self._reserved -= 1
        left = self._per_tenant[tenant_id] - 1
        if left:
            self._per_tenant[tenant_id] = left
        else:
            del self._per_tenant[tenant_id]
        if connection is not None:
            self._connections.pop(connection.connection_id, None)

    @property
    def reserved(self) -> int:
        """Slots held, by connections and by upgrades in progress."""
        return self._reserved

    def count(self, tenant_id: TenantId | None = None) -> int:
        """Registered connections, of one tenant or in all."""
        if tenant_id is None:
            return len(self._connections)
        return sum(1 for c in self._connections.values() if c.tenant_id == tenant_id)

    def tenant_counts(self) -> dict[TenantId, int]:
        """Slots held per tenant."""
        return dict(self._per_tenant)

    def get(self, connection_id: str) -> C | None:
        """The connection with this id, if it is here."""
        return self._connections.get(ConnectionId(connection_id))

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._connections.values()))

    def snapshot(self, tenant_id: str | None = None) -> list[ConnectionInfo]:
        """Who is connected, optionally for one tenant, oldest first."""
        return [
            c.describe()
            for c in self._connections.values()
            if tenant_id is None or c.tenant_id == tenant_id
        ]
