"""pm_client's functional fixtures on the kit: its servers and proxy, tokens, stream collectors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from pm_client import Event, NotRecovered, PmClient, PmClientError, Position, StreamItem
from pm_testkit import (
    POLL_SECS,
    WAIT_SECS,
    Changes,
    ServerLauncher,
    ServerProcess,
    TcpProxy,
    WaitTimeout,
    free_port,
    make_token,
)

TENANT = "t1"
USER = "u1"

MakeToken = Callable[..., str]
ServerFactory = Callable[..., Awaitable[ServerProcess]]


class TokenSource:
    """A token provider that counts its calls; `make` decides each token."""

    def __init__(self, make: Callable[[int], str]) -> None:
        self.calls = 0
        self.tokens: list[str] = []
        self._make = make

    async def __call__(self) -> str:
        self.calls += 1
        token = self._make(self.calls)
        self.tokens.append(token)
        return token


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return free_port


@pytest.fixture(name="make_token")
def make_token_fixture(servers: ServerLauncher) -> MakeToken:
    """`make_token(tenant=, user=, expires_in=, secret=)`: a token for this test's servers."""

    def make(
        *,
        tenant: str = TENANT,
        user: str = USER,
        expires_in: float = 3600,
        secret: str = servers.credentials.jwt_secret,
    ) -> str:
        return make_token(secret, tenant, user, expires_in=expires_in)

    return make


@pytest.fixture
def token_source(make_token: MakeToken) -> Callable[..., TokenSource]:
    """`token_source(make=None)`: a counting provider; `make(call_number)` builds each token."""

    def source(make: Callable[[int], str] | None = None) -> TokenSource:
        return TokenSource(make or (lambda _call: make_token()))

    return source


@pytest.fixture
def start_server(servers: ServerLauncher) -> ServerFactory:
    """Start servers: `await start_server(port=None, **settings)`; the kit stops them all."""

    async def start(port: int | None = None, **settings: str) -> ServerProcess:
        return await servers.start_async(settings, port=port)

    return start


@pytest.fixture
async def server(start_server: ServerFactory) -> ServerProcess:
    """A server of this test alone (its tests disconnect, kill or restart it)."""
    return await start_server()


@dataclass
class Published:
    n: int
    event_id: str
    position: Position


async def _publish(server: ServerProcess, project: str, n: int, tenant: str) -> Published:
    """Event number `n` ({"n": n} as its payload); fails unless answered 200."""
    payload = json.dumps({"n": n}).encode()
    published = await server.publish(
        tenant, project, type="card.moved", payload=payload, actor="u0"
    )
    return Published(n, published.event_id, Position(published.epoch, published.seq))


class Api:
    """The server's HTTP APIs, as a backend would call them."""

    async def publish(
        self, server: ServerProcess, project: str = "p1", n: int = 0, *, tenant: str = TENANT
    ) -> Published:
        return await _publish(server, project, n, tenant)

    async def publish_json(self, server: ServerProcess, body: dict[str, object]) -> int:
        """POST a raw JSON publish body; returns the HTTP status."""
        return (await server.post_publish(json.dumps(body), "application/json")).status

    async def disconnect(self, server: ServerProcess, tenant_id: str, **target: str) -> int:
        answer = await server.disconnect(tenant_id, **target)
        assert answer.status == 200, answer.body
        closed: int = answer.json()["closed"]
        return closed


@pytest.fixture
def api() -> Api:
    return Api()


@dataclass
class Collector:
    """Reads `client.events()` in the background; tests wait on what it has seen."""

    client: PmClient
    items: list[StreamItem] = field(default_factory=list)
    error: BaseException | None = None
    ended: bool = False
    _changes: Changes = field(default_factory=Changes)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Collector:
        self._task = asyncio.create_task(self._consume())
        return self

    async def _consume(self) -> None:
        try:
            async for item in self.client.events():
                self.items.append(item)
                self._changes.notify()
        except PmClientError as exc:
            self.error = exc
        finally:
            self.ended = True
            self._changes.notify()

    @property
    def events(self) -> list[Event]:
        return [item for item in self.items if isinstance(item, Event)]

    @property
    def not_recovered(self) -> list[NotRecovered]:
        return [item for item in self.items if isinstance(item, NotRecovered)]

    def numbers(self) -> list[int]:
        return [json.loads(event.payload)["n"] for event in self.events]

    async def wait_until(
        self, condition: Callable[[], bool], within_secs: float = WAIT_SECS, what: str = ""
    ) -> None:
        what = what or "a condition"
        try:
            await self._changes.wait_for(
                lambda: condition() or self.ended, within=within_secs, what=what
            )
        except WaitTimeout as timeout:
            raise AssertionError(f"{timeout}; got {self.items}") from None
        if not condition():
            raise AssertionError(f"stream ended ({self.error!r}) before {what}")

    async def wait_for_events(self, count: int, within_secs: float = WAIT_SECS) -> None:
        await self.wait_until(lambda: len(self.events) >= count, within_secs, f"{count} events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})


@pytest.fixture
def collect() -> Iterator[Callable[[PmClient], Collector]]:
    made: list[Collector] = []

    def start(client: PmClient) -> Collector:
        collector = Collector(client).start()
        made.append(collector)
        return collector

    yield start
    for collector in made:
        if collector._task is not None:
            collector._task.cancel()


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[TcpProxy]:
    """The kit's TCP proxy in front of the server: its `url` is a WebSocket URL."""
    async with TcpProxy(server.ws_url) as relay:
        yield relay


class Publisher:
    """Publishes numbered events to whichever server is current, as fast as they are answered."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.published: list[Published] = []
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, server: ServerProcess) -> Publisher:
        self.server = server
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        while not self._stopping.is_set():
            n += 1
            assert self.server is not None
            try:
                self.published.append(await _publish(self.server, "p1", n, TENANT))
            except (aiohttp.ClientError, OSError, AssertionError):
                # The server is going or gone, and this event may or may not exist.
                # Pausing paces the retries; nothing waits on it.
                await asyncio.sleep(POLL_SECS)
                continue
            await asyncio.sleep(0.005)

    def on(self, epoch: str, after_seq: int = 0) -> list[Published]:
        """The events published into `epoch` after `after_seq`, in order."""
        return [
            p for p in self.published if p.position.epoch == epoch and p.position.seq > after_seq
        ]

    async def stop(self) -> None:
        """Stop after the publish under way: an event the server stored is in `published`."""
        self._stopping.set()
        if self._task is not None:
            await self._task


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    """A background publisher of numbered events to project p1 (start it with `.start(server)`)."""
    running = Publisher()
    yield running
    await running.stop()
