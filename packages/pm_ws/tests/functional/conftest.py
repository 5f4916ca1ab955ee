"""A real aiohttp server with the engine mounted, and real WebSocket clients for it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pm_auth import JwtValidator
from pm_testkit import Client, OpenClients, make_token, open_client
from pm_ws import (
    EventDraft,
    Gateway,
    GatewayLimits,
    GatewayOptions,
    PublishResult,
    Scope,
    TenantId,
)
from pm_ws.brokers.memory_broker import MemoryBroker
from prometheus_client import CollectorRegistry

SECRET = "functional-test-secret-of-at-least-32-bytes"


@dataclass
class Harness:
    """One gateway on a real socket; its clients are the kit's (`pm_testkit.Client`)."""

    gateway: Gateway
    broker: MemoryBroker
    registry: CollectorRegistry
    runner: web.AppRunner
    url: str
    clients: OpenClients = field(default_factory=OpenClients)

    async def connect(
        self, token: str | None = None, *, subprotocol: bool = False, **kwargs: Any
    ) -> Client:
        return await open_client(
            self.url, token or self.token(), subprotocol=subprotocol, track=self.clients, **kwargs
        )

    async def connect_welcomed(self, token: str | None = None, **kwargs: Any) -> Client:
        client = await self.connect(token, **kwargs)
        client.welcome = (await client.recv_kind("welcome")).welcome
        return client

    async def publish(
        self,
        project: str,
        sprint: str = "",
        item: str = "",
        *,
        tenant: str = "t1",
        event_id: str | None = None,
        payload: bytes = b"{}",
    ) -> PublishResult:
        return await self.gateway.publish(
            EventDraft(
                tenant_id=TenantId(tenant),
                event_id=event_id or uuid.uuid4().hex,
                type="card.moved",
                scope=Scope(project, sprint, item),
                payload=payload,
                actor_user_id="u0",
                occurred_at_ms=int(time.time() * 1000),
            )
        )

    def token(self, tenant: str = "t1", user: str = "u1", *, expires_in: float = 3600) -> str:
        return make_token(SECRET, tenant, user, expires_in=expires_in)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    made: list[Harness] = []

    async def make(
        *,
        limits: GatewayLimits | None = None,
        history_size: int = 1000,
        leeway_secs: float = 30,
        **options: Any,
    ) -> Harness:
        registry = CollectorRegistry()
        broker = MemoryBroker(history_size=history_size)
        gateway = Gateway(
            jwt=JwtValidator.hs256(SECRET, leeway_secs=leeway_secs),
            broker=broker,
            metrics=registry,
            options=GatewayOptions(limits=limits or GatewayLimits(), **options),
        )
        app = web.Application()
        gateway.mount(app)
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        harness = Harness(gateway, broker, registry, runner, f"ws://{host}:{port}/ws")
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.clients.close_all()
        await harness.runner.cleanup()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
