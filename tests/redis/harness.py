"""Real redis-server and pm-server processes for the scale-out tests, and pm.v1 clients for them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import jwt
import pm_proto as pb
import redis
from pm_server.config import VARIABLES
from redis.backoff import NoBackoff
from redis.retry import Retry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REDIS_BINARY = shutil.which("redis-server") or "/usr/bin/redis-server"
JWT_SECRET = "scale-out-test-secret-of-more-than-32-bytes"
PUBLISH_KEY = "publish-key-for-scale-out-tests"
ADMIN_KEY = "admin-key-for-scale-out-tests"
# Every awaited condition has this deadline; on a healthy machine each takes milliseconds.
WAIT_SECS = 10.0
_POLL_SECS = 0.02
_TRACEBACK = "Traceback (most recent call last)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_tenant() -> str:
    """A tenant id no other test uses, so tests sharing a Redis and servers stay apart."""
    return f"t-{uuid.uuid4().hex[:10]}"


def make_token(tenant: str, user: str = "u1", *, expires_in: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": user, "tenant_id": tenant, "iat": now, "exp": now + expires_in}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@dataclass(frozen=True)
class RedisUser:
    """An ACL user with every permission, made on the command line so that it survives restarts."""

    name: str
    password: str

    def config(self) -> list[str]:
        return ["--user", self.name, "on", f">{self.password}", "~*", "&*", "+@all"]


class RedisProcess:
    """A throwaway redis-server without persistence, in its own directory, on a free port.

    `stop` then `start` keeps the port (clients reconnect to the same URL) but
    not the data, unless `stop(keep_data=True)` saved it first.
    """

    def __init__(self, workdir: Path, *, users: Sequence[RedisUser] = ()) -> None:
        self.port = free_port()
        self._workdir = workdir
        self._users = tuple(users)
        self._process: subprocess.Popen[bytes] | None = None
        self._log = workdir / f"redis-{self.port}.log"

    def url(self, user: RedisUser | None = None) -> str:
        credentials = f"{user.name}:{user.password}@" if user is not None else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous admin client that fails at once instead of retrying."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once it answers PING (or raise at the deadline)."""
        assert self._process is None, "already running"
        args = [
            REDIS_BINARY,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._workdir),
        ]
        for user in self._users:
            args += user.config()
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_SECS
        with self.client() as client:
            while True:
                if self._process.poll() is not None:
                    self._process.wait()
                    self._process = None
                    raise RuntimeError(f"redis-server exited:\n{self._log.read_text()}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("redis-server did not answer PING")
                # Polling the server's readiness, bounded by the deadline above.
                time.sleep(_POLL_SECS)

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server and wait for it to exit.

        With `keep_data` it saves an RDB snapshot on the way out (SHUTDOWN
        SAVE), which the next `start` loads; otherwise the next start is empty.
        """
        process, self._process = self._process, None
        if process is None:
            return
        dump = self._workdir / "dump.rdb"
        if keep_data:
            with self.client() as client, contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=True)
        else:
            process.terminate()
        try:
            process.wait(timeout=WAIT_SECS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not keep_data:
            dump.unlink(missing_ok=True)


def server_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any pm-server setting, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in {v.name for v in VARIABLES}}
    env.update(
        {
            "JWT_SECRET": JWT_SECRET,
            "PUBLISH_API_KEY": PUBLISH_KEY,
            "ADMIN_API_KEY": ADMIN_KEY,
            "LOG_LEVEL": "info",
            "LOG_COLORED": "false",
            "SHUTDOWN_TIMEOUT_SECS": "5",
        }
    )
    env.update(overrides)
    return env


class ServerProcess:
    """`python -m pm_server` as a subprocess, its stderr collected line by line.

    A reader thread keeps the pipe drained (a full pipe would block the
    server) and lets tests wait for log lines with a deadline. `running`
    holds every started server until it is closed, so a fixture can check
    all of them for tracebacks after each test.
    """

    running: ClassVar[set[ServerProcess]] = set()

    def __init__(
        self,
        name: str,
        workdir: Path,
        env: Mapping[str, str],
        *,
        args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self._workdir = workdir
        self._env = server_environment({"BIND_ADDR": f"127.0.0.1:{self.port}", **env})
        self._args = tuple(args)
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.checked_lines = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pm_server", *self._args],
            env=self._env,
            cwd=self._workdir,  # no .env is read from there
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        ServerProcess.running.add(self)
        self._reader = threading.Thread(target=self._read, name=f"{self.name} stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        for line in self._process.stderr:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_for_log(self, text: str, *, count: int = 1, timeout: float = WAIT_SECS) -> None:
        """Block until `text` appears on `count` lines; raise on exit or at the deadline."""
        assert self._process is not None
        process = self._process

        def seen() -> bool:
            return sum(text in line for line in self._lines) >= count or process.poll() is not None

        with self._changed:
            self._changed.wait_for(seen, timeout)
            found = sum(text in line for line in self._lines)
        if found < count:
            state = "exited" if process.poll() is not None else "still running"
            raise AssertionError(
                f"{self.name} ({state}) logged {text!r} {found} times, expected {count}:\n"
                f"{self.log}"
            )

    async def await_log(self, text: str, *, count: int = 1, within: float = WAIT_SECS) -> None:
        await asyncio.to_thread(self.wait_for_log, text, count=count, timeout=within)

    def wait_until_listening(self, *, count: int = 1) -> None:
        self.wait_for_log("listening on", count=count)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    def wait(self, timeout: float = WAIT_SECS) -> int:
        assert self._process is not None
        code = self._process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    async def await_exit(self, within: float = WAIT_SECS) -> int:
        return await asyncio.to_thread(self.wait, within)

    def new_tracebacks(self) -> list[str]:
        """Tracebacks logged since the last call: a server-side exception is a bug."""
        lines = self.lines
        start, self.checked_lines = self.checked_lines, len(lines)
        return [
            "\n".join(lines[max(0, i - 1) : i + 30])
            for i in range(start, len(lines))
            if _TRACEBACK in lines[i]
        ]

    def close(self) -> None:
        """Stop the server on any path: SIGTERM, then a second signal, then SIGKILL."""
        process = self._process
        if process is None:
            return
        ServerProcess.running.discard(self)
        for signum in (signal.SIGTERM, signal.SIGTERM):
            if process.poll() is not None:
                break
            process.send_signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(WAIT_SECS)
        if process.poll() is None:
            # --workers: the workers have process groups of their own; kill them while
            # they are still the supervisor's children (so their pids are still theirs).
            for pid in _child_pids(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
        process.wait()
        if self._reader is not None:
            self._reader.join(WAIT_SECS)
        if process.stderr is not None:
            process.stderr.close()
        # Kept next to the server's working directory for looking into failures.
        (self._workdir / f"{self.name}.log").write_text(self.log + "\n", encoding="utf-8")


def _child_pids(pid: int) -> set[int]:
    """The live children of `pid` (Linux /proc), to stop the workers of a stuck supervisor."""
    children: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.update(int(c) for c in (task / "children").read_text().split())
    return children


@contextlib.contextmanager
def running_servers(servers: Sequence[ServerProcess]) -> Iterator[list[ServerProcess]]:
    """Start every server at once, wait until each listens, stop them all on the way out."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.callback(server.close)
            server.start()
        for server in servers:
            server.wait_until_listening()
        yield list(servers)


class Client:
    """A websockets client speaking pm.v1; every wait has a deadline.

    Messages that arrive while waiting for a request's answer are kept and
    returned by later `recv` calls, so nothing is skipped or reordered.
    """

    def __init__(self, ws: ClientConnection, welcome: pb.Welcome) -> None:
        self.ws = ws
        self.welcome = welcome
        self._ids = 0
        self._pending: deque[pb.ServerMessage] = deque()

    async def _read(self, within: float) -> pb.ServerMessage:
        data = await asyncio.wait_for(self.ws.recv(), within)
        assert isinstance(data, bytes), data
        return pb.ServerMessage.FromString(data)

    async def recv(self, within: float = WAIT_SECS) -> pb.ServerMessage:
        if self._pending:
            return self._pending.popleft()
        return await self._read(within)

    async def send(self, message: pb.ClientMessage) -> str:
        self._ids += 1
        message.request_id = f"r{self._ids}"
        await self.ws.send(message.SerializeToString())
        return message.request_id

    async def request(self, message: pb.ClientMessage) -> pb.ServerMessage:
        """Send `message` and return its answer; events that come first stay queued."""
        request_id = await self.send(message)
        deadline = time.monotonic() + WAIT_SECS
        held: list[pb.ServerMessage] = []
        while True:
            answer = await self._read(max(0.0, deadline - time.monotonic()))
            if answer.request_id == request_id:
                self._pending.extend(held)
                return answer
            assert answer.WhichOneof("payload") == "event", answer
            held.append(answer)

    async def subscribe(
        self, *projects: str, resume_from: pb.StreamPosition | None = None
    ) -> pb.Ack:
        subscribe = pb.Subscribe(project_ids=projects)
        if resume_from is not None:
            subscribe.resume_from.CopyFrom(resume_from)
        answer = await self.request(pb.ClientMessage(subscribe=subscribe))
        assert answer.WhichOneof("payload") == "ack", answer
        return answer.ack

    async def events(self, count: int) -> list[pb.Event]:
        """The next `count` messages, each of which must be an event."""
        events = []
        for _ in range(count):
            message = await self.recv()
            assert message.WhichOneof("payload") == "event", message
            events.append(message.event)
        return events

    async def ping(self) -> None:
        """Ping and expect a Pong as the very next message: nothing else was queued before it."""
        request_id = await self.send(pb.ClientMessage(ping=pb.Ping(client_time_ms=1)))
        message = await self.recv()
        assert message.WhichOneof("payload") == "pong", message
        assert message.request_id == request_id

    async def closed(self) -> tuple[int, list[pb.ServerMessage]]:
        """Read until the server closes; the close code and every message before it."""
        seen: list[pb.ServerMessage] = list(self._pending)
        self._pending.clear()
        deadline = time.monotonic() + WAIT_SECS
        while True:
            try:
                seen.append(await self._read(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed as exc:
                received = exc.rcvd
                break
        assert received is not None, "closed without a close frame"
        return received.code, seen


ClientFactory = Callable[..., Awaitable[Client]]


async def open_client(url: str, tenant: str, user: str = "u1") -> Client:
    """Connect with a Bearer token and read the Welcome, which must come first."""
    ws = await asyncio.wait_for(
        connect(
            url,
            additional_headers={"Authorization": f"Bearer {make_token(tenant, user)}"},
            ping_interval=None,
            open_timeout=WAIT_SECS,
        ),
        WAIT_SECS,
    )
    data = await asyncio.wait_for(ws.recv(), WAIT_SECS)
    assert isinstance(data, bytes)
    first = pb.ServerMessage.FromString(data)
    assert first.WhichOneof("payload") == "welcome", first
    return Client(ws, first.welcome)


@dataclass(frozen=True)
class Published:
    event_id: str
    epoch: str
    seq: int

    @property
    def position(self) -> pb.StreamPosition:
        return pb.StreamPosition(epoch=self.epoch, seq=self.seq)


async def post_publish(
    http: aiohttp.ClientSession,
    server: ServerProcess | str,
    tenant: str,
    project: str,
    *,
    event_id: str | None = None,
    event_type: str = "work_item.updated",
) -> tuple[int, Any]:
    """POST /api/v1/publish as JSON; the status and the decoded JSON answer."""
    base = server if isinstance(server, str) else server.base_url
    body: dict[str, Any] = {"tenantId": tenant, "type": event_type, "scope": {"projectId": project}}
    if event_id is not None:
        body["eventId"] = event_id
    async with http.post(
        f"{base}/api/v1/publish",
        json=body,
        headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
    ) as response:
        return response.status, await response.json()


async def publish(
    http: aiohttp.ClientSession,
    server: ServerProcess | str,
    tenant: str,
    project: str,
    *,
    event_id: str | None = None,
) -> Published:
    """Publish an event and return where the stream put it (the call must succeed)."""
    status, answer = await post_publish(http, server, tenant, project, event_id=event_id)
    assert status == 200, answer
    position = answer["position"]
    # proto-JSON writes uint64 as a string and leaves out zero values.
    return Published(answer["eventId"], position["epoch"], int(position.get("seq", "0")))


async def get_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def eventually(
    probe: Callable[[], Awaitable[bool]],
    describe: Callable[[], str],
    *,
    within: float = WAIT_SECS,
) -> None:
    """Poll `probe` (an HTTP check) every few milliseconds until it holds, or fail."""
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {describe()}")
        await asyncio.sleep(_POLL_SECS)


async def ready_status(http: aiohttp.ClientSession, server: ServerProcess) -> tuple[int, str]:
    return await get_text(http, f"{server.base_url}/ready")


async def wait_ready(
    http: aiohttp.ClientSession, server: ServerProcess, status: int = 200
) -> tuple[int, str]:
    """Poll /ready until it answers `status`; returns the last answer."""
    last: tuple[int, str] = (0, "")

    async def probe() -> bool:
        nonlocal last
        last = await ready_status(http, server)
        return last[0] == status

    await eventually(probe, lambda: f"{server.name} /ready answers {status} (last: {last})")
    return last


def event_ids(events: Sequence[pb.Event]) -> list[str]:
    return [event.event_id for event in events]


def seqs(events: Sequence[pb.Event]) -> list[int]:
    return [event.position.seq for event in events]
