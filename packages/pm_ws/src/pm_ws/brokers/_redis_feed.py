"""One tenant RedisBroker listens to: live events in seq order, gaps filled from history."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from pm_ws.brokers._redis_codec import decode_channel_message
from pm_ws.brokers._redis_listener import Backoff
from pm_ws.brokers.broker import BrokerSink, DisconnectRequest, HistoryRead
from pm_ws.events import Event, StreamPosition, TenantId
from pm_ws.exceptions import BrokerUnavailable

_LOG = logging.getLogger(__name__)


class HistorySource(Protocol):
    """Where a feed reads what pub/sub did not bring: the broker's own reads."""

    async def position(self, tenant_id: TenantId) -> StreamPosition:
        """The tenant's current position. Raises `BrokerUnavailable`."""

    async def read_after(self, tenant_id: TenantId, position: StreamPosition) -> HistoryRead:
        """Events after `position` still in history. Raises `BrokerUnavailable`."""


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What every feed of one broker shares.

    `read_slots` bounds the history reads in flight when many tenants catch
    up at once (after a reconnect); `backoff` spaces a feed's retries of a
    failed read; `held_limit` is how many live events may wait for a read.
    """

    sink: BrokerSink
    history: HistorySource
    read_slots: asyncio.Semaphore
    backoff: Backoff
    held_limit: int


class TenantFeed:
    """A tenant this process listens to, and how far delivery to the sink got.

    It is the handler of the tenant's channel. Invariant: `last` is the
    position of the last event handed to the sink (or the position delivery
    started from). While `syncing`, a catch-up task owns the feed and live
    events wait in `held`, each with the number of history reads started
    before it arrived. `ready` is resolved by the first completed read:
    from then on nothing published is missed.
    """

    def __init__(self, tenant_id: TenantId, context: FeedContext) -> None:
        """Create an idle feed; `start_catch_up` begins its first read."""
        self.tenant_id = tenant_id
        self._context = context
        self._sink = context.sink
        self.last: StreamPosition | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.listening = asyncio.Event()
        self.syncing = False
        self.again = False
        self.reads_started = 0
        self.held: deque[tuple[Event, int]] = deque()
        self._task: asyncio.Task[None] | None = None

    def subscribed(self) -> None:
        """The channel's SUBSCRIBE took: read history for anything missed before it."""
        self.listening.set()
        self.start_catch_up()

    def interrupted(self) -> None:
        """The pub/sub connection dropped: reads wait for the next `subscribed`."""
        self.listening.clear()

    def received(self, data: bytes) -> None:
        """Deliver, hold or drop one message of the tenant's channel."""
        try:
            decoded = decode_channel_message(self.tenant_id, data)
        except ValueError as exc:
            # Dropping an event leaves a gap that the next one reveals and history fills.
            _LOG.warning("ignoring an unreadable message on a tenant channel: %s", exc)
            return
        if isinstance(decoded, DisconnectRequest):
            self._sink.disconnect(decoded)
        elif self.syncing:
            self.hold(decoded)
        elif not self.advance(decoded):
            self.hold(decoded)
            self.start_catch_up()

    def start_catch_up(self) -> None:
        """Read history before delivering anything newer; once more if a read is under way."""
        if self.syncing:
            self.again = True
            return
        self.syncing = True
        self._task = asyncio.create_task(self._catch_up(), name="pm-ws redis catch-up")
        self._task.add_done_callback(_log_failure)

    def close(self) -> None:
        """Stop the catch-up task, if any."""
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the cancelled catch-up task has finished."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def advance(self, event: Event) -> bool:
        """Deliver `event` if it is the next one, drop it if already delivered.

        Returns False, doing nothing, when it does not continue the stream
        (a gap or another epoch): history must be read first.
        """
        last = self.last
        if last is None or event.position.epoch != last.epoch:
            return False
        if event.position.seq <= last.seq:
            return True
        if event.position.seq != last.seq + 1:
            return False
        self.last = event.position
        self._sink.deliver(event)
        return True

    def hold(self, event: Event) -> None:
        """Keep a live event until history has been read; overflow means read again."""
        if len(self.held) >= self._context.held_limit:
            self.held.clear()
            self.again = True
        self.held.append((event, self.reads_started))

    def apply(self, read: HistoryRead) -> None:
        """Deliver a complete read, or tell the sink the tenant lagged and go on from the read."""
        if read.complete:
            for event in read.events:
                self.advance(event)
            return
        _LOG.warning(
            "events of tenant %r were lost for this process: delivered up to %s, the "
            "stream is at %s and history does not cover the gap; its connections must resume",
            self.tenant_id,
            self.last,
            read.position,
        )
        self.last = read.position
        self._sink.lagged(self.tenant_id)

    def drain(self, settled: int) -> bool:
        """Deliver held events in order; False when one still needs a history read.

        `settled` is the number of the latest completed history read. An
        event that arrived before that read started was published before it,
        so the read covered it: if it still does not continue the stream, it
        belongs to an epoch the read proved dead (or is forged) and is dropped.
        """
        while self.held:
            event, reads_before = self.held[0]
            if not self.advance(event) and reads_before >= settled:
                return False
            self.held.popleft()
        return True

    async def _catch_up(self) -> None:
        """Bring the feed up to date from history, then hand it back to live delivery."""
        context = self._context
        failures = 0
        while True:
            # Reading only once SUBSCRIBE is confirmed means nothing published after
            # the read can be missed.
            await self.listening.wait()
            self.again = False
            self.reads_started += 1
            read_number = self.reads_started
            try:
                async with context.read_slots:
                    if self.last is None:
                        self.last = await context.history.position(self.tenant_id)
                    else:
                        self.apply(await context.history.read_after(self.tenant_id, self.last))
            except BrokerUnavailable:
                failures += 1
                await asyncio.sleep(context.backoff.delay(failures))
                continue
            failures = 0
            if not self.ready.done():
                self.ready.set_result(None)
            if not self.again and self.drain(settled=read_number):
                self.syncing = False
                self._task = None
                return


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        _LOG.error("redis broker task %s failed", task.get_name(), exc_info=exc)
