"""The Redis faults of the chaos tests: killed, paused, put to sleep, its subscribers cut."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.redis.harness import RedisProcess, RedisUser


@dataclass(frozen=True)
class _DebugCommandSwitch(RedisUser):
    """`--enable-debug-command local`: DEBUG SLEEP from 127.0.0.1 only.

    RedisProcess adds each of its users' `config()` to the command line; this
    one adds a setting instead of a user (Redis 7 refuses DEBUG by default
    and cannot enable it at run time).
    """

    name: str = ""
    password: str = ""

    def config(self) -> list[str]:
        return ["--enable-debug-command", "local"]


class ChaosRedis(RedisProcess):
    """A RedisProcess that can also be killed, paused, put to sleep or cut from its subscribers.

    Every method that waits returns when Redis says the fault is over (its
    answer to a command queued behind it), never after a guessed delay.
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, users=[_DebugCommandSwitch()])

    def pid(self) -> int:
        with self.client() as client:
            info = client.info("server")
        return int(info["process_id"])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; the next `start` (same port) is empty."""
        os.kill(self.pid(), signal.SIGKILL)
        self.stop()  # only reaps the dead process and forgets it

    def kill_pubsub_clients(self) -> int:
        """`CLIENT KILL TYPE pubsub`; how many connections Redis dropped."""
        with self.client() as client:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))

    def pause_all(self, millis: int) -> None:
        """`CLIENT PAUSE <millis> ALL`: every client's commands wait until it ends."""
        with self.client() as client:
            client.execute_command("CLIENT", "PAUSE", str(millis), "ALL")

    async def until_answering(self) -> None:
        """Return once Redis answers a PING (it waits behind a pause or a sleep)."""

        def ping() -> None:
            with self.client() as client:
                client.ping()

        await asyncio.to_thread(ping)

    async def debug_sleep(self, secs: float) -> None:
        """`DEBUG SLEEP <secs>`: Redis does nothing at all (not even read sockets) meanwhile.

        Returns when the sleep is over (the command answers then).
        """

        def sleep() -> None:
            with self.client() as client:
                client.execute_command("DEBUG", "SLEEP", str(secs))

        await asyncio.to_thread(sleep)
