"""A real aiohttp server with the engine mounted, and real WebSocket clients for it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pm_proto as pb
import pytest
from aiohttp import web
from pm_auth import JwtValidator
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
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

SECRET = "functional-test-secret-of-at-least-32-bytes"
TIMEOUT = 5.0


def make_token(
    tenant: str = "t1", user: str = "u1", *, expires_in: float = 3600, secret: str = SECRET
) -> str:
    now = int(time.time())
    claims = {"sub": user, "tenant_id": tenant, "iat": now, "exp": int(now + expires_in)}
    return jwt.encode(claims, secret, algorithm="HS256")


class Client:
    """A websockets client speaking pm.v1, with helpers that wait with a timeout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0

    async def recv(self) -> pb.ServerMessage:
        data = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(data, bytes)
        return pb.ServerMessage.FromString(data)

    async def recv_kind(self, kind: str) -> pb.ServerMessage:
        message = await self.recv()
        assert message.WhichOneof("payload") == kind, message
        return message

    async def send(self, message: pb.ClientMessage) -> str:
        if not message.request_id:
            self._ids += 1
            message.request_id = f"r{self._ids}"
        await self.ws.send(message.SerializeToString())
        return message.request_id

    async def request(self, message: pb.ClientMessage) -> pb.ServerMessage:
        """Send and return the answer to this request (events before it are dropped)."""
        request_id = await self.send(message)
        while True:
            answer = await self.recv()
            if answer.request_id == request_id:
                return answer
            assert answer.WhichOneof("payload") == "event", answer

    async def subscribe(
        self,
        projects: tuple[str, ...] = (),
        sprints: tuple[str, ...] = (),
        items: tuple[str, ...] = (),
        resume_from: pb.StreamPosition | None = None,
    ) -> pb.Ack:
        subscribe = pb.Subscribe(project_ids=projects, sprint_ids=sprints, work_item_ids=items)
        if resume_from is not None:
            subscribe.resume_from.CopyFrom(resume_from)
        answer = await self.request(pb.ClientMessage(subscribe=subscribe))
        assert answer.WhichOneof("payload") == "ack", answer
        return answer.ack

    async def events(self, count: int) -> list[pb.Event]:
        return [(await self.recv_kind("event")).event for _ in range(count)]

    async def closed(self) -> tuple[int, list[pb.ServerMessage]]:
        """Read until the server closes; returns the close code and what came before it."""
        seen: list[pb.ServerMessage] = []
        while True:
            try:
                seen.append(await self.recv())
            except ConnectionClosed as exc:
                received = exc.rcvd
                break
        assert received is not None, "closed without a close frame"
        return received.code, seen


@dataclass
class Harness:
    """One gateway on a real socket."""

    gateway: Gateway
    broker: MemoryBroker
    registry: CollectorRegistry
    runner: web.AppRunner
    url: str
    clients: list[Client] = field(default_factory=list)

    async def connect(
        self, token: str | None = None, *, subprotocol: bool = False, **kwargs: Any
    ) -> Client:
        token = token or make_token()
        if subprotocol:
            kwargs["subprotocols"] = ["pm.v1", f"pm.bearer.{token}"]
        else:
            kwargs["additional_headers"] = {"Authorization": f"Bearer {token}"}
        ws = await asyncio.wait_for(
            connect(self.url, ping_interval=None, max_size=2**24, **kwargs), TIMEOUT
        )
        client = Client(ws)
        self.clients.append(client)
        return client

    async def connect_welcomed(self, token: str | None = None, **kwargs: Any) -> Client:
        client = await self.connect(token, **kwargs)
        await client.recv_kind("welcome")
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
        return make_token(tenant, user, expires_in=expires_in)

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
        for client in harness.clients:
            await client.ws.close()
        await harness.runner.cleanup()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
