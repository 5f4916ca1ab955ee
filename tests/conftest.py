"""Real `pm-server` processes on free local ports, and real clients talking to them.

Every server is `python -m pm_server` in its own temporary working directory (so
no `.env` of the repository is read) with an environment that holds nothing of
the developer's pm-realtime settings. Its stdout and stderr are collected line by
line by reader threads; waits read those lines, poll an endpoint, or wait for the
process, always with a deadline. Servers are killed in teardown on every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import jwt
import pm_proto as pb
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pm_server.config import VARIABLES
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 10.0
"""Upper bound of any single wait on a client, a request or a log line."""

START_TIMEOUT = 30.0
"""Upper bound for a server to log `listening on` (imports are slow on a busy CI box)."""

EXIT_TIMEOUT = 20.0
"""Upper bound for a server to exit after being asked to."""

_SETTING_PREFIXES = (
    "PM_",
    "JWT_",
    "LOG_",
    "BROKER_",
    "REDIS",
    "HEARTBEAT_",
    "SHUTDOWN_",
    "RATE_LIMIT_",
    "HISTORY_",
    "MAX_",
    "WS_",
    "CORS_",
    "METRICS_",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_environ() -> dict[str, str]:
    """`os.environ` without any variable pm-server reads or a pm-realtime setting could leak in."""
    read_by_server = {variable.name for variable in VARIABLES}
    return {
        name: value
        for name, value in os.environ.items()
        if name not in read_by_server and not name.startswith(_SETTING_PREFIXES)
    }


def make_token(
    secret: str,
    tenant: str,
    user: str = "u1",
    *,
    expires_in: float = 3600,
    **claims: Any,
) -> str:
    """An HS256 JWT with sub, tenant_id, iat and exp (plus `claims`)."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": user,
        "tenant_id": tenant,
        "iat": now,
        "exp": int(now + expires_in),
        **claims,
    }
    return jwt.encode(body, secret, algorithm="HS256")


