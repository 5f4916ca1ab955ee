"""Real pm-server processes, a TCP proxy that can cut connections, tokens and stream collectors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from pm_client import Event, NotRecovered, PmClient, PmClientError, Position, StreamItem

SECRET = "client-functional-test-secret-0123456789abcdefgh"
assert len(SECRET) == 48
PUBLISH_KEY = "publish-key-0123456789"
ADMIN_KEY = "admin-key-0123456789ab"
TENANT = "t1"
USER = "u1"
WAIT_SECS = 10.0


def free_port() -> int:
    """A port that was free a moment ago (bind 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_token(
    *,
    tenant: str = TENANT,
    user: str = USER,
    expires_in: float = 3600,
    secret: str = SECRET,
) -> str:
    now = int(time.time())
    claims = {"sub": user, "tenant_id": tenant, "iat": now, "exp": int(now + expires_in)}
    return jwt.encode(claims, secret, algorithm="HS256")


class TokenSource:
    """A token provider that counts its calls; `make` decides each token."""

    def __init__(self, make: Callable[[int], str] | None = None) -> None:
        self.calls = 0
        self.tokens: list[str] = []
        self._make = make or (lambda _call: make_token())

    async def __call__(self) -> str:
        self.calls += 1
        token = self._make(self.calls)
        self.tokens.append(token)
        return token


async def eventually(
    condition: Callable[[], bool], within_secs: float = WAIT_SECS, what: str = "condition"
) -> None:
    """Poll `condition` until it holds; fail after `within_secs` (a deadline, not a sleep)."""
    deadline = time.monotonic() + within_secs
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_secs}s waiting for {what}")
        await asyncio.sleep(0.01)


class ServerProcess:
    """`python -m pm_server` on a fixed port, run from a temporary directory."""

    def __init__(self, port: int, workdir: Path, env: dict[str, str]) -> None:
        self.port = port
        self.workdir = workdir
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ServerProcess:
        """Start and wait for the `listening on` log line."""
        env = {**os.environ, **self.env, "BIND_ADDR": f"127.0.0.1:{self.port}"}
        env.setdefault("LOG_COLORED", "false")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pm_server",
            cwd=self.workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_log(listening))
        try:
            await asyncio.wait_for(asyncio.shield(listening), WAIT_SECS)
        except TimeoutError:
            raise AssertionError("pm_server did not start:\n" + "\n".join(self.log)) from None
        return self

    async def _read_log(self, listening: asyncio.Future[None]) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if "listening on" in line and not listening.done():
                listening.set_result(None)
        if not listening.done():
            listening.set_exception(RuntimeError("pm_server exited:\n" + "\n".join(self.log)))

    async def signal(self, signum: int) -> int:
        """Send `signum` and wait for the process to exit; returns its exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), WAIT_SECS)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, WAIT_SECS)
        return code

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.signal(signal.SIGKILL)


ServerFactory = Callable[..., Any]


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return free_port


@pytest.fixture(name="make_token")
def make_token_fixture() -> Callable[..., str]:
    """`make_token(tenant=, user=, expires_in=, secret=)`: an HS256 token for the test servers."""
    return make_token


@pytest.fixture
def token_source() -> Callable[..., TokenSource]:
    """`token_source(make=None)`: a counting provider; `make(call_number)` builds each token."""
    return TokenSource


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Any]:
    return eventually


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers: `await start_server(port=None, **env)`; all are killed at the end."""
    started: list[ServerProcess] = []

    async def start(port: int | None = None, **env: str) -> ServerProcess:
        base = {
            "JWT_SECRET": SECRET,
            "PUBLISH_API_KEY": PUBLISH_KEY,
            "ADMIN_API_KEY": ADMIN_KEY,
            "SHUTDOWN_TIMEOUT_SECS": "5",
        }
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        server = ServerProcess(port or free_port(), workdir, {**base, **env})
        started.append(server)
        return await server.start()

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def server(start_server: ServerFactory) -> ServerProcess:
    result: ServerProcess = await start_server()
    return result


@dataclass
class Published:
    n: int
    event_id: str
    position: Position


