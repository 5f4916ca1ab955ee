"""The HTTP APIs for backends and operators: publish, list connections, disconnect."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from itertools import accumulate
from typing import Any, Final, TypeVar, cast

import pm_proto as pb
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from pm_auth import AuthError, token_from_authorization
from pm_ws import (
    BrokerUnavailable,
    DisconnectRequest,
    EventDraft,
    ProtocolError,
    PublishOutcomeUnknown,
    Scope,
    TenantId,
    UserId,
    check_id,
)
from pm_ws.events import ConnectionId

from pm_server.state import GATEWAY, LIMITS

_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
CONTENT_TYPE_JSON: Final = "application/json"

MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects a JSON body may have (ours need 2)."""

MAX_DISCONNECT_BODY_BYTES: Final = 4096
"""A disconnect order is three ids; a body this big is not one."""

# A JSON string, to its closing quote or (when unterminated) to the end: matched
# without backtracking, so scanning is linear even for hostile input.
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]+|\\.)*"?', re.DOTALL)
_NOT_A_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}
# The stubs type upb's descriptors apart from the pure-Python ones; the API is the same.
_PUBLISH_REQUEST: Final = cast(Descriptor, pb.PublishRequest.DESCRIPTOR)
_BASE64_ALPHABETS: Final = (
    (re.compile(r"[A-Za-z0-9+/]*"), None),
    (re.compile(r"[A-Za-z0-9_-]*"), b"-_"),
)


def error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """A JSON error body `{"code", "message"[, "field"]}` with `status`."""
    body = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


def require_key(key: str | None, handler: Handler) -> Handler:
    """Guard `handler` with `Authorization: Bearer <key>`; no key configured means 404.

    The header is read by the rule the WebSocket upgrade uses
    (`pm_auth.token_from_authorization`): the scheme in any case, spaces or tabs
    around the key. A missing or wrong key, or another scheme, is 401 with a
    `WWW-Authenticate` challenge. The key comparison is constant-time; the key
    never appears in a response or log.
    """
    expected = key.encode() if key is not None else None

    async def guarded(request: web.Request) -> web.StreamResponse:
        if expected is None:
            return error(404, "NOT_FOUND", "this endpoint is not enabled")
        try:
            given = token_from_authorization(request.headers.get("Authorization")).encode()
        except AuthError:
            given = b""
        if not hmac.compare_digest(given, expected):
            response = error(401, "INVALID_API_KEY", "missing or wrong API key")
            response.headers["WWW-Authenticate"] = 'Bearer realm="pm-realtime"'
            return response
        return await handler(request)

    return guarded


