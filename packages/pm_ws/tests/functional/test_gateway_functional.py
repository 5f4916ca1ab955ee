"""The engine mounted on a real aiohttp server, driven by real WebSocket clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pm_proto as pb
import pytest
from pm_ws import DisconnectRequest, GatewayLimits, ProtocolError, TenantId

pytestmark = pytest.mark.asyncio

Harness = Any
HarnessFactory = Any
TIMEOUT = 5.0


async def test_welcome_comes_first_and_describes_the_connection(harness: Harness) -> None:
    await harness.publish("p1")
    client = await harness.connect(harness.token("t1", "alice"))
    welcome = (await client.recv_kind("welcome")).welcome
    assert welcome.tenant_id == "t1"
    assert welcome.user_id == "alice"
    assert welcome.connection_id
    assert welcome.position.seq == 1
    assert welcome.heartbeat_interval_secs == 30
    assert welcome.limits.max_message_bytes == 65536
    assert welcome.limits.rate_limit_max_requests == 100
    assert welcome.limits.max_subscriptions == 1000
    assert abs(welcome.server_time_ms - time.time() * 1000) < 60_000


async def test_ping_is_answered_with_pong_echoing_request_id(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    answer = await client.request(
        pb.ClientMessage(request_id="x1", ping=pb.Ping(client_time_ms=42))
    )
    assert answer.request_id == "x1"
    assert answer.pong.client_time_ms == 42
    assert answer.pong.server_time_ms > 0


async def test_events_reach_only_matching_subscriptions_once(harness: Harness) -> None:
    by_project = await harness.connect_welcomed()
    by_sprint = await harness.connect_welcomed()
    by_everything = await harness.connect_welcomed()
    await by_project.subscribe(projects=("p1",))
    await by_sprint.subscribe(sprints=("s1",))
    await by_everything.subscribe(projects=("p1",), sprints=("s1",), items=("w1",))

    await harness.publish("p2", "s2", "w2")  # nobody
    await harness.publish("p2", "s1")  # by_sprint, by_everything
    await harness.publish("p1", "s3", "w1")  # by_project, by_everything (once)
    marker = await harness.publish("p1")  # everyone with p1: a marker to stop reading at

    seqs_project = [e.position.seq for e in await by_project.events(2)]
    seqs_sprint = [e.position.seq for e in await by_sprint.events(1)]
    seqs_all = [e.position.seq for e in await by_everything.events(3)]
    assert seqs_project == [3, 4]
    assert seqs_sprint == [2]
    assert seqs_all == [2, 3, 4]
    assert marker.position.seq == 4
    # Nothing more is queued for the sprint subscriber: a ping is answered next.
    answer = await by_sprint.request(pb.ClientMessage(ping=pb.Ping()))
    assert answer.WhichOneof("payload") == "pong"


async def test_no_event_crosses_tenants(harness: Harness) -> None:
    tenant_a = await harness.connect_welcomed(harness.token("ta"))
    tenant_b = await harness.connect_welcomed(harness.token("tb"))
    await tenant_a.subscribe(projects=("shared-id",))
    await tenant_b.subscribe(projects=("shared-id",))
    await harness.publish("shared-id", tenant="ta", payload=b"for a")
    await harness.publish("shared-id", tenant="tb", payload=b"for b")
    assert [e.payload for e in await tenant_a.events(1)] == [b"for a"]
    assert [e.payload for e in await tenant_b.events(1)] == [b"for b"]
    ping = await tenant_a.request(pb.ClientMessage(ping=pb.Ping()))
    assert ping.WhichOneof("payload") == "pong"


async def test_a_burst_of_1000_events_arrives_in_seq_order(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    await client.subscribe(projects=("p1",))
    for i in range(1000):
        await harness.publish("p1", payload=str(i).encode())
    events = await client.events(1000)
    assert [e.position.seq for e in events] == list(range(1, 1001))
    assert [e.payload for e in events] == [str(i).encode() for i in range(1000)]
    assert harness.metric("pm_ws_events_delivered_total") == 1000


async def test_resume_replays_missed_events_before_live_ones(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    ack = await client.subscribe(projects=("p1",))
    await harness.publish("p1")
    first = (await client.events(1))[0]
    await client.ws.close()

    await harness.publish("p1", payload=b"missed-1")
    await harness.publish("other")
    await harness.publish("p1", payload=b"missed-2")

    again = await harness.connect_welcomed()
    resumed = await again.subscribe(projects=("p1",), resume_from=first.position)
    assert resumed.recovered is True
    assert resumed.replayed == 2
    assert resumed.position.seq == 4
    await harness.publish("p1", payload=b"live")
    events = await again.events(3)
    assert [e.payload for e in events] == [b"missed-1", b"missed-2", b"live"]
    assert [e.position.seq for e in events] == [2, 4, 5]
    assert ack.position.epoch == resumed.position.epoch
    assert harness.metric("pm_ws_history_replays_total", {"recovered": "true"}) == 1


async def test_resume_beyond_history_says_not_recovered(make_harness: HarnessFactory) -> None:
    harness = await make_harness(history_size=3)
    client = await harness.connect_welcomed()
    await client.subscribe(projects=("p1",))
    await harness.publish("p1")
    first = (await client.events(1))[0]
    await client.ws.close()
    for _ in range(5):
        await harness.publish("p1")

    again = await harness.connect_welcomed()
    resumed = await again.subscribe(projects=("p1",), resume_from=first.position)
    assert resumed.recovered is False
    assert resumed.replayed == 3
    assert [e.position.seq for e in await again.events(3)] == [4, 5, 6]


async def test_resume_from_another_epoch_says_not_recovered(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    resumed = await client.subscribe(
        projects=("p1",), resume_from=pb.StreamPosition(epoch="gone", seq=5)
    )
    assert resumed.recovered is False


async def test_events_published_during_replay_are_neither_lost_nor_duplicated(
    harness: Harness,
) -> None:
    for _ in range(200):
        await harness.publish("p1")
    client = await harness.connect_welcomed()
    publisher = asyncio.ensure_future(_publish_many(harness, 200))
    ack = await client.subscribe(
        projects=("p1",), resume_from=pb.StreamPosition(epoch=await _epoch(harness), seq=0)
    )
    await publisher
    assert ack.recovered is True
    seqs = [e.position.seq for e in await client.events(400)]
    assert seqs == list(range(1, 401))


async def _publish_many(harness: Harness, count: int) -> None:
    for _ in range(count):
        await harness.publish("p1")
        await asyncio.sleep(0)  # yield so the subscriber's replay interleaves


async def _epoch(harness: Harness) -> str:
    return str((await harness.broker.position(TenantId("t1"))).epoch)


async def test_a_slow_client_is_closed_and_others_get_everything(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(limits=GatewayLimits(send_queue_size=8), close_timeout_secs=0.2)
    healthy = await harness.connect_welcomed()
    await healthy.subscribe(projects=("p1",))
    slow = await harness.connect_welcomed(harness.token(user="slow"))
    await slow.subscribe(projects=("p1",))
    session = next(s for s in harness.gateway.registry if s.user_id == "slow")
    slow.ws.transport.pause_reading()  # stop reading: the server's buffers fill up

    payload = b"x" * 60_000
    received = []
    for _ in range(300):  # in lockstep with the healthy reader, which keeps up
        await harness.publish("p1", payload=payload)
        received += await healthy.events(1)
    await asyncio.wait_for(session.wait_finished(), TIMEOUT)
    assert [e.position.seq for e in received] == list(range(1, 301))
    assert session.close_reason is not None
    assert session.close_reason.code == 4008
    assert harness.metric("pm_ws_slow_client_disconnects_total") == 1
    slow.ws.transport.abort()


async def test_heartbeat_closes_a_peer_that_never_answers_pings(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(
        limits=GatewayLimits(heartbeat_interval_secs=0.1, heartbeat_timeout_secs=0.2)
    )
    port = int(harness.url.split(":")[2].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {harness.token()}\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    opcodes = []
    close_code = None
    while close_code is None:
        head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        body = await reader.readexactly(length)
        opcodes.append(head[0] & 0x0F)
        if head[0] & 0x0F == 0x8:
            close_code = int.from_bytes(body[:2], "big")
    writer.close()
    assert opcodes[0] == 0x2  # Welcome
    assert 0x9 in opcodes  # at least one ping, never answered
    assert close_code == 4009
    await _wait_until_empty(harness)
    assert harness.metric("pm_ws_heartbeat_timeouts_total") == 1
    assert harness.metric("pm_ws_connections_active") == 0


async def _wait_until_empty(harness: Harness) -> None:
    sessions = list(harness.gateway.registry)
    await asyncio.wait_for(asyncio.gather(*(s.wait_finished() for s in sessions)), TIMEOUT)
    # The registry releases the slot right after `finished`, in the same handler.
    for _ in range(100):
        if harness.gateway.registry.reserved == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError("slot not released")


async def test_token_expiry_closes_with_4001_after_a_closing_message(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(leeway_secs=0)
    client = await harness.connect_welcomed(harness.token(expires_in=1))
    code, seen = await client.until_closed()
    assert code == 4001
    assert seen[-1].closing.code == "TOKEN_EXPIRED"


async def test_refresh_token_extends_the_connection(harness: Harness) -> None:
    client = await harness.connect(harness.token(expires_in=60))
    welcome = (await client.recv_kind("welcome")).welcome
    later = harness.token(expires_in=7200)
    answer = await client.request(pb.ClientMessage(refresh_token=pb.RefreshToken(token=later)))
    assert answer.WhichOneof("payload") == "ack"
    session = harness.gateway.registry.get(welcome.connection_id)
    assert session is not None
    assert session.context.expires_at > time.time() + 3600


async def test_refresh_for_another_user_closes_with_4003(harness: Harness) -> None:
    client = await harness.connect_welcomed(harness.token(user="alice"))
    await client.send(
        pb.ClientMessage(refresh_token=pb.RefreshToken(token=harness.token(user="bob")))
    )
    code, seen = await client.until_closed()
    assert code == 4003
    assert seen[-1].closing.code == "IDENTITY_CHANGED"


async def test_refresh_with_a_bad_token_is_an_error_and_keeps_the_connection(
    harness: Harness,
) -> None:
    client = await harness.connect_welcomed()
    answer = await client.request(pb.ClientMessage(refresh_token=pb.RefreshToken(token="nope")))
    assert answer.error.code in {"JWT_DECODE_FAILED", "INVALID_TOKEN"}
    assert "nope" not in answer.error.message
    assert (await client.request(pb.ClientMessage(ping=pb.Ping()))).WhichOneof("payload") == "pong"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("a text frame", "INVALID_MESSAGE"),
        (b"", "INVALID_MESSAGE"),
        (b"\xff\xff\xff", "DECODE_ERROR"),
        (pb.ClientMessage(request_id="q").SerializeToString(), "INVALID_MESSAGE"),
        (
            pb.ClientMessage(subscribe=pb.Subscribe(project_ids=["x" * 129])).SerializeToString(),
            "INVALID_MESSAGE",
        ),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_stays_open(
    harness: Harness, frame: str | bytes, code: str
) -> None:
    client = await harness.connect_welcomed()
    await client.ws.send(frame)
    error = (await client.recv_kind("error")).error
    assert error.code == code
    assert (await client.request(pb.ClientMessage(ping=pb.Ping()))).WhichOneof("payload") == "pong"


async def test_errors_echo_the_request_id(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    answer = await client.request(
        pb.ClientMessage(request_id="bad-1", subscribe=pb.Subscribe(sprint_ids=[""]))
    )
    assert answer.request_id == "bad-1"
    assert answer.error.code == "INVALID_MESSAGE"
    assert answer.error.field == "sprint_ids"


async def test_ten_violations_in_a_row_close_with_1008(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    for _ in range(10):
        await client.ws.send(b"\xff")
    code, seen = await client.until_closed()
    assert code == 1008
    assert [m.error.code for m in seen if m.WhichOneof("payload") == "error"] == [
        "DECODE_ERROR"
    ] * 10


async def test_a_frame_of_exactly_the_limit_is_served_and_a_larger_one_closes_1009(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(limits=GatewayLimits(max_message_bytes=1024))
    client = await harness.connect_welcomed()
    exact = _command_of_size(1024)
    await client.ws.send(exact)
    assert (await client.recv_kind("error")).error.code == "UNKNOWN_COMMAND"
    await client.ws.send(_command_of_size(1025))
    code, _ = await client.until_closed()
    assert code == 1009


def _command_of_size(size: int) -> bytes:
    for body_size in range(size, 0, -1):
        body = b"x" * body_size
        frame = pb.ClientMessage(command=pb.Command(name="pad", body=body)).SerializeToString()
        if len(frame) == size:
            return frame
    raise AssertionError(f"no command frame of {size} bytes")


async def test_rate_limit_refuses_frames_past_the_burst(make_harness: HarnessFactory) -> None:
    harness = await make_harness(limits=GatewayLimits(rate_limit_max_requests=5))
    client = await harness.connect_welcomed()
    for i in range(6):
        await client.send(pb.ClientMessage(request_id=f"p{i}", ping=pb.Ping()))
    answers = [await client.recv() for _ in range(6)]
    assert [a.WhichOneof("payload") for a in answers] == ["pong"] * 5 + ["error"]
    assert answers[5].error.code == "RATE_LIMIT_EXCEEDED"
    assert answers[5].request_id == "p5"
    assert harness.metric("pm_ws_rate_limited_frames_total") == 1


async def test_subscription_limit_counts_every_kind(make_harness: HarnessFactory) -> None:
    harness = await make_harness(limits=GatewayLimits(max_subscriptions=3))
    client = await harness.connect_welcomed()
    await client.subscribe(projects=("p1",), sprints=("s1",))
    answer = await client.request(
        pb.ClientMessage(subscribe=pb.Subscribe(work_item_ids=["w1", "w2"]))
    )
    assert answer.error.code == "SUBSCRIPTION_LIMIT"
    await client.subscribe(items=("w1",), projects=("p1",))  # p1 is held already: costs 1


async def test_unsubscribe_stops_delivery(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    await client.subscribe(projects=("p1", "p2"))
    answer = await client.request(pb.ClientMessage(unsubscribe=pb.Unsubscribe(project_ids=["p1"])))
    assert answer.WhichOneof("payload") == "ack"
    await harness.publish("p1")
    await harness.publish("p2")
    assert [e.position.seq for e in await client.events(1)] == [2]


async def test_commands_reach_registered_handlers_and_failures_leak_nothing(
    harness: Harness,
) -> None:
    async def echo(context: object, body: bytes) -> bytes:
        return body[::-1]

    async def broken(context: object, body: bytes) -> bytes:
        raise RuntimeError("/srv/secret/path.py exploded")

    async def refuses(context: object, body: bytes) -> bytes:
        raise ProtocolError("not on this board", code="INVALID_MESSAGE", field="body")

    harness.gateway.commands.register("board.echo", echo)
    harness.gateway.commands.register("board.broken", broken)
    harness.gateway.commands.register("board.refuses", refuses)
    client = await harness.connect_welcomed()

    answer = await client.request(
        pb.ClientMessage(command=pb.Command(name="board.echo", body=b"abc"))
    )
    assert answer.command_result.body == b"cba"
    answer = await client.request(pb.ClientMessage(command=pb.Command(name="board.broken")))
    assert answer.error.code == "INTERNAL_ERROR"
    assert "secret" not in answer.error.message
    answer = await client.request(pb.ClientMessage(command=pb.Command(name="board.refuses")))
    assert (answer.error.code, answer.error.field) == ("INVALID_MESSAGE", "body")
    answer = await client.request(pb.ClientMessage(command=pb.Command(name="board.nothing")))
    assert answer.error.code == "UNKNOWN_COMMAND"


async def test_subprotocol_authentication_selects_pm_v1(harness: Harness) -> None:
    client = await harness.connect(harness.token(user="browser"), subprotocol=True)
    assert client.ws.subprotocol == "pm.v1"
    assert (await client.recv_kind("welcome")).welcome.user_id == "browser"


async def test_refusals_are_http_with_json_bodies(make_harness: HarnessFactory) -> None:
    async def only_acme(context: object) -> bool:
        return getattr(context, "tenant_id", None) == "acme"

    harness = await make_harness(
        allowed_origins=frozenset({"https://board.example"}), tenant_check=only_acme
    )
    http = harness.url.replace("ws://", "http://")
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    cases = [
        ({}, 401, "MISSING_AUTH_HEADER"),
        ({"Authorization": "Basic abc"}, 401, "INVALID_AUTH_SCHEME"),
        ({"Authorization": "Bearer not.a.jwt"}, 401, None),
        ({"Authorization": f"Bearer {harness.token(expires_in=-3600)}"}, 401, "TOKEN_EXPIRED"),
        (
            {"Authorization": f"Bearer {harness.token('acme')}", "Origin": "https://evil.example"},
            403,
            "ORIGIN_NOT_ALLOWED",
        ),
        ({"Authorization": f"Bearer {harness.token('other')}"}, 403, "TENANT_NOT_ALLOWED"),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, status, code in cases:
            async with session.get(http, headers={**upgrade, **headers}) as response:
                assert response.status == status, headers
                body = await response.json()
                assert set(body) >= {"code", "message"}
                if code is not None:
                    assert body["code"] == code
                if status == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    client = await harness.connect(harness.token("acme"), origin="https://board.example")
    assert (await client.recv_kind("welcome")).welcome.tenant_id == "acme"


async def test_concurrent_upgrades_never_exceed_the_tenant_limit(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(limits=GatewayLimits(max_connections_per_tenant=3))
    http = harness.url.replace("ws://", "http://")
    token = harness.token()
    async with aiohttp.ClientSession() as session:

        async def attempt() -> int | aiohttp.ClientWebSocketResponse:
            try:
                return await session.ws_connect(http, headers={"Authorization": f"Bearer {token}"})
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        results = await asyncio.gather(*(attempt() for _ in range(20)))
        admitted = [r for r in results if not isinstance(r, int)]
        assert len(admitted) == 3
        assert sorted(r for r in results if isinstance(r, int)) == [429] * 17
        for ws in admitted:
            await ws.close()
    assert harness.metric("pm_ws_connections_refused_total", {"reason": "limit_tenant"}) == 17


async def test_operator_disconnect_closes_with_4010(harness: Harness) -> None:
    alice = await harness.connect_welcomed(harness.token(user="alice"))
    bob = await harness.connect_welcomed(harness.token(user="bob"))
    closed = await harness.gateway.disconnect(
        DisconnectRequest(tenant_id=TenantId("t1"), user_id=None)
    )
    assert closed == 2
    assert (await alice.until_closed())[0] == 4010
    assert (await bob.until_closed())[0] == 4010


async def test_a_lagged_tenant_gets_broadcast_lagged_then_4011(harness: Harness) -> None:
    client = await harness.connect_welcomed()
    harness.gateway.broadcaster.lagged(TenantId("t1"))
    code, seen = await client.until_closed()
    assert code == 4011
    assert seen[0].error.code == "BROADCAST_LAGGED"


async def test_drain_flushes_events_then_closing_then_1001(harness: Harness) -> None:
    clients = [await harness.connect_welcomed(harness.token(user=f"u{i}")) for i in range(5)]
    for client in clients:
        await client.subscribe(projects=("p1",))
    for _ in range(3):
        await harness.publish("p1")
    cut = await harness.gateway.drain()
    assert cut == 0
    for client in clients:
        code, seen = await client.until_closed()
        assert code == 1001
        assert [m.WhichOneof("payload") for m in seen] == ["event"] * 3 + ["closing"]
        assert seen[-1].closing.code == "SERVER_SHUTDOWN"
        assert 1000 <= seen[-1].closing.reconnect_after_ms <= 5000
    async with aiohttp.ClientSession() as session:
        http = harness.url.replace("ws://", "http://")
        async with session.get(http, headers={"Authorization": f"Bearer {harness.token()}"}) as r:
            assert r.status == 503
