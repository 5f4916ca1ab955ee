"""Encoding server messages once, as ready-to-write WebSocket frames."""

from __future__ import annotations

import struct
from typing import Final

import pm_proto as pb

from pm_ws.events import Event, EventDraft, StreamPosition

_BINARY_FIN: Final = 0x82
_PING_FRAME: Final = b"\x89\x00"


def frame_binary(payload: bytes) -> bytes:
    """Wrap a payload in an unmasked, final, binary WebSocket frame (RFC 6455 §5.2).

    Server-to-client frames are never masked, so the bytes are the same for every
    recipient: fanout frames an event once and writes the same object to each
    connection. Compression is never applied (SPEC §4: it defeats encode-once).
    """
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _BINARY_FIN, length)
    elif length < 65_536:
        header = struct.pack("!BBH", _BINARY_FIN, 126, length)
    else:
        header = struct.pack("!BBQ", _BINARY_FIN, 127, length)
    return header + payload


def close_frame(code: int, reason: str) -> bytes:
    """A WebSocket close frame, for peers that are not owed a closing handshake."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return struct.pack("!BB", 0x88, len(payload)) + payload


def ping_frame() -> bytes:
    """An empty WebSocket ping frame, as the heartbeat sends it."""
    return _PING_FRAME


def encode(message: pb.ServerMessage) -> bytes:
    """Serialise and frame one server message."""
    return frame_binary(message.SerializeToString())


def position_message(position: StreamPosition) -> pb.StreamPosition:
    """The wire form of a stream position."""
    return pb.StreamPosition(epoch=position.epoch, seq=position.seq)


def event_message(event: Event | EventDraft) -> pb.Event:
    """The wire form of an event; a draft has no position yet, so none is set."""
    message = pb.Event(
        event_id=event.event_id,
        type=event.type,
        scope=pb.Scope(
            project_id=event.scope.project_id,
            sprint_id=event.scope.sprint_id,
            work_item_id=event.scope.work_item_id,
        ),
        occurred_at_ms=event.occurred_at_ms,
        actor_user_id=event.actor_user_id,
        payload=event.payload,
    )
    if isinstance(event, Event):
        message.position.CopyFrom(position_message(event.position))
    return message


def event_frame(event: Event) -> bytes:
    """The framed `ServerMessage` carrying an event: built once per event, for every recipient."""
    return encode(pb.ServerMessage(event=event_message(event)))


def error_frame(request_id: str, code: str, message: str, field: str | None = None) -> bytes:
    """A framed `Error` answering `request_id`. `message` must already be client-safe."""
    error = pb.Error(code=code, message=message)
    if field is not None:
        error.field = field
    return encode(pb.ServerMessage(request_id=request_id, error=error))
