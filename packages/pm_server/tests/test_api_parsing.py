import base64
import json
from typing import Any

import pm_proto as pb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_server.api import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    MAX_JSON_DEPTH,
    parse_disconnect_request,
    parse_publish_request,
)
from pm_ws import DisconnectRequest, ProtocolError, TenantId, UserId


def publish_json(**fields: Any) -> bytes:
    body = {"tenantId": "t1", "type": "work_item.updated", "scope": {"projectId": "p1"}}
    body.update(fields)
    return json.dumps(body).encode()


def publish_refusal(body: bytes, content_type: str = CONTENT_TYPE_JSON) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_publish_request(body, content_type)
    return caught.value


def publish_outcome(body: bytes, content_type: str) -> str:
    try:
        parse_publish_request(body, content_type)
    except ProtocolError as refusal:
        return refusal.code
    return "request"


def disconnect_refusal(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_disconnect_request(body)
    return caught.value


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Publish bodies


def test_a_protobuf_and_a_json_publish_body_read_the_same() -> None:
    message = pb.PublishRequest(
        tenant_id="t1",
        type="work_item.updated",
        scope=pb.Scope(project_id="p1", sprint_id="s1", work_item_id="w1"),
        payload=b"\x00\xff",
        actor_user_id="u1",
        event_id="e1",
        occurred_at_ms=1_700_000_000_000,
    )
    as_json = publish_json(
        scope={"projectId": "p1", "sprintId": "s1", "workItemId": "w1"},
        payload="AP8=",
        actorUserId="u1",
        eventId="e1",
        occurredAtMs="1700000000000",
    )

    from_protobuf = parse_publish_request(message.SerializeToString(), CONTENT_TYPE_PROTOBUF)
    from_json = parse_publish_request(as_json, CONTENT_TYPE_JSON)

    assert from_protobuf == message
    assert from_json == message


def test_a_json_publish_body_may_use_the_proto_field_names() -> None:
    body = json.dumps(
        {"tenant_id": "t1", "type": "x", "scope": {"project_id": "p1"}, "actor_user_id": "u"}
    ).encode()

    message = parse_publish_request(body, CONTENT_TYPE_JSON)

    assert (message.tenant_id, message.scope.project_id, message.actor_user_id) == ("t1", "p1", "u")


@given(payload=st.binary(max_size=64), url_safe=st.booleans(), padded=st.booleans())
def test_a_json_payload_reads_back_in_either_base64_alphabet_padded_or_not(
    payload: bytes, url_safe: bool, padded: bool
) -> None:
    encoded = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(payload).decode()
    if not padded:
        encoded = encoded.rstrip("=")

    message = parse_publish_request(publish_json(payload=encoded), CONTENT_TYPE_JSON)

    assert message.payload == payload


@pytest.mark.parametrize(
    "payload",
    ["!!!", "aGVsbG8===", "aGVsbG8==", "aGVs bG8=", "a", "aGV=sbG8", "++--", "=", "aGVsbG8\n", 42,
     [], {}, True],
)  # fmt: skip
def test_a_json_payload_that_is_not_strictly_base64_is_refused_naming_payload(
    payload: object,
) -> None:
    refusal = publish_refusal(publish_json(payload=payload))

    assert refusal.code == "INVALID_MESSAGE"
    assert refusal.field == "payload"


def test_a_null_json_payload_is_an_empty_payload() -> None:
    message = parse_publish_request(publish_json(payload=None), CONTENT_TYPE_JSON)

    assert message.payload == b""


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_a_json_publish_body_nested_past_the_limit_is_refused_as_invalid(depth: int) -> None:
    body = publish_json().replace(b'"p1"', nested(depth).encode())

    refusal = publish_refusal(body)

    assert refusal.code == "INVALID_MESSAGE"
    assert str(MAX_JSON_DEPTH) in refusal.message


def test_nesting_within_the_limit_is_left_to_the_message_shape() -> None:
    body = publish_json().replace(b'"p1"', nested(MAX_JSON_DEPTH - 2).encode())

    assert publish_refusal(body).code == "DECODE_ERROR"


def test_brackets_inside_json_strings_do_not_count_as_nesting() -> None:
    brackets = '[{"\\"' * 1000

    message = parse_publish_request(publish_json(type="t", actorUserId="u"), CONTENT_TYPE_JSON)
    refusal = publish_refusal(publish_json(type=brackets))

    assert message.type == "t"
    assert refusal.code == "INVALID_MESSAGE"
    assert refusal.field == "type"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"tenantId": 5}', b"5", b"null", b"[]", b'"t1"', b"\xff\xfe",
     b'{"tenantId": "t1", "tenantId": "t2", "type": "x", "scope": {"projectId": "p"}}',
     b'{"tenantId": "t1", "type": "x", "scope": {"projectId": "p"}, "nope": 1}'],
    ids=["garbage", "wrong type", "number", "null", "array", "string", "not utf-8",
         "duplicate key", "unknown key"],
)  # fmt: skip
def test_a_json_body_that_is_not_a_publish_request_is_a_decode_error(body: bytes) -> None:
    refusal = publish_refusal(body)

    assert refusal.code == "DECODE_ERROR"
    assert refusal.message


