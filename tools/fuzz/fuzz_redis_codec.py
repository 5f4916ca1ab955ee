#!/usr/bin/env python3
"""Fuzz target `redis_codec`: bytes read from Redis, through the Redis broker's decoder.

The first byte picks what the rest is (mod 2): 0 a message received on a
tenant's channel (`decode_channel_message`), 1 a history stream entry's flat
field list (`decode_history_entry`), its fields separated by `SEPARATOR`.

`RedisBroker` catches exactly `ValueError` around both calls (it skips the
message or entry, logs a warning, and lets the gap logic recover), so that is
the expected refusal. Anything else escapes into the broker's listener or
history read, and is a crash. What decodes must be well formed: an event of
the channel's tenant with a position, or a disconnect order that encodes back
to itself.

    uv run --group fuzz python tools/fuzz/fuzz_redis_codec.py CORPUS_DIR [libFuzzer flags]
"""

from __future__ import annotations

import random

import pm_proto as pb
from jsonmutator import mutate_json
from pm_ws import DisconnectRequest, Event, TenantId
from pm_ws.brokers._redis_codec import (
    DISCONNECT_MESSAGE,
    EVENT_MESSAGE,
    decode_channel_message,
    decode_history_entry,
    encode_disconnect,
)
from protomutator import BOUNDARY_BYTES, RawMutate, mutate_serialized

CHANNEL, HISTORY = 0, 1
FORMS = 2
SEPARATOR = b"\xff\xfe"
TENANT = TenantId("tenant-1")
EVENT_HEADER = 9
"""Type byte and 8-byte publish time before an event on a channel."""
TIMES = (b"0", b"-1", b"1700000000000000000", b"9" * 20, b"9" * 5000, b" 12 ", b"1_0", b"", b"x")


def test_one_input(data: bytes) -> None:
    form, rest = (data[0] % FORMS, data[1:]) if data else (CHANNEL, b"")
    if form == CHANNEL:
        check_channel_message(rest)
    else:
        check_history_entry(rest.split(SEPARATOR))


def check_channel_message(data: bytes) -> None:
    try:
        decoded = decode_channel_message(TENANT, data)
    except ValueError:
        return
    if isinstance(decoded, DisconnectRequest):
        assert data[:1] == DISCONNECT_MESSAGE
        assert decoded.tenant_id == TENANT
        assert decode_channel_message(TENANT, encode_disconnect(decoded)) == decoded
    else:
        assert data[:1] == EVENT_MESSAGE
        check_event(decoded)
        assert decoded.published_at_ns == int.from_bytes(data[1:EVENT_HEADER], "big")


def check_history_entry(fields: list[bytes]) -> None:
    try:
        event = decode_history_entry(TENANT, fields)
    except ValueError:
        return
    check_event(event)


def check_event(event: Event) -> None:
    assert isinstance(event, Event), event
    assert event.tenant_id == TENANT
    assert event.position.epoch
    assert 0 <= event.position.seq < 2**64


def mutate(data: bytes, max_size: int, seed: int, raw_mutate: RawMutate) -> bytes:
    """Mutate the event protobuf, the disconnect JSON, the publish time or a history field."""
    rng = random.Random(seed)
    form, rest = (data[0], data[1:]) if data else (CHANNEL, b"")
    room = max(0, max_size - 1)
    if form % FORMS == CHANNEL:
        rest = mutate_channel_message(rest, room, seed, rng, raw_mutate)
    else:
        rest = mutate_history_entry(rest, room, seed, rng, raw_mutate)
    return bytes([form]) + rest[:room]


def mutate_channel_message(
    data: bytes, max_size: int, seed: int, rng: random.Random, raw_mutate: RawMutate
) -> bytes:
    kind = data[:1]
    if kind == EVENT_MESSAGE and len(data) >= EVENT_HEADER and rng.random() < 0.8:
        event = mutate_serialized(data[EVENT_HEADER:], max_size, seed, pb.Event, raw_mutate)
        return data[:EVENT_HEADER] + event
    if kind == DISCONNECT_MESSAGE and rng.random() < 0.8:
        keys = ("user_id", "connection_id", "tenant_id")
        return kind + mutate_json(data[1:], max_size, rng, raw_mutate, keys)
    return raw_mutate(data, max_size)


def mutate_history_entry(
    data: bytes, max_size: int, seed: int, rng: random.Random, raw_mutate: RawMutate
) -> bytes:
    fields = data.split(SEPARATOR)
    operation = rng.randrange(5)
    if operation == 0:
        fields.append(rng.choice((b"event", b"published_at_ns", *BOUNDARY_BYTES)))
    elif operation == 1 and fields:
        del fields[rng.randrange(len(fields))]
    elif operation == 2 and b"published_at_ns" in fields[:-1]:
        fields[fields.index(b"published_at_ns") + 1] = rng.choice(TIMES)
    elif operation == 3 and b"event" in fields[:-1]:
        at = fields.index(b"event") + 1
        fields[at] = mutate_serialized(fields[at], max_size, seed, pb.Event, raw_mutate)
    else:
        return raw_mutate(data, max_size)
    return SEPARATOR.join(fields)


def main() -> None:
    from libfuzzer import fuzz

    fuzz(test_one_input, mutate)


if __name__ == "__main__":
    main()
