"""The HTTP APIs for backends and operators: publish, list connections, disconnect."""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import pm_proto as pb
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from pm_ws import (
    BrokerUnavailable,
    DisconnectRequest,
    EventDraft,
    ProtocolError,
    Scope,
    TenantId,
    UserId,
    check_id,
)
from pm_ws.events import ConnectionId

from pm_server.state import GATEWAY, SETTINGS

_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"


def error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """A JSON error body `{"code", "message"[, "field"]}` with `status`."""
    body = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


def require_key(key: str | None, handler: Handler) -> Handler:
    """Guard `handler` with `Authorization: Bearer <key>`; no key configured means 404.

    The comparison is constant-time; the key never appears in a response or log.
    """
    expected = f"Bearer {key}".encode() if key is not None else None

    async def guarded(request: web.Request) -> web.StreamResponse:
        if expected is None:
            return error(404, "NOT_FOUND", "this endpoint is not enabled")
        given = request.headers.get("Authorization", "").encode()
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


async def publish(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/publish`: validate a `PublishRequest`, publish it, answer its position.

    Accepts protobuf (`application/x-protobuf`) or protobuf-JSON
    (`application/json`) and answers in the same type. 400 for bad input, 413
    over `MAX_MESSAGE_BYTES`, 415 for another content type, 503 when the broker
    could not store the event (it was not delivered either: retry with the same
    `event_id`).
    """
    settings = request.app[SETTINGS]
    content_type = request.content_type
    if content_type not in (_PROTOBUF, _JSON):
        return error(415, "UNSUPPORTED_MEDIA_TYPE", f"send {_PROTOBUF} or {_JSON}")
    body = await _read_body(request, settings.max_message_bytes)
    if isinstance(body, web.Response):
        return body
    message = pb.PublishRequest()
    try:
        if content_type == _PROTOBUF:
            message.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8"), message)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError):
        return error(400, "DECODE_ERROR", "the body is not a pm.v1.PublishRequest")
    try:
        draft = _draft(message)
    except ProtocolError as exc:
        return error(400, exc.code, exc.message, exc.field)
    try:
        result = await request.app[GATEWAY].publish(draft)
    except BrokerUnavailable:
        return error(503, "BROKER_UNAVAILABLE", "the event broker is unavailable; retry")
    answer = pb.PublishResponse(
        event_id=result.event_id,
        position=pb.StreamPosition(epoch=result.position.epoch, seq=result.position.seq),
    )
    if content_type == _PROTOBUF:
        return web.Response(body=answer.SerializeToString(), content_type=_PROTOBUF)
    return web.json_response(json_format.MessageToDict(answer))


def _draft(message: pb.PublishRequest) -> EventDraft:
    tenant_id = check_id(message.tenant_id, "tenant_id")
    event_type = check_id(message.type, "type")
    project_id = check_id(message.scope.project_id, "scope.project_id")
    sprint_id = message.scope.sprint_id
    work_item_id = message.scope.work_item_id
    if sprint_id:
        check_id(sprint_id, "scope.sprint_id")
    if work_item_id:
        check_id(work_item_id, "scope.work_item_id")
    if message.actor_user_id:
        check_id(message.actor_user_id, "actor_user_id")
    event_id = check_id(message.event_id, "event_id") if message.event_id else str(uuid.uuid4())
    return EventDraft(
        tenant_id=TenantId(tenant_id),
        event_id=event_id,
        type=event_type,
        scope=Scope(project_id, sprint_id, work_item_id),
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


async def disconnect(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/disconnect`: close matching connections (4010) on every process.

    Answers `{"closed": n}` with the number closed in this process; the others
    are reached through the broker (503 when it is unreachable, after the local
    ones were closed).
    """
    body = await _read_body(request, 4096)
    if isinstance(body, web.Response):
        return body
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "DECODE_ERROR", "the body is not JSON")
    if not isinstance(document, dict) or set(document) - {"tenant_id", "user_id", "connection_id"}:
        return error(400, "INVALID_MESSAGE", "expected {tenant_id, user_id?, connection_id?}")
    try:
        order = DisconnectRequest(
            tenant_id=TenantId(_id(document, "tenant_id", required=True) or ""),
            user_id=_optional(UserId, _id(document, "user_id")),
            connection_id=_optional(ConnectionId, _id(document, "connection_id")),
        )
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