async def _read_body(request: web.Request, limit: int) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > limit:
        return error(413, "PAYLOAD_TOO_LARGE", f"the body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return error(413, "PAYLOAD_TOO_LARGE", f"the body exceeds {limit} bytes")
    return bytes(body)


def _load_json(body: bytes) -> Any:
    r"""Parse a request body as UTF-8 JSON, refusing what would make parsing costly.

    Nesting is measured by a linear scan before parsing, so no input reaches
    the recursive parser deeper than `MAX_JSON_DEPTH` (which would otherwise
    raise `RecursionError` at a depth that depends on the caller's stack).
    Duplicate keys in an object are refused rather than resolved silently, and
    so are escapes of lone surrogates (`"\ud800"`): JSON allows them, Unicode
    text (and so every id and protobuf string) does not.

    Raises:
        ProtocolError: DECODE_ERROR for bytes that are not UTF-8 JSON, repeat a
            key or hold a lone surrogate; INVALID_MESSAGE for nesting deeper
            than `MAX_JSON_DEPTH`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the body is not UTF-8", code="DECODE_ERROR") from None
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise ProtocolError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError:
        raise ProtocolError("the body is not JSON", code="DECODE_ERROR") from None
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(
            "the body escapes a lone surrogate, which is not text", code="DECODE_ERROR"
        ) from None
    return document


def _json_depth(text: str) -> int:
    """How deep `[` and `{` nest outside strings, in linear time.

    Exact for valid JSON with more than `MAX_JSON_DEPTH` brackets; below that,
    the bracket count (an upper bound) is returned without scanning.
    """
    openings = text.count("[") + text.count("{")
    if openings <= MAX_JSON_DEPTH:
        return openings
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key")
    return document


def parse_publish_request(body: bytes, content_type: str) -> pb.PublishRequest:
    """Decode and validate a publish body; what it returns is safe to publish.

    `content_type` is `application/x-protobuf` (binary) or `application/json`
    (proto3 JSON: camelCase or field names; bytes fields as standard or URL-safe
    base64, padded or not, anything else refused rather than decoded leniently).
    The ids and `type` follow the client id rules; `scope.project_id` is
    required. Pure: no I/O, no clock; any bytes are safe to pass.

    Raises:
        ProtocolError: DECODE_ERROR when the body is not a `pm.v1.PublishRequest`
            in that form; INVALID_MESSAGE, with `field` when one is to blame,
            when it breaks a rule (nesting, base64, an id).
        ValueError: `content_type` is neither of the two (a caller's bug).
    """
    message = pb.PublishRequest()
    if content_type == CONTENT_TYPE_PROTOBUF:
        try:
            message.ParseFromString(body)
        except DecodeError:
            raise ProtocolError(
                "the body is not a pm.v1.PublishRequest", code="DECODE_ERROR"
            ) from None
    elif content_type == CONTENT_TYPE_JSON:
        document = _load_json(body)
        if not isinstance(document, dict):
            raise ProtocolError("the body is not a pm.v1.PublishRequest", code="DECODE_ERROR")
        _canonicalise_bytes_fields(document, _PUBLISH_REQUEST)
        try:
            json_format.ParseDict(document, message)
        except Exception:
            # Wrapped as json_format.Parse does: ParseDict lets more than ParseError
            # out for some shapes (upb raised SystemError for a lone surrogate where
            # an object belongs; tools/fuzz found it).
            raise ProtocolError(
                "the body is not a pm.v1.PublishRequest", code="DECODE_ERROR"
            ) from None
    else:
        raise ValueError(f"unsupported content type {content_type!r}")
    _check_publish_request(message)
    return message


def _canonicalise_bytes_fields(
    document: dict[str, Any], descriptor: Descriptor, prefix: str = ""
) -> None:
    """Check every bytes field of a proto3 JSON document strictly, rewriting it canonically.

    json_format decodes base64 leniently (it drops characters outside the
    alphabet, so `"!!!"` becomes empty bytes); after this it only ever sees
    standard padded base64. Shapes other than strings and objects are left for
    json_format to refuse.
    """
    for field in descriptor.fields:
        path = prefix + field.name
        for key in dict.fromkeys((field.json_name, field.name)):
            if key not in document:
                continue
            value = document[key]
            if field.type == FieldDescriptor.TYPE_BYTES:
                if field.is_repeated and isinstance(value, list):
                    document[key] = [_canonical_base64(item, path) for item in value]
                elif value is not None:
                    document[key] = _canonical_base64(value, path)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                items = value if field.is_repeated and isinstance(value, list) else [value]
                for item in items:
                    if isinstance(item, dict):
                        _canonicalise_bytes_fields(item, field.message_type, path + ".")


def _canonical_base64(value: object, field: str) -> str:
    refusal = ProtocolError(
        f"{field} must be base64 (standard or URL-safe alphabet, padded or not)", field=field
    )
    if not isinstance(value, str):
        raise refusal
    data = value.rstrip("=")
    padding = len(value) - len(data)
    if len(data) % 4 == 1 or padding not in (0, -len(data) % 4):
        raise refusal
    for alphabet, altchars in _BASE64_ALPHABETS:
        if alphabet.fullmatch(data):
            try:
                decoded = base64.b64decode(
                    data + "=" * (-len(data) % 4), altchars=altchars, validate=True
                )
            except binascii.Error:
                raise refusal from None
            return base64.b64encode(decoded).decode("ascii")
    raise refusal


def _check_publish_request(message: pb.PublishRequest) -> None:
    check_id(message.tenant_id, "tenant_id")
    check_id(message.type, "type")
    check_id(message.scope.project_id, "scope.project_id")
    if message.scope.sprint_id:
        check_id(message.scope.sprint_id, "scope.sprint_id")
    if message.scope.work_item_id:
        check_id(message.scope.work_item_id, "scope.work_item_id")
    if message.actor_user_id:
        check_id(message.actor_user_id, "actor_user_id")
    if message.event_id:
        check_id(message.event_id, "event_id")


async def publish(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/publish`: validate a `PublishRequest`, publish it, answer its position.

    Accepts protobuf (`application/x-protobuf`) or protobuf-JSON
    (`application/json`) and answers in the same type. 400 for bad input (see
    `parse_publish_request`), 413 over `MAX_MESSAGE_BYTES`, 415 for another
    content type, 503 when the broker could not store the event (it was not
    delivered either: retry with the same `event_id`), 504
    `PUBLISH_OUTCOME_UNKNOWN` when the broker took the event but did not answer in
    time (it may be stored and delivered). Both error bodies carry the `event_id`
    (made here when the request had none), so the retry is idempotent.
    """
    content_type = request.content_type
    if content_type not in (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON):
        return error(
            415, "UNSUPPORTED_MEDIA_TYPE", f"send {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON}"
        )
    body = await _read_body(request, request.app[LIMITS].max_message_bytes)
    if isinstance(body, web.Response):
        return body
    try:
        message = parse_publish_request(body, content_type)
    except ProtocolError as exc:
        return error(400, exc.code, exc.message, exc.field)
    draft = _draft(message)
    try:
        result = await request.app[GATEWAY].publish(draft)
    except PublishOutcomeUnknown as exc:
        return _unstored(504, exc.code, exc.message, draft.event_id)
    except BrokerUnavailable:
        refusal = "the event broker is unavailable; retry with the same event_id"
        return _unstored(503, "BROKER_UNAVAILABLE", refusal, draft.event_id)
    answer = pb.PublishResponse(
        event_id=result.event_id,
        position=pb.StreamPosition(epoch=result.position.epoch, seq=result.position.seq),
    )
    if content_type == CONTENT_TYPE_PROTOBUF:
        return web.Response(body=answer.SerializeToString(), content_type=CONTENT_TYPE_PROTOBUF)
    return web.json_response(json_format.MessageToDict(answer))


def _unstored(status: int, code: str, message: str, event_id: str) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "event_id": event_id}, status=status
    )


