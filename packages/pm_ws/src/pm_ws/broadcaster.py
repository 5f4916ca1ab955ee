"""Per-tenant fanout: from the broker's ordered streams to the interested connections."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pm_ws.brokers.broker import Broker, DisconnectRequest
from pm_ws.client_messages import SubscriptionIds
from pm_ws.codec import event_frame
from pm_ws.events import Event, StreamPosition, TenantId, UserId
from pm_ws.metrics import GatewayMetrics
from pm_ws.subscriptions import SubscriptionSet, TenantIndex

_LOG = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What fanout needs of a connection."""

    @property
    def tenant_id(self) -> TenantId:
        """The connection's tenant."""

    @property
    def user_id(self) -> UserId:
        """The connection's user."""

    @property
    def connection_id(self) -> str:
        """The connection's id."""

    @property
    def subscriptions(self) -> SubscriptionSet:
        """The ids the connection holds."""

    def push_event(self, event: Event, frame: bytes) -> None:
        """Queue an event's frame; must not wait."""

    def lagged(self) -> None:
        """The broker lost events of the tenant: tell the client to resume."""

    def disconnect_by_operator(self) -> bool:
        """Close on an operator's order; False if the connection was already closing."""


@dataclass(slots=True)
class _Tenant:
    index: TenantIndex[Subscriber] = field(default_factory=TenantIndex[Subscriber])
    members: set[Subscriber] = field(default_factory=set)
    position: StreamPosition | None = None


class Broadcaster:
    """The broker sink of one process: keeps a subscription index per tenant and fans out.

    It attaches itself to the broker it is given: a broker delivers to one
    broadcaster. Which connections are in which tenant is known here only;
    the broker is told to listen to a tenant when its first connection joins
    and to stop after the last one leaves.

    A delivered event is framed once (from the broker's stored bytes when it
    has them), then the same bytes are queued to each recipient the index
    names; nothing here awaits a client, so one slow connection never delays
    another (its own queue overflows and it is closed). A failure while
    handing an event or an order to connections is logged and goes no
    further: brokers call their sink unguarded.
    """

    def __init__(
        self,
        broker: Broker,
        metrics: GatewayMetrics,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Attach a broadcaster to `broker`, which must have no sink yet (raises `RuntimeError`)."""
        self._broker = broker
        self._metrics = metrics
        self._wall_clock_ns = wall_clock_ns
        self._tenants: dict[TenantId, _Tenant] = {}
        self._listening: set[TenantId] = set()
        self._listen_lock = asyncio.Lock()
        broker.attach(self)

    async def join(self, subscriber: Subscriber) -> StreamPosition:
        """Add a connection to its tenant and return the tenant stream's position.

        Raises:
            BrokerUnavailable: the broker could not be reached; the connection is not added.
        """
        tenant_id = subscriber.tenant_id
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant()
        tenant.members.add(subscriber)
        try:
            await self._listen(tenant_id)
            position = await self._broker.position(tenant_id)
        except BaseException:
            await self.leave(subscriber)
            raise
        known = tenant.position
        if known is None or known.epoch != position.epoch or position.seq > known.seq:
            tenant.position = known = position
        return known

    async def leave(self, subscriber: Subscriber) -> None:
        """Remove a connection and its subscriptions; the last one out stops the listening."""
        tenant_id = subscriber.tenant_id
        tenant = self._tenants.get(tenant_id)
        if tenant is None or subscriber not in tenant.members:
            return
        tenant.members.discard(subscriber)
        tenant.index.remove_all(subscriber, subscriber.subscriptions)
        if not tenant.members:
            del self._tenants[tenant_id]
            await self._unlisten(tenant_id)

    def subscribe(self, subscriber: Subscriber, ids: SubscriptionIds) -> None:
        """Start routing events matching `ids` to the connection."""
        tenant = self._tenants.get(subscriber.tenant_id)
        if tenant is not None and subscriber in tenant.members:
            tenant.index.add(subscriber, subscriber.subscriptions, ids)

    def unsubscribe(self, subscriber: Subscriber, ids: SubscriptionIds) -> None:
        """Stop routing events matching `ids` to the connection."""
        tenant = self._tenants.get(subscriber.tenant_id)
        if tenant is not None:
            tenant.index.remove(subscriber, subscriber.subscriptions, ids)

    def position(self, tenant_id: TenantId) -> StreamPosition | None:
        """The position of the last event of the tenant seen here, if any connection listens."""
        tenant = self._tenants.get(tenant_id)
        return tenant.position if tenant is not None else None

    def deliver(self, event: Event) -> None:
        """Fan one event out to the tenant's interested connections (broker sink)."""
        try:
            tenant = self._tenants.get(event.tenant_id)
            if tenant is None:
                return
            tenant.position = event.position
            recipients = tenant.index.recipients(event.scope)
            if not recipients:
                return
            frame = event_frame(event)
            for subscriber in recipients:
                subscriber.push_event(event, frame)
            self._metrics.delivered(event.tenant_id, len(recipients))
            self._metrics.publish_to_delivery.observe(
                max(0, self._wall_clock_ns() - event.published_at_ns) / 1e9
            )
        except Exception:
            _LOG.exception("fanout of %s of tenant %r failed", event.position, event.tenant_id)

    def lagged(self, tenant_id: TenantId) -> None:
        """Close every connection of the tenant with BROADCAST_LAGGED (broker sink)."""
        try:
            tenant = self._tenants.get(tenant_id)
            if tenant is not None:
                tenant.position = None
                for subscriber in list(tenant.members):
                    subscriber.lagged()
        except Exception:
            _LOG.exception("telling tenant %r's connections that they lagged failed", tenant_id)

    def disconnect(self, request: DisconnectRequest) -> None:
        """Carry out an operator disconnect from any process (broker sink)."""
        try:
            self.disconnect_local(request)
        except Exception:
            _LOG.exception("a disconnect order for tenant %r failed", request.tenant_id)

    def disconnect_local(self, request: DisconnectRequest) -> int:
        """Close this process's connections matching `request`; returns how many."""
        tenant = self._tenants.get(request.tenant_id)
        if tenant is None:
            return 0
        closed = 0
        for subscriber in list(tenant.members):
            if request.user_id is not None and subscriber.user_id != request.user_id:
                continue
            if request.connection_id is not None and (
                subscriber.connection_id != request.connection_id
            ):
                continue
            closed += subscriber.disconnect_by_operator()
        return closed

    async def _listen(self, tenant_id: TenantId) -> None:
        if tenant_id in self._listening:
            return
        async with self._listen_lock:
            if tenant_id in self._listening or tenant_id not in self._tenants:
                return
            await self._broker.listen(tenant_id)
            self._listening.add(tenant_id)

    async def _unlisten(self, tenant_id: TenantId) -> None:
        async with self._listen_lock:
            if tenant_id not in self._listening or tenant_id in self._tenants:
                return
            self._listening.discard(tenant_id)
            await self._broker.unlisten(tenant_id)
