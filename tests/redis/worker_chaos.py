"""Killing `--workers` processes while watching the port: pids, a /live prober, a publisher."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from pm_testkit import POLL_SECS, WAIT_SECS, Published, ServerProcess, wait_until

_STARTED = re.compile(r"started worker (?P<name>\S+) \(pid (?P<pid>\d+)\)")
_REQUEST_SECS = 5.0


def started_workers(server: ServerProcess) -> dict[str, int]:
    """Each worker slot's latest pid, from the supervisor's `started worker NAME (pid N)` lines."""
    return {
        match["name"]: int(match["pid"])
        for line in server.stderr.lines
        if (match := _STARTED.search(line)) is not None
    }


def parent_pid(pid: int) -> int:
    """The parent of a live process (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has closed its sockets


async def wait_gone(pid: int, within: float = WAIT_SECS) -> None:
    """Until `pid` has exited (reaped, or a zombie whose sockets are closed)."""
    await wait_until(lambda: _gone(pid), within=within, what=f"process {pid} to exit")


@dataclass(frozen=True)
class Probe:
    """One GET /live: when it started and ended (monotonic), and its status or the error."""

    started: float
    ended: float
    outcome: int | str

    def overlaps(self, start: float, end: float) -> bool:
        """Whether the request was under way at some moment from `start` to `end`."""
        return self.started <= end and self.ended >= start


class LiveProbe:
    """Asks `GET /live` over and over, one request at a time, until the `async with` ends.

    Each request has a TCP connection of its own, so the kernel picks a worker for each.
    """

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self.probes: list[Probe] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveProbe:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                outcome: int | str = (await self._server.get("/live", within=_REQUEST_SECS)).status
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = repr(exc)
            self.probes.append(Probe(started, time.monotonic(), outcome))
            # Paces the prober (about 50 probes/s) without synchronising anything.
            await asyncio.sleep(POLL_SECS)

    def failures(self) -> list[Probe]:
        return [probe for probe in self.probes if probe.outcome != 200]

    def answered_since(self, moment: float) -> int:
        return sum(probe.started >= moment and probe.outcome == 200 for probe in self.probes)


class Publisher:
    """Publishes events to one project, one after another, until the `async with` ends.

    Each event has its own `event_id`; a publish that fails (its worker was
    killed mid-request, say) is retried with the same id until answered 200,
    which the idempotent publish turns into exactly one event.
    """

    def __init__(self, server: ServerProcess, tenant: str, project: str) -> None:
        self._server = server
        self._tenant = tenant
        self._project = project
        self.published: list[Published] = []
        self.retries = 0
        self._stop = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Publisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def wait_for(self, count: int, within: float = WAIT_SECS) -> None:
        """Until at least `count` events were published (answered 200)."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: len(self.published) >= count), within
            )

    async def _run(self) -> None:
        while not self._stop.is_set():
            published = await self._publish(f"ev-{uuid.uuid4().hex[:12]}")
            async with self._progress:
                self.published.append(published)
                self._progress.notify_all()
            # Paces the publisher (about 50 events/s) without synchronising anything.
            await asyncio.sleep(POLL_SECS)

    async def _publish(self, event_id: str) -> Published:
        deadline = time.monotonic() + WAIT_SECS
        while True:
            try:
                answer = await self._server.try_publish(
                    self._tenant, self._project, event_id=event_id
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure: object = repr(exc)
            else:
                if answer.status == 200:
                    return Published.of(answer)
                failure = (answer.status, answer.body)
            assert time.monotonic() < deadline, f"publish {event_id} kept failing: {failure}"
            self.retries += 1
            await asyncio.sleep(POLL_SECS)