class OutputLog:
    """The lines a process writes to one pipe, collected by a thread as they come."""

    def __init__(self, name: str, stream: IO[str]) -> None:
        self.name = name
        self._lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._pump, args=(stream,), name=f"pm-server {name}", daemon=True
        )
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                with self._changed:
                    self._lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first line matching the regular expression `pattern`, waiting up to `timeout`.

        Raises AssertionError, with everything collected so far, when the pipe
        closes or the deadline passes first.
        """
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    match = compiled.search(line)
                    if match is not None:
                        return match
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "closed" if self._eof else f"was silent for {timeout}s"
                    shown = "\n".join(self._lines[-60:])
                    raise AssertionError(
                        f"{self.name} {why} without a line matching {pattern!r}:\n{shown}"
                    )
                self._changed.wait(left)

    def join(self, timeout: float = TIMEOUT) -> None:
        self._thread.join(timeout)


@dataclass(frozen=True)
class HttpAnswer:
    """What an HTTP request got back."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A `websockets` client speaking pm.v1, whose every wait has a deadline."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome = pb.Welcome()
        self._request_ids = 0
        self._reading = True

    async def recv(self) -> pb.ServerMessage:
        data = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(data, bytes), f"expected a binary frame, got {data!r}"
        return pb.ServerMessage.FromString(data)

    async def recv_kind(self, kind: str) -> pb.ServerMessage:
        message = await self.recv()
        assert message.WhichOneof("payload") == kind, message
        return message

    async def send(self, message: pb.ClientMessage) -> str:
        if not message.request_id:
            self._request_ids += 1
            message.request_id = f"r{self._request_ids}"
        await self.ws.send(message.SerializeToString())
        return message.request_id

    async def request(self, message: pb.ClientMessage) -> pb.ServerMessage:
        """Send `message` and return its answer, skipping events that come before it."""
        request_id = await self.send(message)
        while True:
            answer = await self.recv()
            if answer.request_id == request_id:
                return answer
            assert answer.WhichOneof("payload") == "event", answer

    async def subscribe(
        self,
        projects: Sequence[str] = (),
        sprints: Sequence[str] = (),
        items: Sequence[str] = (),
        *,
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

    async def expect_nothing_pending(self) -> None:
        """Ping and see the Pong come next: nothing was queued for this client before it.

        The server handles a connection's frames in order and fans events out
        before a publish is answered, so an event that was going to reach this
        client would be ahead of the Pong.
        """
        request_id = await self.send(pb.ClientMessage(ping=pb.Ping(client_time_ms=1)))
        answer = await self.recv()
        assert answer.WhichOneof("payload") == "pong", f"expected only a Pong, got {answer}"
        assert answer.request_id == request_id

    async def until_closed(self) -> tuple[int, list[pb.ServerMessage]]:
        """Read until the server closes; the close code and every message before it."""
        seen: list[pb.ServerMessage] = []
        while True:
            try:
                message = await self.recv()
            except ConnectionClosed as closed:
                received = closed.rcvd
                break
            seen.append(message)
        assert received is not None, f"closed without a close frame after {seen}"
        return received.code, seen

    def stop_reading(self) -> None:
        """Stop reading the socket: the server's writes pile up in the TCP buffers."""
        self._reading = False
        transport = self.ws.transport
        transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        """Read again: what the server wrote meanwhile (its close frame, say) comes in."""
        self._reading = True
        transport = self.ws.transport
        transport.resume_reading()  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Close politely when the client still reads (else no close handshake can finish)."""
        if self._reading:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        self.ws.transport.abort()


_OPEN_CLIENTS: list[Client] = []
"""Clients opened by the running test, closed after it by `_close_clients`."""


class ServerProcess:
    """One `python -m pm_server` process and the helpers to talk to it.

    `secret`, `publish_key` and `admin_key` are the values it was started with
    (None when not set, as in `--dev` where the banner tells them).
    """

    def __init__(
        self,
        *,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        port: int,
        secret: str | None,
        publish_key: str | None,
        admin_key: str | None,
    ) -> None:
        self.args = tuple(args)
        self.env = dict(env)
        self.port = port
        self.secret = secret
        self.publish_key = publish_key
        self.admin_key = admin_key
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pm_server", *self.args],
            env=self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout = OutputLog("stdout", self.proc.stdout)
        self.stderr = OutputLog("stderr", self.proc.stderr)

    # The process

    def wait_listening(self, timeout: float = START_TIMEOUT) -> str:
        """Wait for the `listening on` line and return it."""
        return self.stderr.wait_for(r"listening on ", timeout).string

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Wait for the process to end; its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pm-server still running {timeout}s later:\n{self.stderr.text[-4000:]}"
            ) from None

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = EXIT_TIMEOUT) -> int:
        """Send `signum` and wait for the exit code."""
        self.send_signal(signum)
        return self.wait_exit(timeout)

    async def stop_async(
        self, signum: signal.Signals = signal.SIGTERM, *, within: float = EXIT_TIMEOUT
    ) -> int:
        """`stop` without blocking the event loop (clients keep answering meanwhile)."""
        self.send_signal(signum)
        return await asyncio.to_thread(self.wait_exit, within)

    async def wait_log(self, pattern: str, *, within: float = TIMEOUT) -> str:
        """Wait for a stderr line matching `pattern` without blocking the event loop."""
        match = await asyncio.to_thread(self.stderr.wait_for, pattern, within)
        return match.string

    def kill(self) -> None:
        """Kill the process if it still runs, and collect its output threads."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=EXIT_TIMEOUT)
        self.stdout.join()
        self.stderr.join()

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as a JSON object (for `LOG_FORMAT=json`)."""
        records = []
        for line in self.stderr.lines:
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    # Tokens and HTTP

    def token(
        self, tenant: str, user: str = "u1", *, expires_in: float = 3600, **claims: Any
    ) -> str:
        assert self.secret is not None, "this server was not given a JWT_SECRET"
        return make_token(self.secret, tenant, user, expires_in=expires_in, **claims)

    async def http(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        bearer: str | None = None,
        **kwargs: Any,
    ) -> HttpAnswer:
        sent = dict(headers or {})
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, self.url + path, data=data, json=json_body, headers=sent, **kwargs
            ) as response,
        ):
            body = await response.read()
            headers = CIMultiDictProxy(CIMultiDict(response.headers))
            return HttpAnswer(response.status, headers, body)

    async def get(self, path: str, **kwargs: Any) -> HttpAnswer:
        return await self.http("GET", path, **kwargs)

    async def post_publish(
        self,
        body: Any,
        content_type: str = "application/x-protobuf",
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """POST a body to the publish API with `key` (the server's publish key by default)."""
        return await self.http(
            "POST",
            "/api/v1/publish",
            data=body,
            headers={"Content-Type": content_type, **(headers or {})},
            bearer=key if key is not None else self.publish_key,
        )

    async def publish(
        self,
        tenant: str,
        project: str,
        sprint: str = "",
        item: str = "",
        *,
        event_id: str = "",
        type: str = "work_item.updated",  # the wire field's name
        payload: bytes = b"{}",
        actor: str = "backend",
    ) -> pb.PublishResponse:
        """Publish one event through the HTTP API as protobuf; its event_id and position."""
        request = pb.PublishRequest(
            tenant_id=tenant,
            type=type,
            scope=pb.Scope(project_id=project, sprint_id=sprint, work_item_id=item),
            payload=payload,
            actor_user_id=actor,
            event_id=event_id,
        )
        answer = await self.post_publish(request.SerializeToString())
        assert answer.status == 200, (answer.status, answer.body)
        return pb.PublishResponse.FromString(answer.body)

    async def health(self) -> dict[str, Any]:
        answer = await self.get("/health")
        document: dict[str, Any] = answer.json()
        return document

    async def wait_connections(self, count: int, *, within: float = TIMEOUT) -> None:
        """Poll `/health` until the server holds exactly `count` connections."""
        deadline = time.monotonic() + within
        while True:
            total = (await self.health())["connections"]["total"]
            if total == count:
                return
            assert time.monotonic() < deadline, f"{total} connections, expected {count}"
            await asyncio.sleep(0.02)

    # WebSocket clients

    async def open_ws(
        self,
        token: str | None = None,
        *,
        subprotocol: bool = False,
        url: str | None = None,
        track: bool = True,
        **kwargs: Any,
    ) -> Client:
        """Upgrade with `token` in the Authorization header (or as the browser subprotocol).

        Tracked clients are closed after the test; a fixture that opens clients in
        its own event loop passes `track=False` and closes them itself.
        """
        if token is not None and subprotocol:
            kwargs["subprotocols"] = ["pm.v1", f"pm.bearer.{token}"]
        elif token is not None:
            headers = dict(kwargs.pop("additional_headers", None) or {})
            headers["Authorization"] = f"Bearer {token}"
            kwargs["additional_headers"] = headers
        ws = await connect(
            url or self.ws_url,
            proxy=None,
            ping_interval=None,
            max_size=None,
            open_timeout=TIMEOUT,
            close_timeout=2,
            **kwargs,
        )
        client = Client(ws)
        if track:
            _OPEN_CLIENTS.append(client)
        return client

    async def connect(self, tenant: str, user: str = "u1", **kwargs: Any) -> Client:
        """A client of `tenant` as `user`, past its Welcome (kept as `client.welcome`)."""
        client = await self.open_ws(self.token(tenant, user), **kwargs)
        client.welcome = (await client.recv_kind("welcome")).welcome
        return client

    async def refused(self, token: str | None = None, **kwargs: Any) -> HttpAnswer:
        """Attempt an upgrade that must be refused; the HTTP answer it got instead."""
        try:
            client = await self.open_ws(token, track=False, **kwargs)
        except InvalidStatus as refusal:
            response = refusal.response
            headers = CIMultiDict(response.headers.raw_items())
            return HttpAnswer(response.status_code, CIMultiDictProxy(headers), bytes(response.body))
        await client.close()
        raise AssertionError("the upgrade was accepted")


@dataclass
class ServerLauncher:
    """Starts pm-server processes and kills every one of them at teardown."""

    workdir: Path
    started: list[ServerProcess] = field(default_factory=list)

    def start(
        self,
        env: Mapping[str, str] | None = None,
        *,
        args: Sequence[str] = (),
        auth: bool = True,
        api_keys: bool = True,
        port: int | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        """Start a server on a free port of 127.0.0.1 and wait until it listens.

        With `auth`, a random 48-character JWT_SECRET; with `api_keys`, random
        publish and admin keys. `env` is applied last (an empty value unsets).
        """
        for attempt in range(3):
            chosen = port or free_port()
            settings = {"BIND_ADDR": f"127.0.0.1:{chosen}", "PYTHONUNBUFFERED": "1"}
            if auth:
                settings["JWT_SECRET"] = secrets.token_urlsafe(36)
            if api_keys:
                settings["PUBLISH_API_KEY"] = "pub-" + secrets.token_urlsafe(24)
                settings["ADMIN_API_KEY"] = "adm-" + secrets.token_urlsafe(24)
            settings.update(env or {})
            full_env = clean_environ()
            full_env.update({name: value for name, value in settings.items() if value})
            cwd = self.workdir / f"server-{len(self.started)}"
            cwd.mkdir()
            server = ServerProcess(
                args=args,
                env=full_env,
                cwd=cwd,
                port=chosen,
                secret=full_env.get("JWT_SECRET"),
                publish_key=full_env.get("PUBLISH_API_KEY"),
                admin_key=full_env.get("ADMIN_API_KEY"),
            )
            self.started.append(server)
            if not wait:
                return server
            try:
                server.wait_listening()
            except AssertionError:
                lost_race = "Address already in use" in server.stderr.text
                if not lost_race or port is not None or attempt == 2:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    def run(
        self, env: Mapping[str, str], *, args: Sequence[str] = (), timeout: float = EXIT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m pm_server` to its end with only `env` as its settings."""
        cwd = self.workdir / f"run-{uuid.uuid4().hex[:8]}"
        cwd.mkdir()
        full_env = clean_environ()
        full_env.update(env)
        return subprocess.run(
            [sys.executable, "-m", "pm_server", *args],
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerLauncher]:
    """Servers that live for the whole test module (tests use distinct tenants)."""
    launcher = ServerLauncher(tmp_path_factory.mktemp("servers"))
    try:
        yield launcher
    finally:
        launcher.kill_all()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerLauncher]:
    """Servers of one test: for shutdown and start-up behaviour."""
    launcher = ServerLauncher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.kill_all()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close every WebSocket client the test opened, whatever happened in it."""
    yield
    clients, _OPEN_CLIENTS[:] = list(_OPEN_CLIENTS), []
    await asyncio.gather(*(client.close() for client in clients))


@pytest.fixture
def tenant() -> str:
    """A tenant id no other test uses, so tests can share a server."""
    return f"tenant-{uuid.uuid4().hex[:12]}"
