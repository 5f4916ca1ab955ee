"""Real `pm-server` processes on free local ports, and the HTTP and WebSocket ways to use one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import aiohttp
import pm_proto as pb
from multidict import CIMultiDict, CIMultiDictProxy

from pm_testkit.client import Client, HttpAnswer, OpenClients, open_client, refused
from pm_testkit.ports import free_port
from pm_testkit.process import ProcessOutput, terminate
from pm_testkit.tokens import Credentials, make_token
from pm_testkit.waiting import WAIT_SECS, wait_until

__all__ = [
    "PM_SERVER",
    "Published",
    "ServerLauncher",
    "ServerPair",
    "ServerProcess",
    "server_environment",
    "subscribers",
]

PM_SERVER: Final = (sys.executable, "-m", "pm_server")
"""The command of a pm-server from this interpreter's environment."""

_START_SECS: Final = 30.0
"""Deadline of a start-up: imports are slow on a busy two-core machine."""

_EXIT_SECS: Final = 20.0
"""Deadline of an exit after a signal (a drain with clients is bounded by the server's own)."""

_PASSED_ON: Final = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "COVERAGE_PROCESS_START",
)
_TRACEBACK: Final = "Traceback (most recent call last)"
_TRACEBACK_LINES: Final = 30


def server_environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child server's environment: what Python needs from ours, then `settings`.

    Nothing else of this process's environment is passed on, so no
    pm-realtime setting of the developer's (or of CI) changes what a test
    sees. An empty value in `settings` leaves the variable out.
    """
    env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
    for name, value in (settings or {}).items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


@dataclass(frozen=True)
class Published:
    """Where the server put a published event."""

    event_id: str
    position: pb.StreamPosition

    @classmethod
    def of(cls, answer: HttpAnswer) -> Published:
        """The event a 200 answer of the publish API (as protobuf) tells about."""
        assert answer.status == 200, (answer.status, answer.body)
        response = pb.PublishResponse.FromString(answer.body)
        return cls(response.event_id, response.position)

    @property
    def epoch(self) -> str:
        """The epoch of the tenant's stream the event is in."""
        return self.position.epoch

    @property
    def seq(self) -> int:
        """The event's number in its epoch."""
        return self.position.seq