@pytest.mark.parametrize(
    "body",
    [b'{"scope": "\\ud800"}', b'{"tenantId": "\\udc00"}', b'{"x": ["\\ud83d"]}'],
    ids=["where an object belongs", "in an id", "in an array"],
)
def test_a_json_body_escaping_a_lone_surrogate_is_a_decode_error(body: bytes) -> None:
    # Found by tools/fuzz (publish_api): upb raised SystemError for the first one.
    refusal = publish_refusal(body)

    assert refusal.code == "DECODE_ERROR"


def test_escaped_surrogate_pairs_are_text() -> None:
    message = parse_publish_request(
        b'{"tenantId": "t\\ud83d\\ude00", "type": "x", "scope": {"projectId": "p"}}',
        CONTENT_TYPE_JSON,
    )

    assert message.tenant_id == "t\U0001f600"


def test_a_protobuf_body_that_does_not_decode_is_a_decode_error() -> None:
    assert publish_refusal(b"\xff\xff\xff", CONTENT_TYPE_PROTOBUF).code == "DECODE_ERROR"


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("tenant_id", {"tenantId": ""}),
        ("type", {"type": "t" * 129}),
        ("scope.project_id", {"scope": {}}),
        ("scope.sprint_id", {"scope": {"projectId": "p", "sprintId": "s\x00"}}),
        ("scope.work_item_id", {"scope": {"projectId": "p", "workItemId": "w" * 129}}),
        ("actor_user_id", {"actorUserId": "u\x85"}),
        ("event_id", {"eventId": "e" * 129}),
    ],
)
def test_a_publish_body_breaking_an_id_rule_is_refused_naming_the_field(
    field: str, changes: dict[str, Any]
) -> None:
    refusal = publish_refusal(publish_json(**changes))

    assert refusal.code == "INVALID_MESSAGE"
    assert refusal.field == field


def test_another_content_type_is_the_callers_bug() -> None:
    with pytest.raises(ValueError, match="content type"):
        parse_publish_request(b"", "text/plain")


@given(st.binary(max_size=256), st.sampled_from([CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF]))
def test_any_publish_body_is_a_request_or_a_protocol_error(body: bytes, content_type: str) -> None:
    assert publish_outcome(body, content_type) in {"request", "DECODE_ERROR", "INVALID_MESSAGE"}


# Disconnect bodies


def test_a_disconnect_body_names_a_tenant_and_optionally_a_user_or_connection() -> None:
    order = parse_disconnect_request(b'{"tenant_id": "t1", "user_id": "u1", "connection_id": null}')

    assert order == DisconnectRequest(TenantId("t1"), user_id=UserId("u1"), connection_id=None)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_a_disconnect_body_nested_past_the_limit_is_refused_as_invalid(depth: int) -> None:
    for body in (nested(depth), '{"tenant_id": ' + nested(depth) + "}"):
        refusal = disconnect_refusal(body.encode())

        assert refusal.code == "INVALID_MESSAGE"
        assert refusal.field is None


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"not json", "DECODE_ERROR", None),
        (b'{"tenant_id": "t", "tenant_id": "u"}', "DECODE_ERROR", None),
        (b'{"tenant_id": "t", "user_id": "\\udfff"}', "DECODE_ERROR", None),
        (b"[]", "INVALID_MESSAGE", None),
        (b'{"tenant_id": "t", "x": 1}', "INVALID_MESSAGE", None),
        (b'{"user_id": "u"}', "INVALID_MESSAGE", "tenant_id"),
        (b'{"tenant_id": 7}', "INVALID_MESSAGE", "tenant_id"),
        (b'{"tenant_id": "t", "user_id": ["u"]}', "INVALID_MESSAGE", "user_id"),
        (b'{"tenant_id": "t", "connection_id": ""}', "INVALID_MESSAGE", "connection_id"),
    ],
)
def test_a_bad_disconnect_body_is_refused(body: bytes, code: str, field: str | None) -> None:
    refusal = disconnect_refusal(body)

    assert (refusal.code, refusal.field) == (code, field)
