"""Structure-aware mutation of protobuf messages, for libFuzzer's custom-mutator hook.

`atheris-libprotobuf-mutator` would do this natively, but it only ships as a
source distribution that builds libprotobuf-mutator, abseil and protobuf with
Bazel from GitHub archives, which neither our machines nor CI can reach. This
is the part of it we need, in Python: parse the input as the target message,
change one thing the way a hostile client would (a string at a length
boundary or with control characters, a list past 100 ids, another oneof case,
an integer at its type's edge), serialise again. Inputs that do not parse, and
a share of those that do, get libFuzzer's byte-level mutation instead
(`raw_mutate`), so the fuzzer still explores the decoder's error paths.

Nothing here imports atheris: the fuzz harnesses pass `atheris.Mutate` in,
and the smoke test passes a plain function, so this runs under pytest too.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

RawMutate = Callable[[bytes, int], bytes]
"""libFuzzer's mutation of a byte string (`atheris.Mutate(data, max_size)`)."""

RAW_SHARE: Final = 0.2
"""Share of parseable inputs that still get a byte-level mutation."""

MAX_REPEATED: Final = 100
"""The wire's per-list limit; lists are grown to it and one past it."""

BOUNDARY_STRINGS: Final[tuple[str, ...]] = (
    "",
    "a",
    "p1",
    " ",
    "a" * 64,
    "a" * 65,
    "a" * 128,
    "a" * 129,
    "é" * 128,
    "😀" * 128,
    "😀" * 129,
    "\x00",
    "a\x1fb",
    "\t",
    "\n",
    "\x7f",
    "\x85",
    "\x9f",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\U0010ffff",
    "pm.v1",
    "pm.bearer.",
    "a.b_c9",
    "A",
    "9a",
    "a" * 8192,
    "a" * 8193,
)

SPLICE_CHARACTERS: Final = (
    "\x00", "\x1f", "\x7f", "\x9f", " ", "\u00a0", "\u2028", "é", "😀", ".", "_", "{", "}",
)  # fmt: skip

BOUNDARY_BYTES: Final[tuple[bytes, ...]] = (b"", b"\x00", b"\xff" * 16, b"{}", b"a" * 1024)

_INT_BOUNDARIES: Final = (
    0,
    1,
    -1,
    2**7,
    2**31 - 1,
    -(2**31),
    2**32 - 1,
    2**53,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
)
_INT_RANGES: Final = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS: Final = (0.0, -0.0, 1.0, -1.0, 1e308, -1e308, float("inf"), float("-inf"), float("nan"))


def mutate_serialized(
    data: bytes,
    max_size: int,
    seed: int,
    message_type: type[Message],
    raw_mutate: RawMutate,
) -> bytes:
    """Mutate `data` as a serialised `message_type`; the libFuzzer custom-mutator contract.

    Deterministic for a given `seed`. Falls back to `raw_mutate` when `data`
    does not parse, for a share (`RAW_SHARE`) of the inputs that do, and when
    the mutated message would exceed `max_size`.
    """
    rng = random.Random(seed)
    if rng.random() < RAW_SHARE:
        return raw_mutate(data, max_size)
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return raw_mutate(data, max_size)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mutate_message(message, rng, raw_mutate)
    mutated = message.SerializeToString()
    return mutated if len(mutated) <= max_size else raw_mutate(data, max_size)


def mutate_message(message: Message, rng: random.Random, raw_mutate: RawMutate) -> None:
    """Change one thing in `message` in place: a field, a list, or which oneof case is set.

    Descends into set sub-messages most of the time, so deep fields are reached.
    """
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]  # upb's has the same API
    oneofs = [oneof for oneof in descriptor.oneofs if message.WhichOneof(oneof.name) is not None]
    if oneofs and rng.random() < 0.15:
        oneof = rng.choice(oneofs)
        if rng.random() < 0.2:
            message.ClearField(oneof.name)  # an empty oneof is invalid on the wire
            return
        field = rng.choice(oneof.fields)
        _set_fresh(message, field, rng, raw_mutate)
        return
    field = rng.choice(descriptor.fields)
    if field.is_repeated:
        _mutate_repeated(message, field, rng, raw_mutate)
    elif field.message_type is not None:
        if message.HasField(field.name) and rng.random() < 0.7:
            mutate_message(getattr(message, field.name), rng, raw_mutate)
        elif message.HasField(field.name) and rng.random() < 0.5:
            message.ClearField(field.name)
        else:
            _set_fresh(message, field, rng, raw_mutate)
    else:
        setattr(message, field.name, _scalar(field, getattr(message, field.name), rng, raw_mutate))


