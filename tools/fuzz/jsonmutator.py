"""Structure-aware mutation of JSON documents: the shapes, types and depths a hostile body has.

Parses the input, changes one value somewhere in the tree (a string at a
boundary, another type, an array nested around the parser's depth limit or far
past it, a key dropped, added, renamed or repeated), and writes JSON again.
Input that does not parse gets libFuzzer's byte-level mutation (`raw_mutate`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from protomutator import BOUNDARY_STRINGS, RAW_SHARE, RawMutate, mutate_string

DEPTHS: Final = (2, 31, 32, 33, 100, 1000, 3000)
"""Nesting depths tried: either side of the API's limit (32) and past the recursion limit."""

NOT_BASE64: Final = ("!!!", "aGVsbG8===", "aGVs bG8=", "a", "aGV=sbG8", "++--", "=", "====", "\n")

_NESTED: Final = re.compile(r'"@nested:(\d+):([\[{])@"')

_NUMBERS: Final = (0, -1, 1, 2**53, 2**63, 2**64, -(2**63) - 1, 1.5, 1e308, -0.0)


def mutate_json(
    data: bytes,
    max_size: int,
    rng: random.Random,
    raw_mutate: RawMutate,
    keys: Sequence[str],
    numbers: Sequence[float] = (),
) -> bytes:
    """Mutate `data` as a JSON document.

    `keys` are names worth adding or renaming to; `numbers` are values at the
    target's own boundaries, tried besides the usual ones.
    """
    if rng.random() < RAW_SHARE:
        return raw_mutate(data, max_size)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return raw_mutate(data, max_size)
    for _ in range(rng.choice((1, 1, 2))):
        document = mutate_value(document, rng, raw_mutate, Vocabulary(keys, (*_NUMBERS, *numbers)))
    text = dump(document, rng)
    return text if len(text) <= max_size else raw_mutate(data, max_size)


def dump(document: Any, rng: random.Random) -> bytes:
    """Serialise `document`, sometimes with a repeated key or unusual spacing.

    Deep nesting is spliced in as text (see `nested`): encoding it would hit the
    encoder's own recursion limit.
    """
    text = json.dumps(document, ensure_ascii=rng.random() < 0.5, indent=rng.choice((None, 0, 2)))
    if isinstance(document, dict) and document and rng.random() < 0.05:
        key, value = rng.choice(list(document.items()))
        text = text[:-1].rstrip() + f", {json.dumps(key)}: {json.dumps(value)}" + "}"
    text = _NESTED.sub(_expand_nested, text)
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Vocabulary:
    """Keys and numbers worth trying in one target's documents."""

    keys: Sequence[str]
    numbers: Sequence[float]


def mutate_value(value: Any, rng: random.Random, raw_mutate: RawMutate, words: Vocabulary) -> Any:
    """Return `value` with one thing changed at a random place in its tree."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        operation = rng.random()
        if operation < 0.6:
            value[key] = mutate_value(value[key], rng, raw_mutate, words)
        elif operation < 0.75:
            del value[key]
        elif operation < 0.9:
            value[rng.choice(words.keys)] = value.pop(key)
        else:
            value[rng.choice(words.keys)] = replacement(rng, raw_mutate, words)
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        value[index] = mutate_value(value[index], rng, raw_mutate, words)
        return value
    if isinstance(value, str) and rng.random() < 0.5:
        return mutate_string(value, rng, raw_mutate)
    return replacement(rng, raw_mutate, words)


def replacement(rng: random.Random, raw_mutate: RawMutate, words: Vocabulary) -> Any:
    """A fresh value of any JSON type, biased towards boundaries."""
    choice = rng.randrange(8)
    if choice == 0:
        return rng.choice(BOUNDARY_STRINGS)
    if choice == 1:
        return rng.choice(NOT_BASE64)
    if choice == 2:
        return rng.choice(words.numbers)
    if choice == 3:
        return rng.choice((None, True, False, [], {}))
    if choice == 4:
        return nested(rng.choice(DEPTHS), rng.choice(("[", "{")))
    if choice == 5:
        return mutate_string("", rng, raw_mutate)
    if choice == 6:
        return [rng.choice(BOUNDARY_STRINGS) for _ in range(rng.choice((1, 100, 101)))]
    return {"": rng.choice(BOUNDARY_STRINGS)}


def nested(depth: int, bracket: str) -> str:
    """A placeholder that `dump` replaces with arrays or objects nested `depth` deep."""
    return f"@nested:{depth}:{bracket}@"


def _expand_nested(match: re.Match[str]) -> str:
    depth, bracket = int(match[1]), match[2]
    if bracket == "[":
        return "[" * depth + "0" + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth
