"""Client frames decoded and validated into typed requests (SPEC §2 "Validation")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pm_proto as pb
from google.protobuf.message import DecodeError
from pm_proto.contract import (
    COMMAND_NAME_PATTERN,
    MAX_ID_CHARS,
    MAX_IDS_PER_LIST,
    MAX_REQUEST_ID_CHARS,
    MAX_TOKEN_BYTES,
    is_valid_command_name,
    is_valid_id,
    is_valid_request_id,
)

from pm_ws.events import StreamPosition
from pm_ws.exceptions import ProtocolError


@dataclass(frozen=True, slots=True)
class SubscriptionIds:
    """Ids named by one Subscribe or Unsubscribe, duplicates removed, order kept."""

    project_ids: tuple[str, ...] = ()
    sprint_ids: tuple[str, ...] = ()
    work_item_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.project_ids) + len(self.sprint_ids) + len(self.work_item_ids)


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """Add subscriptions; with `resume_from`, replay what was missed after that position."""

    request_id: str
    ids: SubscriptionIds
    resume_from: StreamPosition | None


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """Drop subscriptions; ids not held are ignored."""

    request_id: str
    ids: SubscriptionIds


@dataclass(frozen=True, slots=True)
class PingRequest:
    """An application-level ping, answered with a Pong that echoes the client's time."""

    request_id: str
    client_time_ms: int


@dataclass(frozen=True, slots=True)
class RefreshTokenRequest:
    """A newer token for the same user and tenant, to outlive the current one."""

    request_id: str
    token: str


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A named command for a handler the embedding application registered."""

    request_id: str
    name: str
    body: bytes


ClientRequest = (
    SubscribeRequest | UnsubscribeRequest | PingRequest | RefreshTokenRequest | CommandRequest
)


def check_id(value: str, field: str, *, request_id: str = "") -> str:
    """`value` when it is a valid opaque id (`pm_proto.contract.is_valid_id`).

    Raises:
        ProtocolError: INVALID_MESSAGE naming `field`.
    """
    if not is_valid_id(value):
        raise ProtocolError(
            f"{field} must be 1 to {MAX_ID_CHARS} characters without control characters",
            field=field,
            request_id=request_id,
        )
    return value


def _ids(values: Sequence[str], field: str, request_id: str) -> tuple[str, ...]:
    if len(values) > MAX_IDS_PER_LIST:
        raise ProtocolError(
            f"{field} holds more than {MAX_IDS_PER_LIST} ids", field=field, request_id=request_id
        )
    return tuple(dict.fromkeys(check_id(v, field, request_id=request_id) for v in values))


def _subscription_ids(message: pb.Subscribe | pb.Unsubscribe, request_id: str) -> SubscriptionIds:
    ids = SubscriptionIds(
        project_ids=_ids(message.project_ids, "project_ids", request_id),
        sprint_ids=_ids(message.sprint_ids, "sprint_ids", request_id),
        work_item_ids=_ids(message.work_item_ids, "work_item_ids", request_id),
    )
    if not len(ids):
        raise ProtocolError(
            "name at least one project, sprint or work item id",
            field="project_ids",
            request_id=request_id,
        )
    return ids


def decode_request_id(data: bytes) -> str:
    """The request_id of a frame, or empty when it doesn't decode.

    For answering a frame that is refused before it is processed (rate limit).
    """
    try:
        request_id = pb.ClientMessage.FromString(data).request_id
    except (DecodeError, ValueError):
        return ""
    return request_id if is_valid_request_id(request_id) else ""


def decode_client_message(data: bytes) -> ClientRequest:
    """Decode one binary frame into a validated request (SPEC §2 "Validation").

    Any bytes are safe to pass: the only exception raised is `ProtocolError`, with
    code DECODE_ERROR for bytes that are not a `ClientMessage` and INVALID_MESSAGE
    (with `field`) for a message that breaks a rule. Frame size is bounded before
    this is called.
    """
    if not data:
        raise ProtocolError("empty frame")
    try:
        message = pb.ClientMessage.FromString(data)
    except (DecodeError, ValueError) as exc:
        raise ProtocolError("frame is not a pm.v1.ClientMessage", code="DECODE_ERROR") from exc
    request_id = message.request_id
    if not is_valid_request_id(request_id):
        raise ProtocolError(
            f"request_id must be at most {MAX_REQUEST_ID_CHARS} characters without control "
            "characters",
            field="request_id",
        )
    kind = message.WhichOneof("payload")
    if kind == "subscribe":
        resume_from = None
        if message.subscribe.HasField("resume_from"):
            position = message.subscribe.resume_from
            check_id(position.epoch, "resume_from.epoch", request_id=request_id)
            resume_from = StreamPosition(epoch=position.epoch, seq=position.seq)
        return SubscribeRequest(
            request_id, _subscription_ids(message.subscribe, request_id), resume_from
        )
    if kind == "unsubscribe":
        return UnsubscribeRequest(request_id, _subscription_ids(message.unsubscribe, request_id))
    if kind == "ping":
        return PingRequest(request_id, message.ping.client_time_ms)
    if kind == "refresh_token":
        token = message.refresh_token.token
        if not token or len(token.encode()) > MAX_TOKEN_BYTES:
            raise ProtocolError(
                f"token must be 1 to {MAX_TOKEN_BYTES} bytes",
                field="refresh_token.token",
                request_id=request_id,
            )
        return RefreshTokenRequest(request_id, token)
    if kind == "command":
        name = message.command.name
        if not is_valid_command_name(name):
            raise ProtocolError(
                f"command name must match {COMMAND_NAME_PATTERN}",
                field="command.name",
                request_id=request_id,
            )
        return CommandRequest(request_id, name, message.command.body)
    raise ProtocolError("message has no payload", field="payload", request_id=request_id)