def _set_fresh(
    message: Message, field: FieldDescriptor, rng: random.Random, raw_mutate: RawMutate
) -> None:
    if field.message_type is not None:
        child = getattr(message, field.name)
        child.SetInParent()
        if child.DESCRIPTOR.fields and rng.random() < 0.8:
            mutate_message(child, rng, raw_mutate)
    else:
        setattr(message, field.name, _scalar(field, None, rng, raw_mutate))


def _mutate_repeated(
    message: Message, field: FieldDescriptor, rng: random.Random, raw_mutate: RawMutate
) -> None:
    values: Any = getattr(message, field.name)
    operation = rng.randrange(6)
    if operation == 0 or not values:
        _append(values, field, rng, raw_mutate)
    elif operation == 1:
        del values[rng.randrange(len(values))]
    elif operation == 2:
        del values[:]
    elif operation == 3:
        # Grow to the wire's limit, or one past it.
        target = MAX_REPEATED + rng.choice((0, 1))
        while len(values) < target:
            _append(values, field, rng, raw_mutate)
    elif operation == 4:
        index = rng.randrange(len(values))
        if field.message_type is not None:
            values.add().CopyFrom(values[index])
        else:
            values.append(values[index])
    else:
        index = rng.randrange(len(values))
        if field.message_type is not None:
            mutate_message(values[index], rng, raw_mutate)
        else:
            values[index] = _scalar(field, values[index], rng, raw_mutate)


def _append(values: Any, field: FieldDescriptor, rng: random.Random, raw_mutate: RawMutate) -> None:
    if field.message_type is not None:
        mutate_message(values.add(), rng, raw_mutate)
    else:
        values.append(_scalar(field, None, rng, raw_mutate))


def _scalar(field: FieldDescriptor, current: Any, rng: random.Random, raw_mutate: RawMutate) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return mutate_string(current or "", rng, raw_mutate)
    if kind == FieldDescriptor.TYPE_BYTES:
        if current and rng.random() < 0.6:
            return raw_mutate(current, max(64, 2 * len(current)))
        return rng.choice(BOUNDARY_BYTES)
    if kind == FieldDescriptor.TYPE_BOOL:
        return not current
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        numbers = [value.number for value in field.enum_type.values]
        return rng.choice([*numbers, max(numbers) + 1])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(_FLOATS)
    low, high = _INT_RANGES[kind]
    choice = rng.random()
    if choice < 0.5:
        candidates = [value for value in _INT_BOUNDARIES if low <= value <= high]
        return rng.choice([*candidates, low, high])
    if choice < 0.8 and current is not None:
        return min(high, max(low, current + rng.choice((-1, 1, -1000, 1000))))
    return rng.randint(low, high)


def mutate_string(current: str, rng: random.Random, raw_mutate: RawMutate) -> str:
    """A hostile variant of `current`: a boundary value, a spliced character, or mutated UTF-8.

    Adds no lone surrogate (so a protobuf string field still serialises).
    """
    choice = rng.random()
    if choice < 0.35:
        return rng.choice(BOUNDARY_STRINGS)
    if choice < 0.55:
        insert = rng.choice(SPLICE_CHARACTERS)
        at = rng.randint(0, len(current))
        return current[:at] + insert + current[at:]
    # JSON can carry lone surrogates: keep their bytes, the decoding replaces them.
    encoded = current.encode("utf-8", "surrogatepass")
    return raw_mutate(encoded, max(64, 2 * len(encoded))).decode("utf-8", "replace")
