"""The HTTP APIs under hostile bodies and headers: JSON 400s and 401s, never a 500 or traceback."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pm_proto as pb
import pytest
from pm_testkit import HttpAnswer, ServerProcess

DEEP = 1000
"""How deep the nesting was that answered 500 with a RecursionError traceback."""


async def logged_request(
    server: ServerProcess, method: str, path: str, **kwargs: Any
) -> HttpAnswer:
    """Send a request and wait for its access-log line, so that whatever it logged is read.

    The kit fails the test when the server logged a traceback meanwhile.
    """
    mark = len(server.stderr.lines)
    answer = await server.http(method, path, **kwargs)
    await server.stderr.wait(f"{method} {re.escape(path)} ", after=mark)
    return answer


def assert_json_error(answer: HttpAnswer, code: str, field: str | None = None) -> None:
    assert answer.status == 400, (answer.status, answer.body)
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == code
    assert body["message"]
    assert body.get("field") == field
    assert "Traceback" not in body["message"]


def json_publish(tenant: str, **fields: Any) -> str:
    return json.dumps(
        {"tenantId": tenant, "type": "work_item.updated", "scope": {"projectId": "p1"}, **fields}
    )


# Deep nesting


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"tenant_id": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"tenant_id": "t", "user_id": ' + b'{"":' * 100 + b"1" + b"}" * 100 + b"}",
    ],
    ids=["arrays 1000 deep", "1000 deep inside an object", "objects 100 deep"],
)
async def test_disconnect_with_deeply_nested_json_is_400_invalid_message_without_a_traceback(
    server: ServerProcess, body: bytes
) -> None:
    answer = await logged_request(
        server,
        "POST",
        "/api/v1/disconnect",
        data=body,
        headers={"Content-Type": "application/json"},
        bearer=server.admin_key,
    )

    assert_json_error(answer, "INVALID_MESSAGE")


async def test_publish_with_deeply_nested_json_is_400_invalid_message_without_a_traceback(
    server: ServerProcess, tenant: str
) -> None:
    body = json_publish(tenant).replace('"p1"', "[" * DEEP + "]" * DEEP)

    answer = await logged_request(
        server,
        "POST",
        "/api/v1/publish",
        data=body,
        headers={"Content-Type": "application/json"},
        bearer=server.publish_key,
    )

    assert_json_error(answer, "INVALID_MESSAGE")


async def test_publish_of_a_lone_surrogate_where_an_object_belongs_is_400_not_500(
    server: ServerProcess,
) -> None:
    # Found by tools/fuzz (publish_api): protobuf's JSON parser raised SystemError.
    answer = await logged_request(
        server,
        "POST",
        "/api/v1/publish",
        data=b'{"scope": "\\ud800"}',
        headers={"Content-Type": "application/json"},
        bearer=server.publish_key,
    )

    assert_json_error(answer, "DECODE_ERROR")


async def test_a_disconnect_body_with_a_null_id_still_closes_the_matches(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant, "alice")
    body = json.dumps({"tenant_id": tenant, "user_id": "alice", "connection_id": None})

    answer = await server.post_json("/api/v1/disconnect", body, bearer=server.admin_key)

    assert answer.json() == {"closed": 1}
    await client.expect_close(4010, "closing")


# Bytes fields are strictly base64


@pytest.mark.parametrize(
    "payload",
    ["!!!", "aGVsbG8===", "aGVs bG8=", "a", "aGV=sbG8", "++--", 42],
    ids=[
        "not base64 at all",
        "too much padding",
        "space inside",
        "one character",
        "padding inside",
        "both alphabets mixed",
        "a number",
    ],
)
async def test_publish_with_a_payload_that_is_not_base64_is_400_naming_payload(
    server: ServerProcess, tenant: str, payload: object
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])

    answer = await server.post_publish(json_publish(tenant, payload=payload), "application/json")

    assert_json_error(answer, "INVALID_MESSAGE", "payload")
    await client.expect_nothing_pending()


PAYLOAD = bytes([0xFB, 0xEF, 0xBE, 0xFF, 0x10])
"""Bytes whose standard and URL-safe base64 differ: `++++/xA=` and `----_xA=`."""


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(PAYLOAD).decode(),
        base64.b64encode(PAYLOAD).decode().rstrip("="),
        base64.urlsafe_b64encode(PAYLOAD).decode(),
        base64.urlsafe_b64encode(PAYLOAD).decode().rstrip("="),
    ],
    ids=["standard padded", "standard unpadded", "url-safe padded", "url-safe unpadded"],
)
async def test_publish_takes_a_payload_in_either_base64_alphabet_padded_or_not(
    server: ServerProcess, tenant: str, encoded: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])

    answer = await server.post_publish(json_publish(tenant, payload=encoded), "application/json")
    [event] = await client.events(1)

    assert answer.status == 200, answer.body
    assert event.payload == PAYLOAD


# The Authorization scheme is case-insensitive, as on /ws


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_publish_takes_the_api_key_with_the_bearer_scheme_in_any_case(
    server: ServerProcess, tenant: str, scheme: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])
    request = pb.PublishRequest(
        tenant_id=tenant, type="work_item.updated", scope={"project_id": "p1"}
    )

    answer = await server.http(
        "POST",
        "/api/v1/publish",
        data=request.SerializeToString(),
        headers={
            "Content-Type": "application/x-protobuf",
            "Authorization": f"{scheme} {server.publish_key}",
        },
    )
    [event] = await client.events(1)

    assert answer.status == 200, answer.body
    assert event.event_id == pb.PublishResponse.FromString(answer.body).event_id


async def test_admin_api_takes_a_lower_case_bearer_scheme(server: ServerProcess) -> None:
    answer = await server.get(
        "/api/v1/connections", headers={"Authorization": f"bearer {server.admin_key}"}
    )

    assert answer.status == 200
    assert "connections" in answer.json()


@pytest.mark.parametrize(
    "authorization",
    ["bearer wrong-key-of-enough-length", "bearer", "Basic {key}", "{key}", "bearer {key}x"],
    ids=["wrong key", "no key", "another scheme", "no scheme", "key with a suffix"],
)
async def test_publish_with_a_wrong_key_in_any_case_is_401_with_a_challenge(
    server: ServerProcess, tenant: str, authorization: str
) -> None:
    client = await server.connect(tenant)
    await client.subscribe(["p1"])
    request = pb.PublishRequest(
        tenant_id=tenant, type="work_item.updated", scope={"project_id": "p1"}
    )

    answer = await server.http(
        "POST",
        "/api/v1/publish",
        data=request.SerializeToString(),
        headers={
            "Content-Type": "application/x-protobuf",
            "Authorization": authorization.format(key=server.publish_key),
        },
    )

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["code"] == "INVALID_API_KEY"
    assert server.publish_key not in answer.text
    await client.expect_nothing_pending()
