"""A soak subscriber process: its share of the slots, each a connection at a time, checked.

Started by `soak.py` as `python soakworker.py`. It reads one JSON line, its `Assignment`,
from stdin; prints `{"ramped": n}` once each slot has subscribed once, then
`{"status": {...}}` every second; on a `stop` line it fences and closes every connection,
writes its result (windows, counters) to the file the assignment names, prints
`{"done": true}` and exits. Times are `time.monotonic()`, which every process on the
machine shares, so the parent can compare them with its publish answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import resource
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import pm_proto as pb
from pmws import HandshakeError, WebSocketClient, connect
from soakcheck import Stream, Window

_HOST: Final = "127.0.0.1"
_REPLY_SECS: Final = 10.0
_STATUS_EVERY_SECS: Final = 1.0
# A window fenced by a lost connection (no Pong): events answered this long before the loss
# must have arrived.
LOST_GRACE_SECS: Final = 2.0
# A connection still open this long after its token's exp + leeway was not closed 4001.
_EXPIRY_OVERDUE_SECS: Final = 15.0
# A 4001 this long before exp + leeway came too early.
_EXPIRY_EARLY_SECS: Final = 0.5
SENT_AT: Final = struct.Struct("<d")
"""An event's payload begins with its publish time (`time.monotonic()`, shared by processes)."""
LATENCY_BUCKETS: Final = 10_001
"""Publish-to-delivery latency in whole milliseconds; the last bucket is 10 s or more."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one worker does: its slots and how they behave."""

    port: int
    jwt_secret: str
    slots: list[tuple[int, str, str, bool]]  # (index, tenant, project, churning)
    token_mix: list[tuple[int, float]]  # (lifetime secs, share)
    leeway_secs: float  # the server's, to know when a 4001 is due
    fence_grace_secs: float
    mean_life_secs: float
    connect_concurrency: int
    seed: int
    result_path: str


class ConnectionLost(Exception):
    """The connection went before the answer came."""


class Refused(Exception):
    """The server answered a request with `Error`."""


class Link:
    """One connection of a slot, and what waits on it."""

    __slots__ = ("closed", "expires_at", "serial", "waiters", "wake", "welcome", "ws")

    def __init__(self, serial: int, expires_at: float) -> None:
        loop = asyncio.get_running_loop()
        self.serial = serial
        self.expires_at = expires_at  # wall clock: the token's exp + the server's leeway
        self.ws: WebSocketClient | None = None
        self.welcome: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.wake: asyncio.Future[str] = loop.create_future()  # "closed", "churn" or "stop"
        self.waiters: dict[str, asyncio.Future[pb.ServerMessage]] = {}

    @property
    def open(self) -> bool:
        return self.ws is not None and self.ws.open and not self.closed.done()

    def rouse(self, reason: str) -> None:
        if not self.wake.done():
            self.wake.set_result(reason)


class Worker:
    """This process's slots and what they counted."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.counts: Counter[str] = Counter()
        self.windows: list[Window] = []
        self.expiry_lateness: list[float] = []
        self.overdue: set[int] = set()
        self.delivered = 0
        self.latency_ms = [0] * LATENCY_BUCKETS
        self.stopping = False
        self.serials = itertools.count(1)
        self.connect_slots = asyncio.Semaphore(assignment.connect_concurrency)
        self._stop = asyncio.Event()
        self._ttls = [ttl for ttl, _ in assignment.token_mix]
        total = sum(share for _, share in assignment.token_mix)
        self._edges = list(itertools.accumulate(share / total for _, share in assignment.token_mix))
        self.slots = [Slot(self, *slot) for slot in assignment.slots]
        self.ramped = 0

    def draw_ttl(self, rng: random.Random) -> int:
        """A token lifetime drawn from the mix (once per slot, so the mix holds all run)."""
        x = rng.random()
        for ttl, edge in zip(self._ttls, self._edges, strict=True):
            if x < edge:
                return ttl
        return self._ttls[-1]

    async def pause(self, secs: float) -> None:
        """Sleep, but no longer than until the worker stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), secs)

    def stop(self) -> None:
        """Every slot fences and closes its connection, then ends."""
        self.stopping = True
        self._stop.set()
        for slot in self.slots:
            if slot.link is not None:
                slot.link.rouse("stop")

    def status(self) -> dict[str, int]:
        """Counters for the parent's progress line; also notes overdue expiries."""
        wall = time.time()
        open_now = 0
        for slot in self.slots:
            link = slot.link
            if link is not None and link.open:
                open_now += 1
                if wall > link.expires_at + _EXPIRY_OVERDUE_SECS:
                    self.overdue.add(link.serial)
        return {
            "open": open_now,
            "delivered": self.delivered,
            "churned": self.counts["churned"],
            "expired": self.counts["expired_closes"],
            "ramped": self.ramped,
        }

    def result(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "windows": [w.as_row() for w in self.windows],
            "counts": dict(self.counts),
            "expiry_lateness": self.expiry_lateness,
            "overdue": len(self.overdue),
            "delivered": self.delivered,
            "latency_ms": self.latency_ms,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }


