"""Per-tenant fanout: the delivery filter, encode-once, listening, lag and operator orders."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pm_proto as pb
import pytest
from pm_ws import broadcaster as broadcaster_module
from pm_ws.broadcaster import Broadcaster
from pm_ws.brokers.broker import DisconnectRequest, PublishResult
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.client_messages import SubscriptionIds
from pm_ws.codec import event_frame
from pm_ws.events import ConnectionId, Event, EventDraft, Scope, StreamPosition, TenantId, UserId
from pm_ws.exceptions import BrokerUnavailable
from pm_ws.metrics import GatewayMetrics
from pm_ws.subscriptions import SubscriptionSet
from prometheus_client import CollectorRegistry

from packages.pm_ws.tests.session_harness import (
    OTHER_TENANT,
    TENANT,
    WAIT_SECS,
    Engine,
    frame_payloads,
    subscribe,
)

PUBLISHED_NS = 1_700_000_000 * 10**9
DELIVERY_DELAY_NS = 3_000_000
ALICE = UserId("alice")


@dataclass(eq=False)
class Member:
    """A connection as fanout sees it, recording what it is handed."""

    tenant_id: TenantId
    connection_id: str
    user_id: UserId
    subscriptions: SubscriptionSet = field(default_factory=SubscriptionSet)
    pushed: list[tuple[Event, bytes]] = field(default_factory=list)
    lags: int = 0
    closing: bool = False

    def push_event(self, event: Event, frame: bytes) -> None:
        self.pushed.append((event, frame))

    def lagged(self) -> None:
        self.lags += 1

    def disconnect_by_operator(self) -> bool:
        if self.closing:
            return False
        self.closing = True
        return True

    @property
    def seqs(self) -> list[int]:
        return [event.position.seq for event, _ in self.pushed]


class ListeningBroker(MemoryBroker):
    """A MemoryBroker that records which tenants the broadcaster listens to.

    With `hold_unlisten`, an unlisten waits for `release` (a slow broker).
    """

    def __init__(self) -> None:
        super().__init__(wall_clock_ns=lambda: PUBLISHED_NS)
        self.calls: list[tuple[str, TenantId]] = []
        self.hold_unlisten = False
        self.unlistening = asyncio.Event()
        self.release = asyncio.Event()

    async def listen(self, tenant_id: TenantId) -> None:
        self.calls.append(("listen", tenant_id))
        await super().listen(tenant_id)

    async def unlisten(self, tenant_id: TenantId) -> None:
        self.calls.append(("unlisten", tenant_id))
        if self.hold_unlisten:
            self.unlistening.set()
            await self.release.wait()
        await super().unlisten(tenant_id)


class Fanout:
    """A real Broadcaster on a recording MemoryBroker, with manual wall clocks."""

    def __init__(self) -> None:
        self.broker = ListeningBroker()
        self.prometheus = CollectorRegistry()
        self.metrics = GatewayMetrics(self.prometheus)
        self.broadcaster = Broadcaster(
            self.broker, self.metrics, wall_clock_ns=lambda: PUBLISHED_NS + DELIVERY_DELAY_NS
        )
        self._ids = 0

    async def member(
        self,
        tenant: TenantId = TENANT,
        *,
        user: str = "alice",
        projects: Sequence[str] = (),
        sprints: Sequence[str] = (),
        work_items: Sequence[str] = (),
    ) -> Member:
        self._ids += 1
        member = Member(tenant, f"c{self._ids}", UserId(user))
        await self.broadcaster.join(member)
        self.broadcaster.subscribe(
            member, SubscriptionIds(tuple(projects), tuple(sprints), tuple(work_items))
        )
        return member

    async def publish(
        self, project: str, sprint: str = "", work_item: str = "", *, tenant: TenantId = TENANT
    ) -> PublishResult:
        self._ids += 1
        return await self.broker.publish(
            EventDraft(
                tenant_id=tenant,
                event_id=f"e{self._ids}",
                type="work_item.moved",
                scope=Scope(project, sprint, work_item),
                payload=b"{}",
                actor_user_id="bob",
                occurred_at_ms=0,
            )
        )

    def metric(self, name: str) -> float:
        return self.prometheus.get_sample_value(name) or 0.0


@pytest.fixture
def fanout() -> Fanout:
    return Fanout()


async def test_an_event_reaches_each_matching_member_of_its_tenant_exactly_once(
    fanout: Fanout,
) -> None:
    by_project = await fanout.member(projects=["p1"])
    by_sprint = await fanout.member(sprints=["s1"])
    by_item = await fanout.member(work_items=["w1"])
    by_all_three = await fanout.member(projects=["p1"], sprints=["s1"], work_items=["w1"])
    elsewhere = await fanout.member(projects=["p2"], sprints=["s2"], work_items=["w2"])
    other_tenant = await fanout.member(OTHER_TENANT, projects=["p1"], sprints=["s1"])

    await fanout.publish("p1", "s1", "w1")
    await fanout.publish("p3", "s1")
    await fanout.publish("p3", "", "w1")
    await fanout.publish("p1", tenant=OTHER_TENANT)

    assert by_project.seqs == [1]
    assert by_sprint.seqs == [1, 2]
    assert by_item.seqs == [1, 3]
    assert by_all_three.seqs == [1, 2, 3]
    assert elsewhere.seqs == []
    assert other_tenant.seqs == [1]
    assert [e.tenant_id for e, _ in other_tenant.pushed] == [OTHER_TENANT]


async def test_every_recipient_is_handed_the_very_same_frame_object(fanout: Fanout) -> None:
    members = [await fanout.member(projects=["p1"]) for _ in range(3)]

    published = await fanout.publish("p1", "s1")

    frames = [frame for member in members for _, frame in member.pushed]
    assert len(frames) == 3
    assert all(frame is frames[0] for frame in frames)
    (payload,) = frame_payloads(frames[0])
    event = pb.ServerMessage.FromString(payload).event
    assert event.event_id == published.event_id
    assert event.position == pb.StreamPosition(epoch=published.position.epoch, seq=1)


async def test_an_event_is_encoded_once_and_not_at_all_without_recipients(
    fanout: Fanout, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[Event] = []

    def counting_event_frame(event: Event) -> bytes:
        encoded.append(event)
        return event_frame(event)

    monkeypatch.setattr(broadcaster_module, "event_frame", counting_event_frame)
    for _ in range(3):
        await fanout.member(projects=["p1"])

    await fanout.publish("p1")
    await fanout.publish("p-nobody-watches")

    assert [event.position.seq for event in encoded] == [1]
    assert fanout.metric("pm_ws_events_delivered_total") == 3
    assert fanout.metric("pm_ws_publish_to_delivery_seconds_count") == 1


async def test_the_same_frame_object_is_written_to_every_connections_transport() -> None:
    async with Engine() as engine:
        connections = [await engine.connect() for _ in range(3)]
        for conn in connections:
            await conn.request(subscribe("s", projects=["p1"]))

        await engine.publish("p1")
        for conn in connections:
            await conn.received()

    last_writes = [conn.transport.writes[-1] for conn in connections]
    assert all(write is last_writes[0] for write in last_writes)


async def test_publish_to_delivery_latency_is_observed_for_each_delivered_event(
    fanout: Fanout,
) -> None:
    await fanout.member(projects=["p1"])
    await fanout.member(projects=["p1"])

    await fanout.publish("p1")
    await fanout.publish("p1")

    assert fanout.metric("pm_ws_publish_to_delivery_seconds_count") == 2
    assert fanout.metric("pm_ws_publish_to_delivery_seconds_sum") == pytest.approx(
        2 * DELIVERY_DELAY_NS / 1e9
    )
    assert fanout.metric("pm_ws_events_delivered_total") == 4


async def test_join_returns_the_tenant_position_and_listens_once_per_tenant(
    fanout: Fanout,
) -> None:
    await fanout.publish("p1")
    last = await fanout.publish("p1")

    position = await fanout.broadcaster.join(Member(TENANT, "c-a", ALICE))
    again = await fanout.broadcaster.join(Member(TENANT, "c-b", ALICE))
    await fanout.publish("p9")

    assert position == again == last.position == StreamPosition(last.position.epoch, 2)
    assert fanout.broadcaster.position(TENANT) == StreamPosition(last.position.epoch, 3)
    assert fanout.broker.calls == [("listen", TENANT)]


async def test_the_last_member_leaving_stops_listening_and_another_tenant_is_unaffected(
    fanout: Fanout,
) -> None:
    first = await fanout.member(projects=["p1"])
    second = await fanout.member(projects=["p1"])
    other = await fanout.member(OTHER_TENANT, projects=["p1"])

    await fanout.broadcaster.leave(first)
    still_listening = list(fanout.broker.calls)
    await fanout.broadcaster.leave(second)
    await fanout.broadcaster.leave(second)
    await fanout.publish("p1")
    await fanout.publish("p1", tenant=OTHER_TENANT)

    assert still_listening == [("listen", TENANT), ("listen", OTHER_TENANT)]
    assert fanout.broker.calls[2:] == [("unlisten", TENANT)]
    assert fanout.broadcaster.position(TENANT) is None
    assert first.seqs == second.seqs == []
    assert other.seqs == [1]


async def test_a_member_joining_while_the_last_one_leaves_keeps_receiving(
    fanout: Fanout,
) -> None:
    leaving = await fanout.member(projects=["p1"])
    fanout.broker.hold_unlisten = True
    departure = asyncio.ensure_future(fanout.broadcaster.leave(leaving))
    await asyncio.wait_for(fanout.broker.unlistening.wait(), WAIT_SECS)

    arriving = Member(TENANT, "c-late", ALICE)
    arrival = asyncio.ensure_future(fanout.broadcaster.join(arriving))
    fanout.broker.release.set()
    await asyncio.wait_for(asyncio.gather(departure, arrival), WAIT_SECS)
    fanout.broadcaster.subscribe(arriving, SubscriptionIds(project_ids=("p1",)))
    await fanout.publish("p1")

    assert fanout.broker.calls[-1] == ("listen", TENANT)
    assert arriving.seqs == [1]


async def test_unsubscribe_stops_routing_and_a_stranger_cannot_subscribe(fanout: Fanout) -> None:
    member = await fanout.member(projects=["p1", "p2"])
    stranger = Member(TENANT, "c-stranger", ALICE)

    fanout.broadcaster.unsubscribe(member, SubscriptionIds(project_ids=("p1",)))
    fanout.broadcaster.subscribe(stranger, SubscriptionIds(project_ids=("p1",)))
    await fanout.publish("p1")
    await fanout.publish("p2")

    assert member.seqs == [2]
    assert member.subscriptions.project_ids == {"p2"}
    assert stranger.seqs == []
    assert len(stranger.subscriptions) == 0


async def test_disconnect_local_closes_the_matching_members_and_counts_them(
    fanout: Fanout,
) -> None:
    alice_1 = await fanout.member(user="alice")
    alice_2 = await fanout.member(user="alice")
    bob = await fanout.member(user="bob")
    alice_elsewhere = await fanout.member(OTHER_TENANT, user="alice")
    broadcaster = fanout.broadcaster

    by_user = broadcaster.disconnect_local(DisconnectRequest(TENANT, user_id=UserId("alice")))
    by_connection = broadcaster.disconnect_local(
        DisconnectRequest(TENANT, connection_id=ConnectionId(bob.connection_id))
    )
    everyone_again = broadcaster.disconnect_local(DisconnectRequest(TENANT))
    nobody_there = broadcaster.disconnect_local(DisconnectRequest(TenantId("initech")))

    assert (by_user, by_connection, everyone_again, nobody_there) == (2, 1, 0, 0)
    assert [alice_1.closing, alice_2.closing, bob.closing] == [True, True, True]
    assert not alice_elsewhere.closing


async def test_a_disconnect_order_from_the_broker_closes_members_of_that_tenant(
    fanout: Fanout,
) -> None:
    here = await fanout.member()
    elsewhere = await fanout.member(OTHER_TENANT)

    await fanout.broker.publish_disconnect(DisconnectRequest(TENANT))

    assert here.closing
    assert not elsewhere.closing


async def test_lagged_reaches_every_member_of_the_tenant_and_only_them(fanout: Fanout) -> None:
    subscribed = await fanout.member(projects=["p1"])
    idle = await fanout.member()
    other = await fanout.member(OTHER_TENANT, projects=["p1"])
    await fanout.publish("p1")

    fanout.broadcaster.lagged(TENANT)

    assert (subscribed.lags, idle.lags, other.lags) == (1, 1, 0)
    assert fanout.broadcaster.position(TENANT) is None


async def test_join_fails_cleanly_when_the_broker_is_unavailable(fanout: Fanout) -> None:
    await fanout.broker.close()
    member = Member(TENANT, "c-1", ALICE)

    with pytest.raises(BrokerUnavailable):
        await fanout.broadcaster.join(member)

    assert fanout.broadcaster.position(TENANT) is None
    fanout.broadcaster.subscribe(member, SubscriptionIds(project_ids=("p1",)))
    assert len(member.subscriptions) == 0


@dataclass(eq=False)
class FailingMember(Member):
    """A connection whose every hand-over raises (a bug in it)."""

    def push_event(self, event: Event, frame: bytes) -> None:
        raise RuntimeError("connection bug")

    def lagged(self) -> None:
        raise RuntimeError("connection bug")

    def disconnect_by_operator(self) -> bool:
        raise RuntimeError("connection bug")


async def test_a_failing_connection_is_logged_and_fails_neither_publish_nor_orders(
    fanout: Fanout, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingMember(TENANT, "c-bug", ALICE)
    await fanout.broadcaster.join(failing)
    fanout.broadcaster.subscribe(failing, SubscriptionIds(project_ids=("p1",)))

    with caplog.at_level(logging.ERROR, logger="pm_ws.broadcaster"):
        published = await fanout.publish("p1")
        await fanout.broker.publish_disconnect(DisconnectRequest(TENANT))
        fanout.broadcaster.lagged(TENANT)
    later = await fanout.member(OTHER_TENANT, projects=["p1"])
    await fanout.publish("p1", tenant=OTHER_TENANT)

    assert published.position.seq == 1
    assert len(caplog.records) == 3
    assert later.seqs == [1]


async def test_a_broker_feeds_one_broadcaster(fanout: Fanout) -> None:
    with pytest.raises(RuntimeError):
        Broadcaster(fanout.broker, fanout.metrics)
