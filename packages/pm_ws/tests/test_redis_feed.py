"""A listened tenant of the Redis broker: seq order kept, repeats dropped, gaps sent to history."""

from __future__ import annotations

import asyncio

from pm_ws.brokers._redis_feed import FeedContext, TenantFeed
from pm_ws.brokers._redis_listener import Backoff
from pm_ws.brokers.broker import HistoryRead
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.events import Event, StreamPosition

from packages.pm_ws.tests.conftest import ACME, RecordingSink, draft


def event_at(epoch: str, seq: int) -> Event:
    return Event.from_draft(draft(f"e{seq}"), StreamPosition(epoch, seq), published_at_ns=0)


def feed_at(last: StreamPosition, sink: RecordingSink, *, held_limit: int = 10) -> TenantFeed:
    context = FeedContext(
        sink=sink,
        history=MemoryBroker(),  # these feeds never read history
        read_slots=asyncio.Semaphore(1),
        backoff=Backoff(0.01, 0.1),
        held_limit=held_limit,
    )
    feed = TenantFeed(ACME, context)
    feed.last = last
    return feed


async def test_a_feed_delivers_the_next_event_drops_repeats_and_stops_at_gaps() -> None:
    sink = RecordingSink()
    feed = feed_at(StreamPosition("e", 1), sink)

    results = [feed.advance(event_at("e", seq)) for seq in (2, 2, 1, 4)]
    other_epoch = feed.advance(event_at("f", 3))

    assert results == [True, True, True, False]
    assert not other_epoch
    assert sink.seqs == [2]
    assert feed.last == StreamPosition("e", 2)


async def test_a_feed_drops_held_events_that_a_later_read_proved_stale_or_forged() -> None:
    sink = RecordingSink()
    feed = feed_at(StreamPosition("old", 5), sink)
    for event in (event_at("old", 7), event_at("new", 99)):
        feed.hold(event)
    feed.reads_started += 1
    feed.apply(HistoryRead(events=(), complete=False, position=StreamPosition("new", 2)))
    feed.hold(event_at("new", 3))
    feed.hold(event_at("newer", 1))

    drained = feed.drain(settled=feed.reads_started)

    assert sink.lags == [ACME]
    assert sink.seqs == [3]
    assert not drained
    assert [event.position for event, _ in feed.held] == [StreamPosition("newer", 1)]


async def test_a_feed_whose_held_events_overflow_reads_history_again() -> None:
    sink = RecordingSink()
    feed = feed_at(StreamPosition("e", 0), sink, held_limit=2)

    for seq in (1, 2, 3):
        feed.hold(event_at("e", seq))

    assert feed.again
    assert [event.position.seq for event, _ in feed.held] == [3]
