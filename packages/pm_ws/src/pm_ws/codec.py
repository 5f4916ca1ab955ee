"""Engine values to and from pm.v1 protobuf, and server messages as ready-to-write frames.

Every conversion between the engine's events and the wire's lives here:
fanout, replays, the Redis broker's stored bytes. An event is encoded once,
never once per recipient; an event that arrives as bytes (from Redis) is
framed from those bytes without being encoded again.
"""

from __future__ import annotations

import struct
from typing import Final

import pm_proto as pb
from google.protobuf.message import DecodeError

from pm_ws.events import Event, EventDraft, Scope, StreamPosition, TenantId

_BINARY_FIN: Final = 0x82
_PING_FRAME: Final = b"\x89\x00"
# The key of `ServerMessage.event`: its field number, wire type 2 (length-delimited).
_EVENT_KEY: Final = bytes([pb.ServerMessage.DESCRIPTOR.fields_by_name["event"].number << 3 | 2])


def frame_binary(payload: bytes) -> bytes:
    """Wrap a payload in an unmasked, final, binary WebSocket frame (RFC 6455 §5.2).

    Server-to-client frames are never masked, so the bytes are the same for every
    recipient: fanout frames an event once and writes the same object to each
    connection. Compression is never applied (SPEC §4: it defeats encode-once).
    """
    return _binary_header(len(payload)) + payload


def _binary_header(length: int) -> bytes:
    if length < 126:
        return struct.pack("!BB", _BINARY_FIN, length)
    if length < 65_536:
        return struct.pack("!BBH", _BINARY_FIN, 126, length)
    return struct.pack("!BBQ", _BINARY_FIN, 127, length)


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


def event_bytes(event: Event | EventDraft) -> bytes:
    """The serialised `pm.v1.Event`; a draft's has no position yet."""
    return event_message(event).SerializeToString()


def event_from_bytes(tenant_id: TenantId, data: bytes, published_at_ns: int) -> Event:
    """Parse a serialised `pm.v1.Event` that has a position, keeping `data` as its encoding.

    Raises:
        ValueError: The bytes are not such an event.
    """
    try:
        wire = pb.Event.FromString(data)
    except DecodeError as exc:
        raise ValueError("undecodable event") from exc
    if not wire.HasField("position") or not wire.position.epoch:
        raise ValueError("event without a position")
    return Event(
        tenant_id=tenant_id,
        event_id=wire.event_id,
        type=wire.type,
        scope=Scope(
            project_id=wire.scope.project_id,
            sprint_id=wire.scope.sprint_id,
            work_item_id=wire.scope.work_item_id,
        ),
        payload=wire.payload,
        actor_user_id=wire.actor_user_id,
        occurred_at_ms=wire.occurred_at_ms,
        position=StreamPosition(wire.position.epoch, wire.position.seq),
        published_at_ns=published_at_ns,
        encoded=data,
    )


def event_frame(event: Event) -> bytes:
    """The framed `ServerMessage` carrying an event: built once per event, for every recipient.

    The message is written field by field (protobuf's encoding of a
    `ServerMessage` holding only `event`): the event's own bytes when the
    broker kept them (`Event.encoded`), else its fields encoded now.
    """
    body = event.encoded or event_bytes(event)
    key = _EVENT_KEY + _varint(len(body))
    return _binary_header(len(key) + len(body)) + key + body


def _varint(value: int) -> bytes:
    # Most events are under 16 KiB: one or two bytes, without the loop.
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def error_frame(request_id: str, code: str, message: str, field: str | None = None) -> bytes:
    """A framed `Error` answering `request_id`. `message` must already be client-safe."""
    error = pb.Error(code=code, message=message)
    if field is not None:
        error.field = field
    return encode(pb.ServerMessage(request_id=request_id, error=error))