class Slot:
    """One subscriber position: a connection at a time, replaced when it ends.

    A `Window` spans the slot's connections for as long as every reconnection resumes
    with `recovered=true`; a churn (the client's choice) fences and ends it.
    """

    def __init__(
        self, worker: Worker, index: int, tenant: str, project: str, churning: bool
    ) -> None:
        self.worker = worker
        self.stream: Stream = (tenant, project)
        self.tenant, self.project = tenant, project
        self.user = f"u{index}"
        self.churning = churning
        self.rng = random.Random(worker.assignment.seed * 1_000_003 + index)
        # Every connection of the slot gets a token this long: a slot of 60-s tokens that
        # isn't churned is closed 4001 and resumes again and again.
        self.ttl = worker.draw_ttl(self.rng)
        self.link: Link | None = None
        self.window: Window | None = None
        self.subscribed_once = False
        self._resuming = False
        self._subscribe_id = ""
        self._lost_at = 0.0
        self._ids = itertools.count(1)

    async def run(self) -> None:
        """Connect, subscribe, wait for the connection's end, reconnect; until the stop."""
        worker = self.worker
        mean_life = worker.assignment.mean_life_secs
        life = self.rng.uniform(0, 1.5 * mean_life)  # the first: spread over one generation
        while not worker.stopping:
            try:
                link = await self._open()
            except (HandshakeError, OSError, TimeoutError, ConnectionLost, Refused) as exc:
                reason = exc.reason if isinstance(exc, HandshakeError) else type(exc).__name__
                worker.counts[f"connect_failed:{reason}"] += 1
                self._drop()
                await worker.pause(1.0)
                continue
            if worker.stopping:
                link.rouse("stop")
            timer = None
            if self.churning:
                timer = asyncio.get_running_loop().call_later(life, link.rouse, "churn")
            reason = await link.wake
            if timer is not None:
                timer.cancel()
            if reason == "closed":
                self._server_closed(link)
                continue
            await self._fence(link)
            graceful = reason == "stop" or self.rng.random() < 0.5
            await self._close(link, graceful=graceful)
            if reason == "churn":
                worker.counts["churned"] += 1
                worker.counts["churned_graceful" if graceful else "churned_reset"] += 1
                life = self.rng.uniform(0.5 * mean_life, 1.5 * mean_life)
        if self.window is not None:
            self._end_window(self._lost_at, LOST_GRACE_SECS)

    async def _open(self) -> Link:
        worker = self.worker
        assignment = worker.assignment
        async with worker.connect_slots:
            ttl = self.ttl
            now = int(time.time())
            claims = {"sub": self.user, "tenant_id": self.tenant, "iat": now, "exp": now + ttl}
            token = jwt.encode(claims, assignment.jwt_secret, algorithm="HS256")
            link = Link(next(worker.serials), now + ttl + assignment.leeway_secs)
            self.link = link
            link.ws = await connect(
                _HOST,
                assignment.port,
                token,
                on_message=lambda data: self._on_message(link, data),
                on_close=lambda code: self._on_close(link, code),
                handshake_secs=_REPLY_SECS,
            )
            await asyncio.wait_for(asyncio.shield(link.welcome), _REPLY_SECS)
        worker.counts["connects"] += 1
        subscribe = pb.Subscribe(project_ids=[self.project])
        self._resuming = self.window is not None
        if self.window is not None:
            subscribe.resume_from.epoch = self.window.epoch
            subscribe.resume_from.seq = self.window.last_seq
        self._subscribe_id = f"s{next(self._ids)}"
        request = pb.ClientMessage(request_id=self._subscribe_id, subscribe=subscribe)
        await self._request(link, request)
        if not self.subscribed_once:
            self.subscribed_once = True
            worker.ramped += 1
        return link

    async def _request(self, link: Link, message: pb.ClientMessage) -> pb.ServerMessage:
        if not link.open or link.ws is None:
            raise ConnectionLost
        answer: asyncio.Future[pb.ServerMessage] = asyncio.get_running_loop().create_future()
        link.waiters[message.request_id] = answer
        link.ws.send(message.SerializeToString())
        reply = await asyncio.wait_for(answer, _REPLY_SECS)
        if reply.WhichOneof("payload") == "error":
            raise Refused(reply.error.code)
        return reply

    def _on_message(self, link: Link, data: bytes) -> None:
        message = pb.ServerMessage.FromString(data)
        kind = message.WhichOneof("payload")
        if kind == "event":
            window = self.window
            if link is not self.link or window is None or window.end_at is not None:
                self.worker.counts["events_after_fence"] += 1
                return
            event = message.event
            position = event.position
            window.receive(position.epoch, position.seq, event.scope.project_id == self.project)
            worker = self.worker
            worker.delivered += 1
            late_ms = int((time.monotonic() - SENT_AT.unpack_from(event.payload)[0]) * 1000)
            worker.latency_ms[min(late_ms, LATENCY_BUCKETS - 1)] += 1
            return
        if kind == "welcome":
            if not link.welcome.done():
                link.welcome.set_result(None)
            return
        counts = self.worker.counts
        if kind == "ack" and message.request_id == self._subscribe_id and link is self.link:
            self._subscribed(message.ack)
        elif kind == "error":
            counts[f"server_error:{message.error.code}"] += 1
        elif kind == "closing":
            counts[f"closing:{message.closing.code}"] += 1
        elif kind not in ("ack", "pong"):
            counts[f"unexpected_message:{kind}"] += 1
        waiter = link.waiters.pop(message.request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def _subscribed(self, ack: pb.Ack) -> None:
        # Runs in the message callback, before any event that follows the Ack is counted.
        counts = self.worker.counts
        if self._resuming and self.window is not None:
            counts["resumes"] += 1
            if ack.recovered:
                counts["resumes_recovered"] += 1
                counts["replayed"] += ack.replayed
                return
            counts["resumes_unrecovered"] += 1
            self._end_window(self._lost_at, LOST_GRACE_SECS)
        self.window = Window(self.stream, ack.position.epoch, ack.position.seq)

    def _on_close(self, link: Link, code: int) -> None:
        self._lost_at = asyncio.get_running_loop().time()
        if not link.closed.done():
            link.closed.set_result(code)
        for waiter in link.waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionLost())
        link.waiters.clear()
        if not link.welcome.done():
            link.welcome.set_exception(ConnectionLost())
        link.rouse("closed")

    def _server_closed(self, link: Link) -> None:
        code = link.closed.result() if link.closed.done() else 1006
        counts = self.worker.counts
        if code == 4001:
            counts["expired_closes"] += 1
            lateness = time.time() - link.expires_at
            self.worker.expiry_lateness.append(lateness)
            if lateness < -_EXPIRY_EARLY_SECS:
                counts["expired_early"] += 1
        else:
            counts[f"unexpected_close:{code}"] += 1
        # The window stays open: the next connection resumes from its last seq.

    async def _fence(self, link: Link) -> None:
        sent_at = asyncio.get_running_loop().time()
        ping = pb.ClientMessage(request_id=f"f{next(self._ids)}", ping=pb.Ping())
        grace = self.worker.assignment.fence_grace_secs
        try:
            await self._request(link, ping)
        except (TimeoutError, ConnectionLost, Refused):
            self.worker.counts["fence_failed"] += 1
            grace = LOST_GRACE_SECS
        if self.window is not None:
            self._end_window(sent_at, grace)

    async def _close(self, link: Link, *, graceful: bool) -> None:
        ws = link.ws
        if ws is not None:
            if graceful:
                ws.close(1000)
            else:
                ws.reset()
            with contextlib.suppress(TimeoutError, ConnectionLost):
                await asyncio.wait_for(asyncio.shield(link.closed), _REPLY_SECS)
        self.link = None

    def _drop(self) -> None:
        link, self.link = self.link, None
        if link is not None and link.ws is not None:
            link.ws.reset()

    def _end_window(self, at: float, grace: float) -> None:
        window, self.window = self.window, None
        if window is not None:
            window.end(at, grace)
            self.worker.windows.append(window)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _serve() -> tuple[str, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fields = json.loads(await reader.readline())
    fields["slots"] = [tuple(slot) for slot in fields["slots"]]
    fields["token_mix"] = [tuple(pair) for pair in fields["token_mix"]]
    assignment = Assignment(**fields)
    worker = Worker(assignment)
    tasks = [asyncio.create_task(slot.run()) for slot in worker.slots]
    stop_line = asyncio.create_task(reader.readline())
    ramp_told = False
    while not stop_line.done():
        await asyncio.wait({stop_line}, timeout=_STATUS_EVERY_SECS)
        status = worker.status()
        if not ramp_told and worker.ramped == len(worker.slots):
            ramp_told = True
            _say({"ramped": worker.ramped})
        _say({"status": status})
    worker.stop()
    done, stuck = await asyncio.wait(tasks, timeout=3 * _REPLY_SECS)
    for task in stuck:
        task.cancel()
        worker.counts["slot_stuck"] += 1
    for task in done:
        if task.exception() is not None:
            worker.counts[f"slot_crashed:{type(task.exception()).__name__}"] += 1
    return assignment.result_path, worker.result()


def main() -> None:
    """Read the assignment from stdin and run it until told to stop."""
    path, result = asyncio.run(_serve())
    Path(path).write_text(json.dumps(result))
    _say({"done": True})


if __name__ == "__main__":
    main()
