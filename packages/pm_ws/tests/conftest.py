"""Broker fixtures: both backends (Redis from the kit), a manual clock and a recording sink."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import pytest
from pm_testkit import Changes, RedisServer
from pm_ws.brokers.broker import Broker, DisconnectRequest
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.brokers.redis_broker import RedisBroker
from pm_ws.events import Event, EventDraft, Scope, TenantId

WAIT_SECS = 5.0

ACME = TenantId("acme")
GLOBEX = TenantId("globex")


def draft(event_id: str, tenant: TenantId = ACME, *, payload: bytes = b"{}") -> EventDraft:
    """An event of `tenant` (ACME by default) in project p1, sprint s1 and its own work item."""
    return EventDraft(
        tenant_id=tenant,
        event_id=event_id,
        type="work_item.updated",
        scope=Scope(project_id="p1", sprint_id="s1", work_item_id=f"w-{event_id}"),
        payload=payload,
        actor_user_id="u1",
        occurred_at_ms=1_700_000_000_123,
    )


class ManualClock:
    """A monotonic and a wall clock that move only when a test says so."""

    def __init__(self) -> None:
        self._secs = 1_000.0
        self._wall_ns = 1_700_000_000 * 10**9

    def monotonic(self) -> float:
        return self._secs

    def time_ns(self) -> int:
        return self._wall_ns

    def advance(self, secs: float) -> None:
        self._secs += secs
        self._wall_ns += int(secs * 1e9)


class RecordingSink:
    """A broker sink that records everything and lets a test wait for it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lags: list[TenantId] = []
        self.disconnects: list[DisconnectRequest] = []
        self._changes = Changes()

    @property
    def seqs(self) -> list[int]:
        return [event.position.seq for event in self.events]

    def deliver(self, event: Event) -> None:
        self.events.append(event)
        self._changes.notify()

    def lagged(self, tenant_id: TenantId) -> None:
        self.lags.append(tenant_id)
        self._changes.notify()

    def disconnect(self, request: DisconnectRequest) -> None:
        self.disconnects.append(request)
        self._changes.notify()

    async def wait_until(
        self, condition: Callable[[], bool], within_secs: float = WAIT_SECS
    ) -> None:
        await self._changes.wait_for(condition, within=within_secs)

    async def wait_for_events(self, count: int) -> None:
        await self.wait_until(lambda: len(self.events) >= count)


class BrokerFactory(Protocol):
    async def __call__(
        self, *, history_size: int = 1000, history_ttl_secs: float = 300
    ) -> Broker: ...


class RedisBrokerFactory(Protocol):
    async def __call__(
        self,
        url: str | None = None,
        *,
        history_size: int = 1000,
        history_ttl_secs: float = 300,
    ) -> RedisBroker: ...


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _redis_broker(
    url: str, prefix: str, clock: ManualClock, *, history_size: int, history_ttl_secs: float
) -> RedisBroker:
    return RedisBroker(
        url,
        history_size=history_size,
        history_ttl_secs=history_ttl_secs,
        key_prefix=prefix,
        reconnect_backoff=(0.01, 0.1),
        timeout_secs=2.0,
        wall_clock_ns=clock.time_ns,
    )


@pytest.fixture
async def make_redis_broker(
    redis_server: RedisServer, clock: ManualClock
) -> AsyncIterator[RedisBrokerFactory]:
    """Started RedisBrokers sharing one fresh key prefix (like processes of one deployment)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    brokers: list[RedisBroker] = []

    async def make(
        url: str | None = None, *, history_size: int = 1000, history_ttl_secs: float = 300
    ) -> RedisBroker:
        broker = _redis_broker(
            url or redis_server.url,
            prefix,
            clock,
            history_size=history_size,
            history_ttl_secs=history_ttl_secs,
        )
        brokers.append(broker)
        await broker.start()
        return broker

    yield make
    for broker in brokers:
        await broker.close()


@pytest.fixture(params=["memory", "redis"])
def broker_backend(request: pytest.FixtureRequest) -> RedisServer | None:
    """None for memory://, else the Redis server the redis:// brokers use."""
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


@pytest.fixture
async def make_broker(
    broker_backend: RedisServer | None, clock: ManualClock
) -> AsyncIterator[BrokerFactory]:
    """Started brokers of each backend in turn, on the manual clock."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    brokers: list[Broker] = []

    async def make(*, history_size: int = 1000, history_ttl_secs: float = 300) -> Broker:
        broker: Broker
        if broker_backend is None:
            broker = MemoryBroker(
                history_size=history_size,
                history_ttl_secs=history_ttl_secs,
                clock=clock.monotonic,
                wall_clock_ns=clock.time_ns,
            )
        else:
            broker = _redis_broker(
                broker_backend.url,
                prefix,
                clock,
                history_size=history_size,
                history_ttl_secs=history_ttl_secs,
            )
        brokers.append(broker)
        await broker.start()
        return broker

    yield make
    for broker in brokers:
        await broker.close()


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Broker:
    return await make_broker()
