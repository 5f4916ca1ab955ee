"""Load for the chaos tests: a paced publisher and resuming subscribers that record everything.

Both sides keep a plain record (`PublishAttempt`s, journals of `Entry`s) for
`invariants.delivery_violations`; nothing here asserts. `run_under_load`
puts them together around one fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import pm_proto as pb
from pm_testkit import WAIT_SECS, ServerProcess
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.chaos.invariants import (
    Acked,
    Closed,
    ClosingReceived,
    Connected,
    Delivered,
    Entry,
    ErrorReceived,
    Observation,
    Position,
    PublishAttempt,
    PublishStatus,
    Refused,
    delivery_violations,
    summary,
)

# Large enough that history reaches back over every test's whole load: a resume
# is then recoverable unless Redis itself lost the events.
HISTORY_SIZE = 20_000
SERVER_SETTINGS = {"HISTORY_SIZE": str(HISTORY_SIZE)}
"""How the chaos tests' two gateways are started (their `pm_server` marker)."""
# SPEC §2: a client reconnects (and resumes) after these, and after an abnormal closure.
RECONNECT_CODES = frozenset({1001, 1011, 4008, 4009, 4011})
ABNORMAL = 1006
# How long a subscriber keeps trying to get a connection back, across every gateway.
RECONNECT_WITHIN = 20.0
# Pause after a round of failed connection attempts: a client's retry pacing.
_RETRY_PACE = 0.05
# A publish with no answer within this is UNKNOWN. Above the gateway's 2 s Redis
# timeout, so that a stalled Redis shows as the gateway's 503, not as our timeout.
PUBLISH_TIMEOUT = 5.0
_REFUSED = "connection refused"


def _position(message: pb.StreamPosition) -> Position:
    return Position(message.epoch, message.seq)