class Api:
    """The server's HTTP APIs, as a backend would call them."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def publish(
        self,
        server: ServerProcess,
        project: str = "p1",
        n: int = 0,
        *,
        tenant: str = TENANT,
        event_type: str = "card.moved",
    ) -> Published:
        payload = json.dumps({"n": n}).encode()
        body = {
            "tenantId": tenant,
            "type": event_type,
            "scope": {"projectId": project},
            "payload": base64.b64encode(payload).decode(),
            "actorUserId": "u0",
        }
        async with self.session.post(
            f"{server.http}/api/v1/publish",
            json=body,
            headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
        ) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        position = answer["position"]
        return Published(n, answer["eventId"], Position(position["epoch"], int(position["seq"])))

    async def publish_json(self, server: ServerProcess, body: dict[str, Any]) -> int:
        """POST a raw JSON publish body; returns the HTTP status."""
        async with self.session.post(
            f"{server.http}/api/v1/publish",
            json=body,
            headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
        ) as response:
            return response.status

    async def disconnect(self, server: ServerProcess, **target: str) -> int:
        async with self.session.post(
            f"{server.http}/api/v1/disconnect",
            json=target,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response:
            assert response.status == 200, await response.text()
            closed: int = (await response.json())["closed"]
            return closed


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session)


@dataclass
class Collector:
    """Reads `client.events()` in the background; tests wait on what it has seen."""

    client: PmClient
    items: list[StreamItem] = field(default_factory=list)
    error: BaseException | None = None
    ended: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Collector:
        self._task = asyncio.create_task(self._consume())
        return self

    async def _consume(self) -> None:
        try:
            async for item in self.client.events():
                self.items.append(item)
                self._changed.set()
        except PmClientError as exc:
            self.error = exc
        finally:
            self.ended = True
            self._changed.set()

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
        async def wait() -> None:
            while not condition():
                if self.ended and not condition():
                    raise AssertionError(f"stream ended ({self.error!r}) before {what}")
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), within_secs)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what or 'a condition'}; got {self.items}"
            ) from None

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


class TcpProxy:
    """A TCP relay in front of a server: it can cut every connection and refuse new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.refusing = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def sever(self) -> None:
        """Cut every relayed connection at once (no close frame: the client sees 1006)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[TcpProxy]:
    relay = await TcpProxy(server.port).start()
    yield relay
    await relay.close()


class Publisher:
    """Publishes numbered events to whichever server is current, as fast as they are answered."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.server: ServerProcess | None = None
        self.published: list[Published] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, server: ServerProcess) -> Publisher:
        self.server = server
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        while True:
            n += 1
            assert self.server is not None
            try:
                self.published.append(await self._publish(self.server, n))
            except (aiohttp.ClientError, OSError, LookupError):
                # The server is going or gone, and this event may or may not exist.
                # Pausing paces the retries; nothing waits on it.
                await asyncio.sleep(0.02)
                continue
            await asyncio.sleep(0.005)

    async def _publish(self, server: ServerProcess, n: int) -> Published:
        body = {
            "tenantId": TENANT,
            "type": "card.moved",
            "scope": {"projectId": "p1"},
            "payload": base64.b64encode(json.dumps({"n": n}).encode()).decode(),
        }
        async with self.session.post(
            f"{server.http}/api/v1/publish",
            json=body,
            headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
        ) as response:
            if response.status != 200:
                raise LookupError(response.status)
            answer = await response.json()
        position = Position(answer["position"]["epoch"], int(answer["position"]["seq"]))
        return Published(n, answer["eventId"], position)

    def on(self, epoch: str, after_seq: int = 0) -> list[Published]:
        """The events published into `epoch` after `after_seq`, in order."""
        return [
            p for p in self.published if p.position.epoch == epoch and p.position.seq > after_seq
        ]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})


@pytest.fixture
async def publisher(api: Api) -> AsyncIterator[Publisher]:
    """A background publisher of numbered events to project p1 (start it with `.start(server)`)."""
    running = Publisher(api.session)
    yield running
    await running.stop()