class ServerProcess:
    """One server process on `127.0.0.1:port`, and the helpers to talk to it.

    The command is pm-server by default; any other program can be run (the
    bench's baseline hub). It runs in `workdir` (so no `.env` of the
    repository is read) with `env` as its whole environment, and writes its
    stdout and stderr to `<name>.stdout` and `<name>.stderr` in `workdir`,
    read back by `stdout` and `stderr`. `secret`, `publish_key` and
    `admin_key` are what `env` set (None where it set nothing).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        port: int,
        name: str = "pm-server",
        args: Sequence[str] = (),
        command: Sequence[str] = PM_SERVER,
        clients: OpenClients | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.port = port
        self.name = name
        self.args = tuple(args)
        self.command = tuple(command)
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout = ProcessOutput(workdir / f"{name}.stdout", f"{name} stdout", self._exited)
        self.stderr = ProcessOutput(workdir / f"{name}.stderr", f"{name} stderr", self._exited)
        self._clients = clients
        self._checked_lines = 0

    @property
    def secret(self) -> str | None:
        """The server's JWT_SECRET."""
        return self.env.get("JWT_SECRET")

    @property
    def publish_key(self) -> str | None:
        """The server's PUBLISH_API_KEY."""
        return self.env.get("PUBLISH_API_KEY")

    @property
    def admin_key(self) -> str | None:
        """The server's ADMIN_API_KEY."""
        return self.env.get("ADMIN_API_KEY")

    # The process

    def start(self) -> Self:
        """Start the process (and return at once: see `wait_listening` and `wait_ready`)."""
        assert self.proc is None, f"{self.name} was started already"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.stdout.path.open("ab") as out, self.stderr.path.open("ab") as err:
            self.proc = subprocess.Popen(
                [*self.command, *self.args],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        return self

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def pid(self) -> int:
        """The process id (of the supervisor, with `--workers`)."""
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while it runs."""
        return None if self.proc is None else self.proc.poll()

    def assert_running(self) -> None:
        """Fail with the end of its log when the process has exited (a shared server died)."""
        assert self.proc is not None, f"{self.name} was not started"
        assert self.returncode is None, f"{self.name} exited:\n{self.stderr.text[-4000:]}"

    def wait_listening(self, *, count: int = 1, within: float = _START_SECS) -> str:
        """Wait for the `count`-th `listening on` line (one per worker); that line."""
        return self.stderr.wait_for("listening on ", count=count, within=within).string

    async def wait_accepting(self, within: float = _START_SECS) -> None:
        """Until the port accepts a TCP connection: readiness of any program (the bench's hub).

        Fails at once, with the end of its log, when the process exits first.
        """

        async def accepting() -> bool:
            self.assert_running()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await wait_until(accepting, within=within, what=f"{self.name} accepting on {self.port}")

    async def wait_log(self, pattern: str, *, count: int = 1, within: float = WAIT_SECS) -> str:
        """Wait for the `count`-th stderr line matching the regex `pattern`; that line."""
        return (await self.stderr.wait(pattern, count=count, within=within)).string

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` (SIGTERM by default) to the process."""
        assert self.proc is not None, f"{self.name} was not started"
        self.proc.send_signal(signum)

    def wait_exit(self, within: float = _EXIT_SECS) -> int:
        """Wait for the process to end; its exit code (fails with its log at the deadline)."""
        assert self.proc is not None, f"{self.name} was not started"
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running {within:g} s later:\n{self.stderr.text[-4000:]}"
            ) from None

    async def await_exit(self, within: float = _EXIT_SECS) -> int:
        """`wait_exit` without blocking the event loop (clients keep answering meanwhile)."""
        return await asyncio.to_thread(self.wait_exit, within)

    def stop(self, signum: int = signal.SIGTERM, within: float = _EXIT_SECS) -> int:
        """Send `signum` and wait for the exit code."""
        self.send_signal(signum)
        return self.wait_exit(within)

    async def stop_async(self, signum: int = signal.SIGTERM, *, within: float = _EXIT_SECS) -> int:
        """`stop` without blocking the event loop."""
        self.send_signal(signum)
        return await self.await_exit(within)

    def close(self, *, grace: float = 5.0) -> int | None:
        """Stop the process on any path: SIGTERM twice, `grace` seconds each, then SIGKILL.

        A supervisor's workers are killed with it. Returns the exit code, or
        None when it had to be killed (or never started).
        """
        if self.proc is None:
            return None
        return terminate(self.proc, signals=(signal.SIGTERM, signal.SIGTERM), within=grace)

    def kill(self) -> None:
        """SIGKILL the process (and a supervisor's workers) at once, and reap it."""
        if self.proc is not None:
            terminate(self.proc, signals=(), within=0)

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as a JSON object (for `LOG_FORMAT=json`)."""
        records = []
        for line in self.stderr.lines:
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def new_tracebacks(self) -> list[str]:
        """Tracebacks on stderr since the last call: a server-side exception is a bug."""
        lines = self.stderr.lines
        start, self._checked_lines = self._checked_lines, len(lines)
        return [
            "\n".join(lines[max(0, i - 1) : i + _TRACEBACK_LINES])
            for i in range(start, len(lines))
            if _TRACEBACK in lines[i]
        ]

    # Tokens and HTTP

    def token(
        self, tenant: str, user: str = "u1", *, expires_in: float = 3600, **claims: Any
    ) -> str:
        """An HS256 token of `tenant` and `user` signed with the server's JWT_SECRET."""
        assert self.secret is not None, f"{self.name} was not given a JWT_SECRET"
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
        within: float = WAIT_SECS,
        **kwargs: Any,
    ) -> HttpAnswer:
        """One request over a new connection (with `--workers`, the kernel picks the worker).

        `bearer` becomes the Authorization header; `kwargs` go to aiohttp.
        Raises aiohttp's errors when the server can't be reached.
        """
        sent = dict(headers or {})
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        timeout = aiohttp.ClientTimeout(total=within)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, self.url + path, data=data, json=json_body, headers=sent, **kwargs
            ) as response,
        ):
            body = await response.read()
            return HttpAnswer(
                response.status, CIMultiDictProxy(CIMultiDict(response.headers)), body
            )

    async def get(self, path: str, **kwargs: Any) -> HttpAnswer:
        """`http("GET", path, ...)`."""
        return await self.http("GET", path, **kwargs)

    async def post_publish(
        self,
        body: Any,
        content_type: str = "application/x-protobuf",
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """POST `body` to the publish API with `key` (the server's publish key by default)."""
        return await self.http(
            "POST",
            "/api/v1/publish",
            data=body,
            headers={"Content-Type": content_type, **(headers or {})},
            bearer=key if key is not None else self.publish_key,
        )

    async def try_publish(
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
    ) -> HttpAnswer:
        """Publish one event through the HTTP API as protobuf; the answer, whatever it is."""
        request = pb.PublishRequest(
            tenant_id=tenant,
            type=type,
            scope=pb.Scope(project_id=project, sprint_id=sprint, work_item_id=item),
            payload=payload,
            actor_user_id=actor,
            event_id=event_id,
        )
        return await self.post_publish(request.SerializeToString())

    async def publish(
        self, tenant: str, project: str, sprint: str = "", item: str = "", **fields: Any
    ) -> Published:
        """`try_publish`, which must be answered 200; where the event was put."""
        return Published.of(await self.try_publish(tenant, project, sprint, item, **fields))

    async def post_json(self, path: str, body: str | bytes, *, bearer: str | None) -> HttpAnswer:
        """POST `body` as is with a JSON content type (a malformed one, on purpose, say)."""
        headers = {"Content-Type": "application/json"}
        return await self.http("POST", path, data=body, headers=headers, bearer=bearer)

    async def disconnect(self, tenant: str, **target: str) -> HttpAnswer:
        """Ask the admin API to close `tenant`'s connections matching `target` (user_id, ...)."""
        return await self.http(
            "POST",
            "/api/v1/disconnect",
            json_body={"tenant_id": tenant, **target},
            bearer=self.admin_key,
        )

    async def health(self) -> dict[str, Any]:
        """The `/health` document."""
        document: dict[str, Any] = (await self.get("/health")).json()
        return document

    async def wait_connections(self, count: int, *, within: float = WAIT_SECS) -> None:
        """Poll `/health` until the server holds exactly `count` connections."""
        seen: list[int] = []

        async def holds() -> bool:
            seen.append((await self.health())["connections"]["total"])
            return seen[-1] == count

        await wait_until(holds, within=within, what=lambda: f"{seen[-1:]} connections, not {count}")

    async def wait_ready(self, status: int = 200, *, within: float = WAIT_SECS) -> HttpAnswer:
        """Poll `/ready` until it answers `status` (503 while the broker is away); that answer.

        A refused connection counts as not yet (the process may still be
        starting); the process exiting fails the wait at once.
        """
        last: list[HttpAnswer | str] = []

        async def answers() -> bool:
            self.assert_running()
            try:
                last.append(await self.get("/ready", within=2.0))
            except (aiohttp.ClientError, TimeoutError) as exc:
                last.append(repr(exc))
                return False
            return isinstance(last[-1], HttpAnswer) and last[-1].status == status

        await wait_until(
            answers, within=within, what=lambda: f"/ready answers {status}: {last[-1:]}"
        )
        answer = last[-1]
        assert isinstance(answer, HttpAnswer)
        return answer

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
        """Upgrade with `token` (see `open_client`).

        A tracked client is closed after the test; one opened by a fixture in
        an event loop of its own passes `track=False` and closes it itself.
        """
        return await open_client(
            url or self.ws_url,
            token,
            subprotocol=subprotocol,
            track=self._clients if track else None,
            **kwargs,
        )

    async def connect(self, tenant: str, user: str = "u1", **kwargs: Any) -> Client:
        """A client of `tenant` as `user`, past its Welcome (kept as `client.welcome`)."""
        client = await self.open_ws(self.token(tenant, user), **kwargs)
        client.welcome = (await client.recv_kind("welcome")).welcome
        return client

    async def refused(self, token: str | None = None, **kwargs: Any) -> HttpAnswer:
        """Attempt an upgrade that must be refused; the HTTP answer it got instead."""
        url = kwargs.pop("url", None) or self.ws_url
        return await refused(url, token, **kwargs)


ServerPair = tuple[ServerProcess, ServerProcess]
"""Two servers sharing a Redis (the `server_pair` fixture)."""


async def subscribers(
    servers: Sequence[ServerProcess], tenant: str, projects: Sequence[str] = ("p1",)
) -> list[Client]:
    """One client of `tenant` on each of `servers`, in order, subscribed to `projects`."""
    clients = [await server.connect(tenant) for server in servers]
    for client in clients:
        await client.subscribe(projects)
    return clients


class ServerLauncher:
    """Starts pm-server processes that share credentials, and stops every one of them.

    Servers of one launcher get the same JWT secret and API keys (clients
    and publishers can use any of them, as behind a load balancer), each
    its own port and working directory below `workdir`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        credentials: Credentials | None = None,
        clients: OpenClients | None = None,
    ) -> None:
        self.workdir = workdir
        self.credentials = credentials or Credentials.generate()
        self.started: list[ServerProcess] = []
        self._clients = clients
        self._runs = 0

    def prepare(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        args: Sequence[str] = (),
        auth: bool = True,
        api_keys: bool = True,
        port: int | None = None,
    ) -> ServerProcess:
        """A server not started yet: `ServerProcess.start` it (`start` also waits).

        The environment holds the bind address, unbuffered output, logs
        without colours and a 5 s drain; with `auth` the JWT secret, with `api_keys` the
        publish and admin keys; then `settings` (an empty value unsets).
        """
        chosen = port or free_port()
        base = {
            "BIND_ADDR": f"127.0.0.1:{chosen}",
            "PYTHONUNBUFFERED": "1",
            "LOG_COLORED": "false",
            "SHUTDOWN_TIMEOUT_SECS": "5",
        }
        if auth:
            base["JWT_SECRET"] = self.credentials.jwt_secret
        if api_keys:
            base["PUBLISH_API_KEY"] = self.credentials.publish_key
            base["ADMIN_API_KEY"] = self.credentials.admin_key
        name = name or f"server-{len(self.started)}"
        server = ServerProcess(
            self.workdir / f"{len(self.started)}-{name}",
            env=server_environment({**base, **(settings or {})}),
            port=chosen,
            name=name,
            args=args,
            clients=self._clients,
        )
        self.started.append(server)
        return server

    def start(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        args: Sequence[str] = (),
        auth: bool = True,
        api_keys: bool = True,
        port: int | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        """Start a server (see `prepare`) and, with `wait`, return once it listens.

        A free port taken by another process meanwhile is retried on another
        (twice); a `port` given is not.
        """
        for attempt in range(3):
            server = self.prepare(
                settings, name=name, args=args, auth=auth, api_keys=api_keys, port=port
            ).start()
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

    async def start_async(
        self, settings: Mapping[str, str] | None = None, **options: Any
    ) -> ServerProcess:
        """`start` without blocking the event loop (a publisher task keeps running meanwhile)."""
        return await asyncio.to_thread(self.start, settings, **options)

    def start_all(
        self, names: Sequence[str], settings: Mapping[str, str] | None = None
    ) -> list[ServerProcess]:
        """Start one server per name at once, then wait until each listens."""
        servers = [self.prepare(settings, name=name).start() for name in names]
        for server in servers:
            server.wait_listening()
        return servers

    def run(
        self,
        settings: Mapping[str, str],
        *,
        args: Sequence[str] = (),
        within: float = _EXIT_SECS,
    ) -> subprocess.CompletedProcess[str]:
        """Run pm-server to its end with only `settings` (nothing of this launcher's)."""
        self._runs += 1
        cwd = self.workdir / f"run-{self._runs}"
        cwd.mkdir(parents=True)
        return subprocess.run(
            [*PM_SERVER, *args],
            env=server_environment(settings),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=within,
            check=False,
        )

    def running(self) -> list[ServerProcess]:
        """The servers started and not exited."""
        return [server for server in self.started if server.proc and server.returncode is None]

    def close_all(self) -> None:
        """Stop every server started (see `ServerProcess.close`)."""
        for server in self.started:
            server.close()
