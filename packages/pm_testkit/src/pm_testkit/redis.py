"""A throwaway `redis-server` of a test's own, which the test may stop, kill, pause or cut."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pm_testkit.ports import free_port
from pm_testkit.process import terminate
from pm_testkit.waiting import WAIT_SECS, block_until

__all__ = ["REDIS_SERVER", "RedisServer", "RedisUser"]

REDIS_SERVER: Final = shutil.which("redis-server")
"""The redis-server binary on PATH (None when Redis is not installed: tests skip)."""


@dataclass(frozen=True)
class RedisUser:
    """An ACL user with every permission, made on the command line so that it survives restarts."""

    name: str
    password: str

    def arguments(self) -> list[str]:
        """The `--user` arguments of redis-server that create this user."""
        return ["--user", self.name, "on", f">{self.password}", "~*", "&*", "+@all"]


class RedisServer:
    """A redis-server without persistence, in its own directory, on a free port of 127.0.0.1.

    `stop` then `start` (or `restart`) keeps the port, so clients reconnect to
    the same URL, but not the data unless `stop(keep_data=True)` saved it.
    `DEBUG` is enabled for local clients (`sleep`). Needs redis-server 7 or later.
    """

    def __init__(
        self, workdir: Path, *, users: Sequence[RedisUser] = (), port: int | None = None
    ) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self.workdir = workdir
        self.users = tuple(users)
        self.log = workdir / f"redis-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`, as the default user."""
        return self.url_for(None)

    def url_for(self, user: RedisUser | None) -> str:
        """The URL of database 0 with `user`'s credentials (the default user for None)."""
        credentials = f"{user.name}:{user.password}@" if user is not None else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous admin client that fails at once instead of retrying."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        assert self._process is not None, "redis-server is not running"
        return self._process.pid

    def start(self) -> Self:
        """Start the server; return once it answers PING (raise at the deadline or its exit)."""
        assert self._process is None, "redis-server is running already"
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--enable-debug-command", "local",
        ]  # fmt: skip
        for user in self.users:
            args += user.arguments()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        process = self._process
        try:
            block_until(
                lambda: self._answers() or process.poll() is not None,
                within=WAIT_SECS,
                what="redis-server answering PING",
            )
        except AssertionError:
            self.stop()
            raise
        if process.poll() is not None:
            self._process = None
            raise RuntimeError(f"redis-server exited:\n{self.log.read_text()}")
        return self

    def _answers(self) -> bool:
        with self.client() as client, contextlib.suppress(redis.ConnectionError):
            return bool(client.ping())
        return False

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server and wait for it to exit (SIGTERM, then SIGKILL).

        With `keep_data` it saves a snapshot on the way out (SHUTDOWN SAVE),
        which the next `start` loads; otherwise the next start is empty.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if keep_data:
            with self.client() as client, contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(WAIT_SECS)
        terminate(process, within=WAIT_SECS)
        if not keep_data:
            (self.workdir / "dump.rdb").unlink(missing_ok=True)

    def restart(self, *, keep_data: bool = False) -> None:
        """`stop` then `start` on the same port."""
        self.stop(keep_data=keep_data)
        self.start()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; the next `start` (same port) is empty."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            (self.workdir / "dump.rdb").unlink(missing_ok=True)

    def pause(self, millis: int) -> None:
        """`CLIENT PAUSE <millis> ALL`: every client's commands wait until the pause ends."""
        with self.client() as client:
            client.execute_command("CLIENT", "PAUSE", str(millis), "ALL")

    def kill_pubsub_clients(self) -> int:
        """`CLIENT KILL TYPE pubsub`; how many connections Redis dropped."""
        with self.client() as client:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))

    async def sleep(self, secs: float) -> None:
        """`DEBUG SLEEP <secs>`: Redis does nothing at all meanwhile, not even read sockets.

        Returns when the sleep is over (the command answers then).
        """
        await asyncio.to_thread(self._command, "DEBUG", "SLEEP", str(secs))

    async def until_answering(self) -> None:
        """Return once Redis answers a PING (which waits behind a pause or a sleep)."""
        await asyncio.to_thread(self._command, "PING")

    def _command(self, *args: str) -> None:
        with self.client() as client:
            client.execute_command(*args)
