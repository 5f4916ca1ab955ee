"""Redis key names, and the envelopes of what RedisBroker stores and sends on tenant channels.

An event travels as its serialised `pm.v1.Event` (`pm_ws.codec` converts):
the publish script appends the serialised position to the draft's bytes
(concatenated protobuf messages parse as one merged message), stores the
result in history and sends it on the channel after a small header. Those
stored bytes are what fanout frames, unchanged.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Final

from pm_ws.brokers.broker import DisconnectRequest
from pm_ws.codec import event_from_bytes
from pm_ws.events import ConnectionId, Event, TenantId, UserId

# Every channel message starts with one of these bytes.
EVENT_MESSAGE: Final = b"E"
DISCONNECT_MESSAGE: Final = b"D"
_TIME_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class TenantKeys:
    """The Redis names of one tenant's stream.

    The tenant id appears base64url-encoded inside a hash tag, so ids holding
    ':' or braces can neither collide with other tenants' keys nor move keys
    to another Redis Cluster slot: all of a tenant's keys share one slot.

    `meta` is a hash {epoch, seq} with no expiry: losing it restarts the
    numbering with a new epoch. `history` is a stream whose entry ids are
    `<seq>-0`; `event_ids` maps the event ids in history to their seq; both
    expire after the history TTL without publishes. `channel` carries live
    traffic.
    """

    meta: bytes
    history: bytes
    event_ids: bytes
    channel: bytes

    @classmethod
    def of(cls, prefix: str, tenant_id: TenantId) -> TenantKeys:
        """Name the keys of `tenant_id` under `prefix` (which holds no braces)."""
        tag = base64.urlsafe_b64encode(tenant_id.encode()).rstrip(b"=")
        base = prefix.encode() + b":{" + tag + b"}:"
        return cls(
            meta=base + b"meta",
            history=base + b"history",
            event_ids=base + b"ids",
            channel=base + b"events",
        )


def event_header(published_at_ns: int) -> bytes:
    """The start of an event's channel message: type byte and publish time."""
    return EVENT_MESSAGE + published_at_ns.to_bytes(_TIME_BYTES, "big")


def decode_history_entry(tenant_id: TenantId, fields: list[bytes]) -> Event:
    """Parse a history stream entry's flat field list (`event`, `published_at_ns`, ...).

    Raises:
        ValueError: The entry lacks those fields or they do not parse.
    """
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    try:
        data = values[b"event"]
        published_at_ns = int(values[b"published_at_ns"])
    except KeyError as exc:
        raise ValueError("history entry without event or time") from exc
    return event_from_bytes(tenant_id, data, published_at_ns)


def encode_disconnect(request: DisconnectRequest) -> bytes:
    """A disconnect order as a channel message; the channel names the tenant."""
    body = {"user_id": request.user_id, "connection_id": request.connection_id}
    return DISCONNECT_MESSAGE + json.dumps(body, separators=(",", ":")).encode()


def decode_channel_message(tenant_id: TenantId, data: bytes) -> Event | DisconnectRequest:
    """Parse a message received on a tenant's channel.

    Raises:
        ValueError: An unknown message type or a malformed body.
    """
    kind = data[:1]
    if kind == EVENT_MESSAGE:
        header = 1 + _TIME_BYTES
        if len(data) < header:
            raise ValueError("truncated event message")
        return event_from_bytes(tenant_id, data[header:], int.from_bytes(data[1:header], "big"))
    if kind == DISCONNECT_MESSAGE:
        try:
            body = json.loads(data[1:])
        except (ValueError, RecursionError) as exc:
            # Deep nesting exhausts the parser's recursion; the broker only catches ValueError.
            raise ValueError("undecodable disconnect message") from exc
        if not isinstance(body, dict):
            raise ValueError("disconnect message is not an object")
        user_id, connection_id = body.get("user_id"), body.get("connection_id")
        if not all(v is None or isinstance(v, str) for v in (user_id, connection_id)):
            raise ValueError("disconnect message with non-string ids")
        return DisconnectRequest(
            tenant_id=tenant_id,
            user_id=None if user_id is None else UserId(user_id),
            connection_id=None if connection_id is None else ConnectionId(connection_id),
        )
    raise ValueError(f"unknown channel message type {kind!r}")
