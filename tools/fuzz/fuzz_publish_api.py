#!/usr/bin/env python3
"""Fuzz target `publish_api`: bodies of the publish and disconnect APIs, through their parsers.

The first byte picks the form (mod 3): 0 a protobuf `PublishRequest`, 1 its
proto3 JSON form, 2 a disconnect order; the rest is the body. Checks
`pm_server.api.parse_publish_request` and `parse_disconnect_request`, the pure
functions the handlers call. Expected: a request whose ids obey SPEC §2 (and,
for a publish, that reads back the same from its other form), or a
`ProtocolError` coded DECODE_ERROR or INVALID_MESSAGE naming a real field.
Anything else is a crash: in the server it would be a 500.

    uv run --group fuzz python tools/fuzz/fuzz_publish_api.py CORPUS_DIR [libFuzzer flags]
"""

from __future__ import annotations

import random
import unicodedata

import pm_proto as pb
from google.protobuf import json_format
from jsonmutator import mutate_json
from pm_server.api import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    parse_disconnect_request,
    parse_publish_request,
)
from pm_ws import ProtocolError
from protomutator import RawMutate, mutate_message, mutate_serialized

PROTOBUF, JSON, DISCONNECT = 0, 1, 2
FORMS = 3
EXPECTED_CODES = frozenset({"DECODE_ERROR", "INVALID_MESSAGE"})
PUBLISH_FIELDS = frozenset(
    {
        None,
        "tenant_id",
        "type",
        "scope.project_id",
        "scope.sprint_id",
        "scope.work_item_id",
        "actor_user_id",
        "event_id",
        "payload",
    }
)
DISCONNECT_FIELDS = frozenset({None, "tenant_id", "user_id", "connection_id"})
PUBLISH_KEYS = (
    "tenantId", "tenant_id", "type", "scope", "projectId", "project_id", "sprintId",
    "workItemId", "payload", "actorUserId", "eventId", "occurredAtMs", "occurred_at_ms",
)  # fmt: skip
DISCONNECT_KEYS = ("tenant_id", "user_id", "connection_id", "tenantId", "")


def valid_id(value: str) -> bool:
    """SPEC §2: 1..128 characters without control characters."""
    return 1 <= len(value) <= 128 and not any(unicodedata.category(c) == "Cc" for c in value)


def test_one_input(data: bytes) -> None:
    form, body = (data[0] % FORMS, data[1:]) if data else (PROTOBUF, b"")
    if form == DISCONNECT:
        check_disconnect(body)
    else:
        check_publish(body, CONTENT_TYPE_PROTOBUF if form == PROTOBUF else CONTENT_TYPE_JSON)


def check_publish(body: bytes, content_type: str) -> None:
    try:
        request = parse_publish_request(body, content_type)
    except ProtocolError as refusal:
        check_refusal(refusal, PUBLISH_FIELDS)
        return
    for value in (request.tenant_id, request.type, request.scope.project_id):
        assert valid_id(value), request
    for value in (
        request.scope.sprint_id,
        request.scope.work_item_id,
        request.actor_user_id,
        request.event_id,
    ):
        assert not value or valid_id(value), request
    # Either form of the same request reads back the same.
    known = pb.PublishRequest()
    known.CopyFrom(request)
    known.DiscardUnknownFields()
    as_json = json_format.MessageToJson(known).encode()
    assert parse_publish_request(as_json, CONTENT_TYPE_JSON) == known
    assert parse_publish_request(known.SerializeToString(), CONTENT_TYPE_PROTOBUF) == known


def check_disconnect(body: bytes) -> None:
    try:
        order = parse_disconnect_request(body)
    except ProtocolError as refusal:
        check_refusal(refusal, DISCONNECT_FIELDS)
        return
    assert valid_id(order.tenant_id), order
    assert order.user_id is None or valid_id(order.user_id), order
    assert order.connection_id is None or valid_id(order.connection_id), order


def check_refusal(refusal: ProtocolError, fields: frozenset[str | None]) -> None:
    assert refusal.code in EXPECTED_CODES, refusal.code
    assert refusal.message
    assert refusal.field in fields, refusal.field


def mutate(data: bytes, max_size: int, seed: int, raw_mutate: RawMutate) -> bytes:
    """Mutate the body in its form: as a message, as a JSON document, or as bytes."""
    rng = random.Random(seed)
    form, body = (data[0], data[1:]) if data else (PROTOBUF, b"")
    if rng.random() < 0.02:
        form = rng.randrange(256)
    room = max(0, max_size - 1)
    if form % FORMS == PROTOBUF:
        body = mutate_serialized(body, room, seed, pb.PublishRequest, raw_mutate)
    elif form % FORMS == JSON and rng.random() < 0.5:
        body = mutate_publish_message_as_json(body, room, rng, raw_mutate)
    else:
        keys = PUBLISH_KEYS if form % FORMS == JSON else DISCONNECT_KEYS
        body = mutate_json(body, room, rng, raw_mutate, keys)
    return bytes([form]) + body[:room]


def mutate_publish_message_as_json(
    body: bytes, max_size: int, rng: random.Random, raw_mutate: RawMutate
) -> bytes:
    """Read a JSON body leniently as a message, mutate the message, write its JSON."""
    request = pb.PublishRequest()
    try:
        json_format.Parse(body, request, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError):
        return raw_mutate(body, max_size)
    mutate_message(request, rng, raw_mutate)
    names = rng.random() < 0.3
    text = json_format.MessageToJson(request, preserving_proto_field_name=names).encode()
    return text if len(text) <= max_size else raw_mutate(body, max_size)


def main() -> None:
    from libfuzzer import fuzz

    fuzz(test_one_input, mutate)


if __name__ == "__main__":
    main()