class Publisher:
    """Publishes to the tenant's project at a steady rate, round-robin over gateways.

    Every publish carries an event id of its own, so that what subscribers
    get can be matched with what was asked. A gateway that refuses the
    connection (it is down) is skipped for the next one: that request was
    never sent. At most `in_flight` publishes wait at once: when the broker
    stalls, the rate drops instead of piling up.
    """

    def __init__(
        self,
        gateways: Sequence[str],
        tenant: str,
        project: str,
        key: str,
        *,
        rate: float = 150.0,
        in_flight: int = 16,
    ) -> None:
        self.attempts: list[PublishAttempt] = []
        self._gateways = list(gateways)
        self._tenant = tenant
        self._project = project
        self._key = key
        self._interval = 1.0 / rate
        self._slots = asyncio.Semaphore(in_flight)
        self._pending: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def count(self, status: PublishStatus) -> int:
        return sum(a.status is status for a in self.attempts)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chaos publisher")

    async def stop(self) -> None:
        """Stop publishing and wait for every publish in flight to be answered (or time out)."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, PUBLISH_TIMEOUT + WAIT_SECS)

    async def wait_for(self, status: PublishStatus, count: int, *, within: float) -> None:
        """Wait until `count` more publishes than now have ended with `status`."""
        target = self.count(status) + count

        def done() -> bool:
            return self.count(status) >= target or (self._task is not None and self._task.done())

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(done), within)
        assert self.count(status) >= target, f"publisher stopped: {self.attempts[-5:]}"

    async def _run(self) -> None:
        started = time.monotonic()
        sent = 0
        async with aiohttp.ClientSession() as http:
            while not self._stopping.is_set():
                await self._slots.acquire()
                task = asyncio.create_task(self._publish(http, sent))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
                sent += 1
                # The load's pace: the next publish is due at its slot in a steady rate.
                delay = started + sent * self._interval - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
            if self._pending:
                await asyncio.wait(self._pending)

    async def _publish(self, http: aiohttp.ClientSession, number: int) -> None:
        event_id = f"e{number:06d}-{uuid.uuid4().hex[:8]}"
        count = len(self._gateways)
        try:
            for gateway in (self._gateways[(number + k) % count] for k in range(count)):
                attempt = await self._post(http, gateway, event_id)
                if attempt.detail != _REFUSED:
                    break
        finally:
            self._slots.release()
        self.attempts.append(attempt)
        async with self._changed:
            self._changed.notify_all()

    async def _post(
        self, http: aiohttp.ClientSession, gateway: str, event_id: str
    ) -> PublishAttempt:
        body = {
            "tenantId": self._tenant,
            "type": "work_item.updated",
            "scope": {"projectId": self._project},
            "eventId": event_id,
        }
        try:
            async with http.post(
                f"{gateway}/api/v1/publish",
                json=body,
                headers={"Authorization": f"Bearer {self._key}"},
                timeout=aiohttp.ClientTimeout(total=PUBLISH_TIMEOUT),
            ) as response:
                status, answer = response.status, await response.read()
        except aiohttp.ClientConnectorError:
            # Never sent: nothing can have been stored.
            return PublishAttempt(event_id, PublishStatus.FAILED, detail=_REFUSED)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return PublishAttempt(event_id, PublishStatus.UNKNOWN, detail=type(exc).__name__)
        if status == 504:
            # The gateway sent it but Redis did not answer in time: it may be stored.
            return PublishAttempt(event_id, PublishStatus.UNKNOWN, detail="HTTP 504")
        if status != 200:
            return PublishAttempt(event_id, PublishStatus.FAILED, detail=f"HTTP {status}")
        position = json.loads(answer)["position"]
        # proto-JSON writes uint64 as a string and leaves out zero values.
        stored = Position(position["epoch"], int(position.get("seq", "0")))
        return PublishAttempt(event_id, PublishStatus.STORED, stored)


class Subscriber:
    """A pm.v1 client that stays subscribed to one project through every fault.

    It connects to its home gateway first and falls back to the others. After
    a close that SPEC §2 says to reconnect after, or an abnormal closure, it
    reconnects at once (the `reconnect_after_ms` hint spreads a fleet; four
    clients needn't wait) and resumes from its position: the last event it
    got, or the position of an Ack that said `recovered=false` (where a real
    client refetches state). Every message and close goes into `journal`.
    """

    def __init__(self, name: str, gateways: Sequence[str], token: str, project: str) -> None:
        self.name = name
        self.journal: list[Entry] = []
        self.gave_up = ""
        self._gateways = list(gateways)
        self._token = token
        self._project = project
        self._position: Position | None = None
        self._progress = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._requests = 0
        self._resume_from: Position | None = None

    @property
    def closes(self) -> list[int]:
        return [e.code for e in self.journal if isinstance(e, Closed)]

    @property
    def errors(self) -> list[str]:
        return [e.code for e in self.journal if isinstance(e, ErrorReceived)]

    @property
    def closings(self) -> list[str]:
        return [e.code for e in self.journal if isinstance(e, ClosingReceived)]

    @property
    def resumes(self) -> list[Acked]:
        return [e for e in self.journal if isinstance(e, Acked) and e.resume_from is not None]

    @property
    def connected_to(self) -> list[str]:
        return [e.url for e in self.journal if isinstance(e, Connected)]

    async def start(self) -> None:
        """Connect and subscribe; returns once the first Ack came."""
        self._task = asyncio.create_task(self._run(), name=f"subscriber {self.name}")
        subscribed = asyncio.ensure_future(self._subscribed.wait())
        await asyncio.wait(
            {subscribed, self._task}, timeout=WAIT_SECS, return_when="FIRST_COMPLETED"
        )
        subscribed.cancel()
        assert self._subscribed.is_set(), f"{self.name} did not subscribe: {self.journal}"

    async def stop(self) -> None:
        """Close the connection (1000) and end; a client already gone just ends."""
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, WAIT_SECS)

    def has_reached(self, target: Position) -> bool:
        position = self._position
        return (
            position is not None and position.epoch == target.epoch and position.seq >= target.seq
        )

    async def reach(self, target: Position, *, within: float) -> bool:
        """Wait until the client is at `target` (or past it); False at the deadline."""
        deadline = time.monotonic() + within
        while not self.has_reached(target):
            left = deadline - time.monotonic()
            if left <= 0 or (self._task is not None and self._task.done()):
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return True

    def _record(self, entry: Entry) -> None:
        self.journal.append(entry)
        self._progress.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            connection = await self._connect(self._token)
            if connection is None:
                return
            code = await self._serve(*connection)
            self._record(Closed(code))
            if not self._stopping.is_set() and code not in RECONNECT_CODES and code != ABNORMAL:
                self.gave_up = f"closed with {code}"
                return

    async def _connect(self, token: str) -> tuple[ClientConnection, str] | None:
        deadline = time.monotonic() + RECONNECT_WITHIN
        attempt = 0
        while not self._stopping.is_set():
            url = self._gateways[attempt % len(self._gateways)]
            attempt += 1
            try:
                ws = await connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {token}"},
                    ping_interval=None,
                    open_timeout=WAIT_SECS,
                    close_timeout=2,
                    max_size=None,
                    proxy=None,
                )
                return ws, url
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                self._record(Refused(url, f"HTTP {status}" if status else type(exc).__name__))
            if time.monotonic() > deadline:
                self.gave_up = f"no gateway took a connection within {RECONNECT_WITHIN}s"
                return None
            if attempt % len(self._gateways) == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _RETRY_PACE)
        return None

    async def _serve(self, ws: ClientConnection, url: str) -> int:
        self._ws = ws
        try:
            async for data in ws:
                assert isinstance(data, bytes), data
                await self._handle(ws, url, pb.ServerMessage.FromString(data))
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.wait_closed(), WAIT_SECS)
        return ws.close_code or ABNORMAL

    async def _handle(self, ws: ClientConnection, url: str, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("payload")
        if kind == "welcome":
            welcome = message.welcome
            position = _position(welcome.position) if welcome.HasField("position") else None
            self._record(Connected(url, position))
            await self._subscribe(ws)
        elif kind == "ack":
            self._acked(message.ack)
        elif kind == "event":
            event = message.event
            self._delivered(Delivered(event.event_id, _position(event.position)))
        elif kind == "error":
            self._record(ErrorReceived(message.error.code))
        elif kind == "closing":
            closing = message.closing
            self._record(ClosingReceived(closing.code, closing.reconnect_after_ms))

    async def _subscribe(self, ws: ClientConnection) -> None:
        subscribe = pb.Subscribe(project_ids=[self._project])
        resume_from = self._position if self._subscribed.is_set() else None
        if resume_from is not None:
            subscribe.resume_from.CopyFrom(
                pb.StreamPosition(epoch=resume_from.epoch, seq=resume_from.seq)
            )
        self._requests += 1
        self._resume_from = resume_from
        await ws.send(
            pb.ClientMessage(
                request_id=f"s{self._requests}", subscribe=subscribe
            ).SerializeToString()
        )

    def _acked(self, ack: pb.Ack) -> None:
        position = _position(ack.position) if ack.HasField("position") else None
        resume_from = self._resume_from
        self._record(Acked(resume_from, ack.recovered, ack.replayed, position))
        if position is not None and (resume_from is None or not ack.recovered):
            self._position = position
        self._subscribed.set()

    def _delivered(self, event: Delivered) -> None:
        self._record(event)
        position, here = event.position, self._position
        # After a recovered=false Ack at P, events up to P are older than the refetched state.
        if here is None or here.epoch != position.epoch or position.seq > here.seq:
            self._position = position


async def read_history(
    gateways: Sequence[ServerProcess], tenant: str, project: str
) -> tuple[Position, list[Delivered], bool]:
    """The current epoch's whole history, as a resume from its seq 0 replays it.

    Tries each gateway in turn (some may be down). Returns the stream's
    position, the replayed events and whether the Ack said `recovered`.
    """
    for gateway in gateways:
        try:
            client = await gateway.connect(tenant, "auditor", track=False)
        except (OSError, InvalidHandshake, TimeoutError):
            continue
        try:
            start = pb.StreamPosition(epoch=client.welcome.position.epoch, seq=0)
            ack = await client.subscribe([project], resume_from=start)
            replayed = await client.events(ack.replayed)
        finally:
            await client.close()
        events = [Delivered(e.event_id, _position(e.position)) for e in replayed]
        return _position(ack.position), events, ack.recovered
    raise AssertionError(f"no gateway of {[g.ws_url for g in gateways]} took a connection")


@dataclass
class ChaosRun:
    """What one run under load recorded, for the invariant and for the test's own checks."""

    observation: Observation
    subscribers: dict[str, Subscriber]
    publisher: Publisher
    converged: dict[str, bool]


Fault = Callable[[Publisher], Awaitable[None]]


async def run_under_load(
    gateways: Sequence[ServerProcess],
    fault: Fault,
    *,
    tenant: str,
    per_gateway: int = 2,
    warm_up: int = 60,
    after: int = 120,
) -> ChaosRun:
    """Subscribe clients on every gateway, publish steadily, inject `fault`, and record.

    Each gateway gets `per_gateway` subscribers at home. The fault runs once `warm_up`
    publishes were stored and gets the publisher (to wait on its outcomes);
    the load goes on until `after` more were stored, then stops, and every
    subscriber gets until the deadline to reach the stream's final position.
    """
    project = "p1"
    subscribers = {
        f"{home.name}{k}": Subscriber(
            f"{home.name}{k}",
            [home.ws_url] + [other.ws_url for other in gateways if other is not home],
            home.token(tenant, f"{home.name}{k}"),
            project,
        )
        for home in gateways
        for k in range(1, per_gateway + 1)
    }
    key = gateways[0].publish_key
    assert key is not None, "the gateways have no publish key"
    publisher = Publisher([g.url for g in gateways], tenant, project, key)
    final, complete = Position("", 0), False
    history: list[Delivered] = []
    converged = dict.fromkeys(subscribers, False)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for subscriber in subscribers.values():
                stack.push_async_callback(subscriber.stop)
            await asyncio.gather(*(s.start() for s in subscribers.values()))
            stack.push_async_callback(publisher.stop)
            publisher.start()
            await publisher.wait_for(PublishStatus.STORED, warm_up, within=WAIT_SECS)
            await fault(publisher)
            await publisher.wait_for(PublishStatus.STORED, after, within=RECONNECT_WITHIN)
            await publisher.stop()
            final, history, complete = await read_history(gateways, tenant, project)
            reached = await asyncio.gather(
                *(s.reach(final, within=WAIT_SECS) for s in subscribers.values())
            )
            converged = dict(zip(subscribers, reached, strict=True))
    finally:
        observation = Observation(
            publishes=list(publisher.attempts),
            journals={name: list(s.journal) for name, s in subscribers.items()},
            history=history,
            final=final,
            history_complete=complete,
        )
        # Shown by pytest when the test fails (also when the run itself broke), or with -s.
        print(summary(observation))
    return ChaosRun(observation, subscribers, publisher, converged)


def assert_delivered(run: ChaosRun, *, lossless: bool = False) -> None:
    """The invariant of `invariants`, with a summary of the run when it fails."""
    problems = delivery_violations(run.observation, lossless=lossless)
    problems += [
        f"{name}: gave up ({s.gave_up})" for name, s in run.subscribers.items() if s.gave_up
    ]
    problems += [
        f"{name}: never reached the final position {run.observation.final}"
        for name, reached in run.converged.items()
        if not reached
    ]
    shown = "\n".join(problems[:40])
    assert not problems, f"{len(problems)} violations:\n{shown}\n{summary(run.observation)}"
