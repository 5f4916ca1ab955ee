"""PmClient against real pm_server processes: order, restarts, drains, tokens, resume."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pm_proto as pb
import pytest
from pm_client import (
    Backoff,
    ClientClosed,
    ClientState,
    ConnectFailed,
    Disconnected,
    Event,
    PmClient,
    RequestFailed,
)
from pm_testkit import ServerProcess, TcpProxy, wait_until

# Fixtures and helpers live in conftest.py (test modules cannot import each other).
Api = Any
Collector = Any
Published = Any
Publisher = Any
ServerFactory = Any
Tokens = Any
MakeToken = Any

Collect = Callable[[PmClient], Collector]
FAST = Backoff(initial=0.05, max=0.3)


def seqs(events: list[Event]) -> list[int]:
    return [event.position.seq for event in events]


async def test_events_arrive_in_order_with_every_field(
    server: ServerProcess, api: Api, collect: Collect, token_source: Tokens
) -> None:
    async with PmClient(server.ws_url, token_source()) as client:
        ack = await client.subscribe(projects=["p1"])
        assert ack.position.seq == 0
        stream = collect(client)
        published = [await api.publish(server, "p1", n) for n in range(20)]
        await api.publish(server, "elsewhere", 99)
        await stream.wait_for_events(20)
        assert client.position == published[-1].position
    assert stream.numbers() == list(range(20))
    assert seqs(stream.events) == list(range(1, 21))
    first = stream.events[0]
    assert first.event_id == published[0].event_id
    assert first.type == "card.moved"
    assert first.scope.project_id == "p1"
    assert first.actor_user_id == "u0"
    assert first.occurred_at_ms > 0
    assert stream.not_recovered == []
    assert stream.ended
    assert stream.error is None


@dataclass
class Restart:
    """What a client saw across a server restart under a stream of publishes."""

    stream: Collector
    publisher: Publisher
    disconnects: list[tuple[float, Disconnected]]
    connected_at: list[float]


async def restart_mid_stream(
    signum: int,
    start_server: ServerFactory,
    collect: Collect,
    publisher: Publisher,
    token_source: Tokens,
) -> Restart:
    """Stream events, stop the server with `signum`, start a new one on the same port.

    Returns once 10 events were published to the new server after the client's
    resume and the client has received the last one.
    """
    first: ServerProcess = await start_server()
    connected_at: list[float] = []
    disconnects: list[tuple[float, Disconnected]] = []
    async with PmClient(
        first.ws_url,
        token_source(),
        backoff=FAST,
        on_connect=lambda _welcome: connected_at.append(time.monotonic()),
        on_disconnect=lambda d: disconnects.append((time.monotonic(), d)),
    ) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        publisher.start(first)
        await stream.wait_for_events(10)
        assert await first.stop_async(signum) == (0 if signum == signal.SIGTERM else -signum)
        publisher.server = await start_server(port=first.port)
        await stream.wait_until(lambda: bool(stream.not_recovered), what="NotRecovered")
        marker = stream.not_recovered[0]
        await wait_until(
            lambda: len(publisher.on(marker.position.epoch, marker.position.seq)) >= 10,
            what="10 events published after the resume",
        )
        await publisher.stop()
        last = publisher.published[-1].position
        await stream.wait_until(lambda: client.position == last, what=f"the last event {last}")
    return Restart(stream, publisher, disconnects, connected_at)


def assert_in_order_with_one_gap_signal(restart: Restart) -> None:
    """Old stream from its start, one NotRecovered, then every event published after it."""
    stream = restart.stream
    assert len(stream.not_recovered) == 1
    marker = stream.not_recovered[0]
    split = stream.items.index(marker)
    before = [item for item in stream.items[:split] if isinstance(item, Event)]
    after = [item for item in stream.items[split + 1 :] if isinstance(item, Event)]
    old_epoch, new_epoch = before[0].position.epoch, marker.position.epoch
    assert old_epoch != new_epoch
    assert {e.position.epoch for e in before} == {old_epoch}
    assert {e.position.epoch for e in after} == {new_epoch}
    assert seqs(before) == list(range(1, len(before) + 1))
    assert marker.last_position == before[-1].position
    published_after = restart.publisher.on(new_epoch, marker.position.seq)
    assert seqs(after) == [p.position.seq for p in published_after]
    assert len({e.event_id for e in stream.events}) == len(stream.events)


async def test_a_killed_and_restarted_server_gives_not_recovered_then_new_events_in_order(
    start_server: ServerFactory,
    collect: Collect,
    publisher: Publisher,
    token_source: Tokens,
) -> None:
    restart = await restart_mid_stream(
        signal.SIGKILL, start_server, collect, publisher, token_source
    )
    assert_in_order_with_one_gap_signal(restart)
    _, disconnect = restart.disconnects[0]
    assert disconnect.code == 1006
    assert disconnect.closing is None


async def test_a_drain_sends_closing_and_the_client_resumes_after_reconnect_after_ms(
    start_server: ServerFactory,
    collect: Collect,
    publisher: Publisher,
    token_source: Tokens,
) -> None:
    restart = await restart_mid_stream(
        signal.SIGTERM, start_server, collect, publisher, token_source
    )
    assert_in_order_with_one_gap_signal(restart)
    closed_at, disconnect = restart.disconnects[0]
    assert disconnect.code == 1001
    assert disconnect.closing is not None
    assert disconnect.closing.code == "SERVER_SHUTDOWN"
    assert 1000 <= disconnect.reconnect_after_ms <= 5000
    assert disconnect.delay_secs is not None
    assert disconnect.delay_secs >= disconnect.reconnect_after_ms / 1000
    assert restart.connected_at[1] - closed_at >= disconnect.reconnect_after_ms / 1000


async def test_a_dropped_connection_resumes_and_replays_what_was_missed(
    server: ServerProcess,
    proxy: TcpProxy,
    api: Api,
    collect: Collect,
    token_source: Tokens,
) -> None:
    connects: list[pb.Welcome] = []
    async with PmClient(
        proxy.url, token_source(), backoff=FAST, on_connect=connects.append
    ) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        for n in (1, 2, 3):
            await api.publish(server, "p1", n)
        await stream.wait_for_events(3)
        proxy.refusing = True
        proxy.sever()
        await wait_until(lambda: client.state is not ClientState.OPEN, what="the drop")
        for n in (4, 5, 6):
            await api.publish(server, "p1", n)
        proxy.refusing = False
        await wait_until(lambda: client.state is ClientState.OPEN, what="the reconnection")
        for n in (7, 8, 9):
            await api.publish(server, "p1", n)
        await stream.wait_for_events(9)
    assert len(connects) == 2
    assert connects[0].connection_id != connects[1].connection_id
    assert stream.numbers() == list(range(1, 10))
    assert seqs(stream.events) == list(range(1, 10))
    assert stream.not_recovered == []


async def test_resume_over_more_than_100_subscriptions_loses_and_repeats_nothing(
    server: ServerProcess,
    proxy: TcpProxy,
    api: Api,
    collect: Collect,
    token_source: Tokens,
) -> None:
    projects = ["p1", *(f"x{i}" for i in range(150)), "p2"]
    async with PmClient(proxy.url, token_source(), backoff=FAST) as client:
        await client.subscribe(projects=projects)
        stream = collect(client)
        await api.publish(server, "p1", 1)
        await api.publish(server, "p2", 2)
        await stream.wait_for_events(2)
        proxy.refusing = True
        proxy.sever()
        await wait_until(lambda: client.state is not ClientState.OPEN, what="the drop")
        await api.publish(server, "p2", 3)
        await api.publish(server, "p1", 4)
        proxy.refusing = False
        await wait_until(lambda: client.state is ClientState.OPEN, what="the reconnection")
        await api.publish(server, "x120", 5)
        await stream.wait_for_events(5)
    assert stream.numbers() == [1, 2, 3, 4, 5]
    assert stream.not_recovered == []


async def test_an_operator_disconnect_ends_the_stream_with_4010(
    server: ServerProcess, api: Api, collect: Collect, token_source: Tokens
) -> None:
    async with PmClient(server.ws_url, token_source(), backoff=FAST) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        await api.publish(server, "p1", 1)
        await stream.wait_for_events(1)
        assert await api.disconnect(server, tenant_id="t1") == 1
        await stream.wait_until(lambda: stream.ended, what="the end of the stream")
        assert isinstance(stream.error, ClientClosed)
        assert stream.error.code == 4010
        assert client.state is ClientState.CLOSED
        with pytest.raises(ClientClosed):
            await client.subscribe(projects=["p2"])
    assert stream.numbers() == [1]


async def test_an_expired_token_gets_a_new_one_from_the_provider_and_resumes(
    start_server: ServerFactory,
    api: Api,
    collect: Collect,
    token_source: Tokens,
    make_token: MakeToken,
) -> None:
    server: ServerProcess = await start_server(JWT_LEEWAY_SECS="0")
    tokens = token_source(lambda call: make_token(expires_in=2 if call == 1 else 3600))
    connects: list[pb.Welcome] = []
    disconnects: list[Disconnected] = []
    async with PmClient(
        server.ws_url,
        tokens,
        backoff=FAST,
        refresh_before_secs=None,
        on_connect=connects.append,
        on_disconnect=disconnects.append,
    ) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        await api.publish(server, "p1", 1)
        await stream.wait_for_events(1)
        await wait_until(lambda: bool(disconnects), within=5, what="the 4001 close")
        await api.publish(server, "p1", 2)
        await wait_until(lambda: len(connects) == 2, what="the reconnection")
        await api.publish(server, "p1", 3)
        await stream.wait_for_events(3)
    assert disconnects[0].code == 4001
    assert tokens.calls == 2
    assert connects[0].connection_id != connects[1].connection_id
    assert stream.numbers() == [1, 2, 3]
    assert stream.not_recovered == []


async def test_a_proactive_refresh_keeps_the_connection_past_the_first_tokens_expiry(
    start_server: ServerFactory,
    api: Api,
    collect: Collect,
    token_source: Tokens,
    make_token: MakeToken,
) -> None:
    server: ServerProcess = await start_server(JWT_LEEWAY_SECS="0")
    tokens = token_source(lambda _call: make_token(expires_in=2))
    disconnects: list[Disconnected] = []
    async with PmClient(
        server.ws_url,
        tokens,
        refresh_before_secs=1.0,
        on_disconnect=disconnects.append,
    ) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        welcome = client.welcome
        assert welcome is not None
        first_expiry = welcome.token_expires_at_ms / 1000
        await wait_until(
            lambda: tokens.calls >= 3 and time.time() > first_expiry + 0.3,
            within=6,
            what="two refreshes and the first token's expiry",
        )
        await api.publish(server, "p1", 1)
        await stream.wait_for_events(1)
        assert client.connection_id == welcome.connection_id
    assert disconnects == []


async def test_subprotocol_authentication_works_like_the_header(
    server: ServerProcess, api: Api, collect: Collect, token_source: Tokens
) -> None:
    async with PmClient(server.ws_url, token_source(), auth="subprotocol") as client:
        await client.subscribe(work_items=["w1"])
        stream = collect(client)
        await api.publish(server, "p1", 1)
        body = {"tenantId": "t1", "type": "t", "scope": {"projectId": "p9", "workItemId": "w1"}}
        assert await api.publish_json(server, body) == 200
        await stream.wait_for_events(1)
    assert stream.events[0].scope.work_item_id == "w1"


async def test_a_token_refused_twice_in_a_row_is_connect_failed(
    server: ServerProcess, token_source: Tokens, make_token: MakeToken
) -> None:
    tokens = token_source(lambda _call: make_token(secret="a-different-secret-" * 3))
    with pytest.raises(ConnectFailed) as refused:
        async with PmClient(server.ws_url, tokens, backoff=FAST):
            pass
    assert refused.value.status == 401
    assert tokens.calls == 2


async def test_an_unreachable_server_is_connect_failed_after_max_attempts(
    token_source: Tokens, free_port: Any
) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(ConnectFailed, match="3 attempts"):
        async with PmClient(url, token_source(), backoff=Backoff(initial=0.01, max_attempts=3)):
            pass


async def test_ping_gets_pong_and_an_unknown_command_is_request_failed(
    server: ServerProcess, token_source: Tokens
) -> None:
    async with PmClient(server.ws_url, token_source()) as client:
        pong = await client.ping()
        assert pong.server_time_ms > 0
        with pytest.raises(RequestFailed) as failed:
            await client.command("nothing.here", b"{}")
        assert failed.value.code == "UNKNOWN_COMMAND"


async def test_unsubscribe_stops_delivery_of_those_ids_only(
    server: ServerProcess, api: Api, collect: Collect, token_source: Tokens
) -> None:
    async with PmClient(server.ws_url, token_source()) as client:
        await client.subscribe(projects=["p1", "p2"])
        stream = collect(client)
        await api.publish(server, "p1", 1)
        await stream.wait_for_events(1)
        await client.unsubscribe(projects=["p1"])
        await api.publish(server, "p1", 2)
        await api.publish(server, "p2", 3)
        await stream.wait_for_events(2)
    assert stream.numbers() == [1, 3]


async def test_a_refused_subscription_is_request_failed_and_the_rest_keeps_working(
    start_server: ServerFactory, api: Api, collect: Collect, token_source: Tokens
) -> None:
    server: ServerProcess = await start_server(MAX_SUBSCRIPTIONS_PER_CONNECTION="2")
    async with PmClient(server.ws_url, token_source()) as client:
        await client.subscribe(projects=["p1"])
        with pytest.raises(RequestFailed) as refused:
            await client.subscribe(projects=["p2", "p3"])
        assert refused.value.code == "SUBSCRIPTION_LIMIT"
        stream = collect(client)
        await api.publish(server, "p1", 1)
        await stream.wait_for_events(1)
    assert stream.numbers() == [1]


async def test_subscribing_while_disconnected_takes_effect_on_reconnection(
    server: ServerProcess,
    proxy: TcpProxy,
    api: Api,
    collect: Collect,
    token_source: Tokens,
) -> None:
    async with PmClient(proxy.url, token_source(), backoff=FAST) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        proxy.refusing = True
        proxy.sever()
        await wait_until(lambda: client.state is not ClientState.OPEN, what="the drop")
        pending = asyncio.create_task(client.subscribe(projects=["p2"]))
        await api.publish(server, "p1", 1)
        proxy.refusing = False
        ack = await asyncio.wait_for(pending, 10)
        assert ack.recovered
        await api.publish(server, "p2", 2)
        await stream.wait_for_events(2)
    assert stream.numbers() == [1, 2]


async def test_a_consumer_slower_than_a_tiny_queue_still_gets_everything_in_order(
    server: ServerProcess, api: Api, token_source: Tokens
) -> None:
    async with PmClient(server.ws_url, token_source(), queue_size=1) as client:
        await client.subscribe(projects=["p1"])
        for n in range(30):
            await api.publish(server, "p1", n)
        received: list[int] = []
        async for item in client.events():
            assert isinstance(item, Event)
            received.append(item.position.seq)
            if len(received) == 30:
                break
    assert received == list(range(1, 31))


async def test_closing_while_reconnecting_ends_the_stream_cleanly(
    server: ServerProcess,
    proxy: TcpProxy,
    collect: Collect,
    token_source: Tokens,
) -> None:
    client = PmClient(proxy.url, token_source(), backoff=FAST)
    await client.connect()
    await client.subscribe(projects=["p1"])
    stream = collect(client)
    proxy.refusing = True
    proxy.sever()
    await wait_until(lambda: client.state is ClientState.WAITING, what="the backoff")
    await client.aclose()
    await stream.wait_until(lambda: stream.ended, what="the end of the stream")
    assert stream.error is None
    assert client.state is ClientState.CLOSED
    with pytest.raises(ClientClosed) as closed:
        await client.subscribe(projects=["p2"])
    assert closed.value.code == 1000


async def test_a_refreshed_token_for_another_user_ends_the_stream_with_4003(
    start_server: ServerFactory,
    collect: Collect,
    token_source: Tokens,
    make_token: MakeToken,
) -> None:
    server: ServerProcess = await start_server(JWT_LEEWAY_SECS="0")
    tokens = token_source(lambda call: make_token(user="u1" if call == 1 else "u2", expires_in=2))
    async with PmClient(server.ws_url, tokens, refresh_before_secs=1.0) as client:
        await client.subscribe(projects=["p1"])
        stream = collect(client)
        await stream.wait_until(lambda: stream.ended, what="the end of the stream")
    assert isinstance(stream.error, ClientClosed)
    assert stream.error.code == 4003
    assert tokens.calls == 2
