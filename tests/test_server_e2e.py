"""One real pm-server, driven over HTTP and WebSocket as backends, operators and browsers do."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import jwt
import pm_proto as pb
import pytest
from google.protobuf import json_format
from pm_testkit import ServerProcess
from prometheus_client.parser import text_string_to_metric_families

BOARD_ORIGIN = "https://board.example.com"
ADMIN_ORIGIN = "https://admin.example.com"
MAX_MESSAGE_BYTES = 262_144

pytestmark = pytest.mark.pm_server(
    {
        "WS_ALLOWED_ORIGINS": BOARD_ORIGIN,
        "CORS_ALLOWED_ORIGINS": ADMIN_ORIGIN,
        "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    }
)


def publish_request(tenant: str, project: str = "p1", **fields: Any) -> pb.PublishRequest:
    request = pb.PublishRequest(tenant_id=tenant, type="work_item.updated", payload=b"{}")
    request.scope.project_id = project
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# Probes


async def test_live_answers_200_ok(server: ServerProcess) -> None:
    answer = await server.get("/live")

    assert (answer.status, answer.text) == (200, "OK")


async def test_ready_answers_200_ready_while_serving(server: ServerProcess) -> None:
    answer = await server.get("/ready")

    assert (answer.status, answer.text) == (200, "Ready")


async def test_health_reports_version_uptime_connections_and_a_check_per_subsystem(
    server: ServerProcess, tenant: str
) -> None:
    await server.connect(tenant)

    answer = await server.get("/health")

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    health = answer.json()
    assert health["status"] == "ok"
    assert health["version"] == version("pm-server")
    assert isinstance(health["uptime_secs"], int | float)
    assert health["uptime_secs"] > 0
    assert health["connections"]["total"] >= 1
    assert health["connections"]["tenants"] >= 1
    assert health["checks"]["broker"]["status"] == "ok"
    assert health["checks"]["broker"]["latency_ms"] >= 0
    assert health["checks"]["shutdown"]["status"] == "running"


async def test_metrics_are_prometheus_text_with_the_engine_series(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])
    await server.publish(tenant, "p1")
    await client.events(1)
    await server.refused()  # no token

    answer = await server.get("/metrics")

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    families = {family.name: family.type for family in text_string_to_metric_families(answer.text)}
    assert families["pm_ws_connections_active"] == "gauge"
    for counter in (
        "pm_ws_connections_opened",
        "pm_ws_connections_refused",
        "pm_ws_connections_closed",
        "pm_ws_messages_received",
        "pm_ws_events_delivered",
        "pm_ws_errors",
        "pm_ws_rate_limited_frames",
        "pm_ws_slow_client_disconnects",
        "pm_ws_heartbeat_timeouts",
        "pm_ws_history_replays",
    ):
        assert families.get(counter) == "counter", counter
    for histogram in (
        "pm_ws_message_handling_seconds",
        "pm_ws_publish_to_delivery_seconds",
        "pm_broker_publish_seconds",
    ):
        assert families.get(histogram) == "histogram", histogram
    samples = metric_samples(answer.text)
    assert samples[("pm_ws_connections_active", ())] >= 1
    assert samples[("pm_ws_connections_refused_total", (("reason", "auth"),))] >= 1
    assert samples[("pm_ws_messages_received_total", (("type", "subscribe"),))] >= 1
    assert samples[("pm_ws_events_delivered_total", ())] >= 1


# Upgrade refusals


async def test_upgrade_without_a_token_is_refused_401_with_a_bearer_challenge(
    server: ServerProcess,
) -> None:
    answer = await server.refused()

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == "MISSING_AUTH_HEADER"
    assert body["message"]


async def test_upgrade_with_another_authorization_scheme_is_refused_401(
    server: ServerProcess,
) -> None:
    answer = await server.refused(additional_headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["code"] == "INVALID_AUTH_SCHEME"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda token: token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"),
                     id="tampered signature"),
        pytest.param(lambda token: "not.a.jwt", id="garbage"),
    ],
)  # fmt: skip
async def test_upgrade_with_a_bad_token_is_refused_401(
    server: ServerProcess, tenant: str, forge: Any
) -> None:
    answer = await server.refused(forge(server.token(tenant)))

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    body = answer.json()
    assert body["code"] in {"JWT_DECODE_FAILED", "INVALID_TOKEN"}
    assert set(body) <= {"code", "message", "field"}


async def test_upgrade_with_a_token_signed_by_another_secret_is_refused_401(
    server: ServerProcess, tenant: str
) -> None:
    forged = jwt.encode(
        {"sub": "u1", "tenant_id": tenant, "iat": 0, "exp": 2**31},
        "another-secret-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )

    answer = await server.refused(forged)

    assert answer.status == 401
    assert answer.json()["code"] in {"JWT_DECODE_FAILED", "INVALID_TOKEN"}


async def test_upgrade_with_an_expired_token_is_refused_401_token_expired(
    server: ServerProcess, tenant: str
) -> None:
    answer = await server.refused(server.token(tenant, expires_in=-120))  # past the 30 s leeway

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["code"] == "TOKEN_EXPIRED"


async def test_token_in_the_query_string_is_not_accepted(
    server: ServerProcess, tenant: str
) -> None:
    answer = await server.refused(url=f"{server.ws_url}?token={server.token(tenant)}")

    assert answer.status == 401
    assert answer.json()["code"] == "MISSING_AUTH_HEADER"


async def test_upgrade_from_an_origin_outside_ws_allowed_origins_is_refused_403(
    server: ServerProcess, tenant: str
) -> None:
    answer = await server.refused(server.token(tenant), origin="https://evil.example.com")

    assert answer.status == 403
    body = answer.json()
    assert body["code"] == "ORIGIN_NOT_ALLOWED"
    assert body["message"]


async def test_upgrade_from_an_allowed_origin_is_welcomed(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant, origin=BOARD_ORIGIN)

    assert client.welcome.tenant_id == tenant


async def test_bearer_subprotocol_without_pm_v1_is_refused_401(
    server: ServerProcess, tenant: str
) -> None:
    answer = await server.refused(subprotocols=[f"pm.bearer.{server.token(tenant)}"])

    assert answer.status == 401
    assert answer.json()["code"] == "INVALID_TOKEN"


# Connecting


async def test_authenticated_upgrade_is_welcomed_first_with_the_connection_facts(
    server: ServerProcess, tenant: str
) -> None:
    token = server.token(tenant, "alice", expires_in=600)
    client = await server.open_ws(token)

    first = await client.recv()

    assert first.WhichOneof("payload") == "welcome"
    welcome = first.welcome
    assert welcome.tenant_id == tenant
    assert welcome.user_id == "alice"
    assert welcome.connection_id
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert welcome.token_expires_at_ms == exp * 1000
    assert welcome.position.seq == 0
    assert welcome.position.epoch
    assert welcome.heartbeat_interval_secs == 30
    assert welcome.limits.max_message_bytes == MAX_MESSAGE_BYTES
    assert welcome.limits.rate_limit_max_requests == 100
    assert welcome.limits.rate_limit_window_secs == 60
    assert welcome.limits.max_subscriptions == 1000


async def test_browser_authenticates_with_the_bearer_subprotocol_and_gets_pm_v1(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.open_ws(server.token(tenant, "browser-user"), subprotocol=True)

    welcome = (await client.recv_kind("welcome")).welcome

    assert client.ws.subprotocol == "pm.v1"
    assert welcome.user_id == "browser-user"


async def test_welcome_position_is_the_tenants_last_event(
    server: ServerProcess, tenant: str
) -> None:
    await server.publish(tenant, "p1")
    published = await server.publish(tenant, "p2")

    client = await server.connect(tenant)

    assert client.welcome.position == published.position


# Delivery


async def test_an_event_reaches_subscribers_of_its_project_sprint_or_work_item_once(
    server: ServerProcess, tenant: str
) -> None:
    by_project = await server.connect(tenant, "by-project")
    by_sprint = await server.connect(tenant, "by-sprint")
    by_item = await server.connect(tenant, "by-item")
    by_all = await server.connect(tenant, "by-all")
    bystander = await server.connect(tenant, "bystander")
    await by_project.subscribe(["p1"])
    await by_sprint.subscribe(sprints=["s1"])
    await by_item.subscribe(items=["w1"])
    await by_all.subscribe(["p1"], ["s1"], ["w1"])
    await bystander.subscribe(["p9"], ["s9"], ["w9"])

    await server.publish(tenant, "p2", "s2", "w2", payload=b"nobody")
    await server.publish(tenant, "p2", "s1", payload=b"sprint")
    await server.publish(tenant, "p2", "", "w1", payload=b"item")
    await server.publish(tenant, "p1", "s1", "w1", payload=b"everyone")

    assert [e.payload for e in await by_project.events(1)] == [b"everyone"]
    assert [e.payload for e in await by_sprint.events(2)] == [b"sprint", b"everyone"]
    assert [e.payload for e in await by_item.events(2)] == [b"item", b"everyone"]
    delivered = await by_all.events(3)
    assert [e.payload for e in delivered] == [b"sprint", b"item", b"everyone"]
    assert [e.position.seq for e in delivered] == [2, 3, 4]
    for client in (by_project, by_sprint, by_item, by_all, bystander):
        await client.expect_nothing_pending()


async def test_a_delivered_event_carries_what_was_published(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])
    request = publish_request(
        tenant, "p1", event_id="evt-1", actor_user_id="bob", payload=b'{"x":1}', occurred_at_ms=42
    )
    request.type = "card.moved"
    request.scope.sprint_id = "s1"
    request.scope.work_item_id = "w1"

    answer = await server.post_publish(request.SerializeToString())
    [event] = await client.events(1)

    assert answer.status == 200
    assert event.event_id == "evt-1"
    assert event.type == "card.moved"
    assert (event.scope.project_id, event.scope.sprint_id, event.scope.work_item_id) == (
        "p1",
        "s1",
        "w1",
    )
    assert event.actor_user_id == "bob"
    assert event.payload == b'{"x":1}'
    assert event.occurred_at_ms == 42
    assert event.position == pb.PublishResponse.FromString(answer.body).position


async def test_events_never_reach_another_tenant(server: ServerProcess) -> None:
    acme, globex = f"acme-{uuid.uuid4().hex[:8]}", f"globex-{uuid.uuid4().hex[:8]}"
    acme_client = await server.connect(acme)
    globex_client = await server.connect(globex)
    await acme_client.subscribe(["shared-project"], ["shared-sprint"], ["shared-item"])
    await globex_client.subscribe(["shared-project"], ["shared-sprint"], ["shared-item"])

    await server.publish(acme, "shared-project", "shared-sprint", "shared-item", payload=b"acme")
    await server.publish(globex, "shared-project", payload=b"globex")

    assert [e.payload for e in await acme_client.events(1)] == [b"acme"]
    assert [e.payload for e in await globex_client.events(1)] == [b"globex"]
    await acme_client.expect_nothing_pending()
    await globex_client.expect_nothing_pending()


async def test_events_arrive_in_seq_order(server: ServerProcess, tenant: str) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])

    await asyncio.gather(*(server.publish(tenant, "p1") for _ in range(20)))

    seqs = [event.position.seq for event in await client.events(20)]
    assert seqs == list(range(1, 21))


async def test_a_client_that_reconnects_and_resumes_gets_what_it_missed(
    server: ServerProcess, tenant: str
) -> None:
    first = await server.connect(tenant)
    await first.subscribe(["p1"])
    await server.publish(tenant, "p1", payload=b"seen")
    [seen] = await first.events(1)
    await first.ws.close()
    await server.publish(tenant, "p1", payload=b"missed")
    await server.publish(tenant, "p2", payload=b"not subscribed")
    await server.publish(tenant, "p1", payload=b"missed too")

    second = await server.connect(tenant)
    ack = await second.subscribe(["p1"], resume_from=seen.position)
    replayed = await second.events(2)
    await server.publish(tenant, "p1", payload=b"live")
    [live] = await second.events(1)

    assert ack.recovered
    assert ack.replayed == 2
    assert ack.position.seq == 4
    assert [e.payload for e in replayed] == [b"missed", b"missed too"]
    assert [e.position.seq for e in replayed] == [2, 4]
    assert (live.payload, live.position.seq) == (b"live", 5)


async def test_resuming_from_an_unknown_epoch_is_not_recovered(
    server: ServerProcess, tenant: str
) -> None:
    await server.publish(tenant, "p1")
    client = await server.connect(tenant)

    ack = await client.subscribe(
        ["p1"], resume_from=pb.StreamPosition(epoch="an-epoch-of-another-life", seq=1)
    )

    assert not ack.recovered
    assert ack.replayed == 0
    assert ack.position == client.welcome.position
    await client.expect_nothing_pending()


# The publish API


async def test_publish_as_protobuf_answers_protobuf_with_event_id_and_position(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    first = await server.post_publish(publish_request(tenant, event_id="e-1").SerializeToString())
    second = await server.post_publish(publish_request(tenant).SerializeToString())

    assert first.status == 200
    assert first.headers["Content-Type"].startswith("application/x-protobuf")
    answer = pb.PublishResponse.FromString(first.body)
    assert answer.event_id == "e-1"
    assert answer.position.seq == 1
    assert answer.position.epoch == client.welcome.position.epoch
    generated = pb.PublishResponse.FromString(second.body)
    assert uuid.UUID(generated.event_id)
    assert generated.position.seq == 2


async def test_publish_as_protobuf_json_answers_json_with_event_id_and_position(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])
    body = json.dumps(
        {
            "tenantId": tenant,
            "type": "work_item.created",
            "scope": {"projectId": "p1", "sprintId": "s1"},
            "payload": "aGVsbG8=",
            "eventId": "json-1",
        }
    )

    answer = await server.post_publish(body, "application/json")
    [event] = await client.events(1)

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    response = json_format.Parse(answer.text, pb.PublishResponse())
    assert response.event_id == "json-1"
    assert response.position.seq == 1
    assert response.position.epoch == client.welcome.position.epoch
    assert (event.event_id, event.type, event.payload) == ("json-1", "work_item.created", b"hello")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"\xff\xff\xff\xff", "application/x-protobuf", id="protobuf garbage"),
        pytest.param(b"{not json", "application/json", id="json garbage"),
        pytest.param(b'{"tenantId": 5, "wrong": true}', "application/json", id="json wrong shape"),
    ],
)
async def test_publish_of_an_undecodable_body_is_400_with_a_json_error(
    server: ServerProcess, body: bytes, content_type: str
) -> None:
    answer = await server.post_publish(body, content_type)

    assert answer.status == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["code"] == "DECODE_ERROR"
    assert answer.json()["message"]


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("tenant_id", {"tenant_id": ""}),
        ("type", {"type": ""}),
        ("scope.project_id", {"project": ""}),
        ("event_id", {"event_id": "e" * 129}),
        ("tenant_id", {"tenant_id": "t" * 129}),
        ("scope.sprint_id", {"sprint_id": "bad\nid"}),
    ],
    ids=["no tenant_id", "no type", "no project", "129-char event_id", "129-char tenant_id",
         "control character in sprint_id"],
)  # fmt: skip
async def test_publish_of_an_invalid_request_is_400_naming_the_field(
    server: ServerProcess, tenant: str, field: str, change: dict[str, str]
) -> None:
    request = publish_request(tenant, change.pop("project", "p1"))
    if "sprint_id" in change:
        request.scope.sprint_id = change.pop("sprint_id")
    for name, value in change.items():
        setattr(request, name, value)

    answer = await server.post_publish(request.SerializeToString())

    assert answer.status == 400
    body = answer.json()
    assert body["field"] == field
    assert body["code"] == "INVALID_MESSAGE"
    assert body["message"]


@pytest.mark.parametrize("key", ["wrong-key-of-enough-length", ""], ids=["wrong key", "no key"])
async def test_publish_with_a_wrong_api_key_is_401_and_publishes_nothing(
    server: ServerProcess, tenant: str, key: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])

    answer = await server.http(
        "POST",
        "/api/v1/publish",
        data=publish_request(tenant).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        bearer=key or None,
    )

    assert answer.status == 401
    assert answer.json()["code"]
    await client.expect_nothing_pending()


async def test_publish_with_the_admin_key_is_401(server: ServerProcess, tenant: str) -> None:
    answer = await server.post_publish(
        publish_request(tenant).SerializeToString(), key=server.admin_key
    )

    assert answer.status == 401


async def test_publish_over_max_message_bytes_is_413(server: ServerProcess, tenant: str) -> None:
    request = publish_request(tenant, payload=b"x" * MAX_MESSAGE_BYTES)

    answer = await server.post_publish(request.SerializeToString())

    assert answer.status == 413
    assert answer.json()["code"]


async def test_chunked_publish_over_max_message_bytes_is_413(
    server: ServerProcess, tenant: str
) -> None:
    body = publish_request(tenant, payload=b"x" * MAX_MESSAGE_BYTES).SerializeToString()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 32_768):
            yield body[start : start + 32_768]

    answer = await server.post_publish(chunks())

    assert answer.status == 413


async def test_publish_of_exactly_max_message_bytes_is_accepted(
    server: ServerProcess, tenant: str
) -> None:
    request = publish_request(tenant)
    request.payload = b"x" * (MAX_MESSAGE_BYTES - request.ByteSize() - 8)
    request.payload += b"x" * (MAX_MESSAGE_BYTES - request.ByteSize())
    assert request.ByteSize() == MAX_MESSAGE_BYTES

    answer = await server.post_publish(request.SerializeToString())

    assert answer.status == 200, answer.body


async def test_publish_body_arriving_in_several_tcp_segments_is_read_whole(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])
    body = publish_request(tenant, payload=b"y" * 4000).SerializeToString()

    async def slow_upload() -> AsyncIterator[bytes]:
        # A slow network: the second half comes later than the first. Not a
        # synchronisation: a correct server answers 200 whatever the pause.
        yield body[:1000]
        await asyncio.sleep(0.2)
        yield body[1000:]

    answer = await server.post_publish(slow_upload(), headers={"Content-Length": str(len(body))})

    assert answer.status == 200, answer.body
    [event] = await client.events(1)
    assert event.payload == b"y" * 4000


async def test_republishing_an_event_id_returns_the_same_position_and_delivers_once(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])

    first = await server.publish(tenant, "p1", event_id="retry-me", payload=b"once")
    again = await server.publish(tenant, "p1", event_id="retry-me", payload=b"once")
    after = await server.publish(tenant, "p1", payload=b"next")

    assert again.event_id == first.event_id == "retry-me"
    assert again.position == first.position
    assert after.position.seq == first.position.seq + 1
    assert [e.payload for e in await client.events(2)] == [b"once", b"next"]
    await client.expect_nothing_pending()


async def test_cors_preflight_on_publish_echoes_an_allowed_origin(server: ServerProcess) -> None:
    answer = await server.http(
        "OPTIONS",
        "/api/v1/publish",
        headers={
            "Origin": ADMIN_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )

    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ADMIN_ORIGIN
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    allowed_headers = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers


async def test_cors_preflight_from_another_origin_gets_no_allow_origin(
    server: ServerProcess,
) -> None:
    answer = await server.http(
        "OPTIONS",
        "/api/v1/publish",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )

    assert "Access-Control-Allow-Origin" not in answer.headers


async def test_cors_publish_from_an_allowed_origin_exposes_the_answer(
    server: ServerProcess, tenant: str
) -> None:
    body = publish_request(tenant).SerializeToString()

    allowed = await server.post_publish(body, headers={"Origin": ADMIN_ORIGIN})
    other = await server.post_publish(body, headers={"Origin": "https://evil.example.com"})

    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ADMIN_ORIGIN
    assert "Access-Control-Allow-Origin" not in other.headers


# The admin API


async def test_connections_lists_who_is_connected_with_their_subscriptions(
    server: ServerProcess, tenant: str
) -> None:
    alice = await server.connect(tenant, "alice")
    bob = await server.connect(tenant, "bob")
    other_tenant = f"other-{tenant}"
    await server.connect(other_tenant, "carol")
    await alice.subscribe(["p1", "p2"], ["s1"], ["w1"])

    answer = await server.get(f"/api/v1/connections?tenant_id={tenant}", bearer=server.admin_key)
    everyone = await server.get("/api/v1/connections", bearer=server.admin_key)

    assert answer.status == 200
    listing = answer.json()
    assert listing["count"] == 2
    by_user = {c["user_id"]: c for c in listing["connections"]}
    assert set(by_user) == {"alice", "bob"}
    assert by_user["alice"]["connection_id"] == alice.welcome.connection_id
    assert by_user["bob"]["connection_id"] == bob.welcome.connection_id
    assert by_user["alice"]["tenant_id"] == tenant
    assert by_user["alice"]["project_ids"] == ["p1", "p2"]
    assert by_user["alice"]["sprint_ids"] == ["s1"]
    assert by_user["alice"]["work_item_ids"] == ["w1"]
    assert by_user["bob"]["project_ids"] == []
    assert by_user["alice"]["remote"].startswith("127.0.0.1")
    assert by_user["alice"]["connected_at_ms"] > 0
    tenants_listed = {c["tenant_id"] for c in everyone.json()["connections"]}
    assert {tenant, other_tenant} <= tenants_listed


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/connections"), ("POST", "/api/v1/disconnect")],
)
async def test_admin_endpoints_refuse_a_wrong_key_with_401(
    server: ServerProcess, method: str, path: str
) -> None:
    for key in (None, "wrong-key-of-enough-length", server.publish_key):
        answer = await server.http(method, path, json_body={"tenant_id": "x"}, bearer=key)

        assert answer.status == 401, key


async def test_disconnect_closes_matching_connections_with_4010_and_counts_them(
    server: ServerProcess, tenant: str
) -> None:
    alice_phone = await server.connect(tenant, "alice")
    alice_laptop = await server.connect(tenant, "alice")
    bob = await server.connect(tenant, "bob")

    answer = await server.disconnect(tenant, user_id="alice")

    assert answer.status == 200
    assert answer.json() == {"closed": 2}
    for client in (alice_phone, alice_laptop):
        [closing] = await client.expect_close(4010, "closing")
        assert closing.closing.code == "DISCONNECTED_BY_OPERATOR"
    await bob.expect_nothing_pending()


async def test_disconnect_by_connection_id_closes_only_that_connection(
    server: ServerProcess, tenant: str
) -> None:
    target = await server.connect(tenant, "alice")
    sibling = await server.connect(tenant, "alice")

    answer = await server.disconnect(tenant, connection_id=target.welcome.connection_id)

    assert answer.json() == {"closed": 1}
    code, _ = await target.until_closed()
    assert code == 4010
    await sibling.expect_nothing_pending()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"user_id": "alice"}',
        b'{"tenant_id": 7}',
        b'{"tenant_id": "t", "x": 1}',
    ],
    ids=["garbage", "not an object", "no tenant", "tenant not a string", "unknown key"],
)
async def test_disconnect_with_a_bad_body_is_400(server: ServerProcess, body: bytes) -> None:
    answer = await server.post_json("/api/v1/disconnect", body, bearer=server.admin_key)

    assert answer.status == 400
    assert answer.json()["code"]