def _draft(message: pb.PublishRequest) -> EventDraft:
    """The draft of a validated request, with a new UUID and now for what it left out."""
    return EventDraft(
        tenant_id=TenantId(message.tenant_id),
        event_id=message.event_id or str(uuid.uuid4()),
        type=message.type,
        scope=Scope(message.scope.project_id, message.scope.sprint_id, message.scope.work_item_id),
        payload=message.payload,
        actor_user_id=message.actor_user_id,
        occurred_at_ms=message.occurred_at_ms or int(time.time() * 1000),
    )


async def connections(request: web.Request) -> web.StreamResponse:
    """`GET /api/v1/connections[?tenant_id=]`: who is connected to this process."""
    tenant_id = request.query.get("tenant_id")
    snapshot = request.app[GATEWAY].registry.snapshot(tenant_id)
    return web.json_response(
        {"count": len(snapshot), "connections": [asdict(info) for info in snapshot]}
    )


def parse_disconnect_request(body: bytes) -> DisconnectRequest:
    """Decode a disconnect body `{"tenant_id", "user_id"?, "connection_id"?}`.

    The ids follow the client id rules; `null` counts as absent; other keys are
    refused. Pure; any bytes are safe to pass.

    Raises:
        ProtocolError: DECODE_ERROR for a body that is not JSON (see `_load_json`);
            INVALID_MESSAGE, with `field` when one is to blame, for another shape.
    """
    document = _load_json(body)
    if not isinstance(document, dict) or set(document) - {"tenant_id", "user_id", "connection_id"}:
        raise ProtocolError("expected {tenant_id, user_id?, connection_id?}")
    return DisconnectRequest(
        tenant_id=TenantId(_id(document, "tenant_id", required=True) or ""),
        user_id=_optional(UserId, _id(document, "user_id")),
        connection_id=_optional(ConnectionId, _id(document, "connection_id")),
    )


async def disconnect(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/disconnect`: close matching connections (4010) on every process.

    Answers `{"closed": n}` with the number closed in this process; the others
    are reached through the broker (503 when it is unreachable, after the local
    ones were closed). 400 for a bad body (see `parse_disconnect_request`).
    """
    body = await _read_body(request, MAX_DISCONNECT_BODY_BYTES)
    if isinstance(body, web.Response):
        return body
    try:
        order = parse_disconnect_request(body)
    except ProtocolError as exc:
        return error(400, exc.code, exc.message, exc.field)
    try:
        closed = await request.app[GATEWAY].disconnect(order)
    except BrokerUnavailable:
        return error(
            503, "BROKER_UNAVAILABLE", "closed the matches here; other processes were not reached"
        )
    return web.json_response({"closed": closed})


def _id(document: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string", field=name)
    return check_id(value, name)


def _optional(kind: Callable[[str], _T], value: str | None) -> _T | None:
    return None if value is None else kind(value)
