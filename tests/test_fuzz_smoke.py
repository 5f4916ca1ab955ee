"""The fuzz harnesses replay the committed corpus and their own mutations, so they can't rot.

No atheris here: each harness's `test_one_input` and custom mutator run as
plain functions (the fuzzing itself is `tools/fuzz/run.py`, a separate CI step).
Every input that once crashed a target is in the corpus, so this also keeps
those bugs fixed.
"""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "tools" / "fuzz"
TARGETS = ("client_frame", "publish_api", "auth", "redis_codec")
MUTATIONS_PER_INPUT = 3
MAX_LEN = 16384


def harness(target: str) -> ModuleType:
    """The harness module of `target`, imported with its directory first, as when it fuzzes."""
    sys.path.insert(0, str(FUZZ))
    try:
        return importlib.import_module(f"fuzz_{target}")
    finally:
        sys.path.remove(str(FUZZ))


def corpus(target: str) -> list[Path]:
    return sorted(path for path in (FUZZ / "corpus" / target).iterdir() if path.is_file())


def flips(seed: int) -> Callable[[bytes, int], bytes]:
    """A stand-in for libFuzzer's byte mutation: flip, insert, erase or truncate, seeded."""
    rng = random.Random(seed)

    def mutate(data: bytes, max_size: int) -> bytes:
        buffer = bytearray(data)
        operation = rng.randrange(4)
        if operation == 0 and buffer:
            buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
        elif operation == 1:
            buffer.insert(rng.randint(0, len(buffer)), rng.randrange(256))
        elif operation == 2 and buffer:
            del buffer[rng.randrange(len(buffer))]
        else:
            del buffer[rng.randint(0, len(buffer)) :]
        return bytes(buffer[:max_size])

    return mutate


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_has_a_seeded_corpus(target: str) -> None:
    assert len(corpus(target)) >= 15


@pytest.mark.parametrize("target", TARGETS)
def test_every_committed_input_is_handled_as_expected(target: str) -> None:
    module = harness(target)

    for path in corpus(target):
        module.test_one_input(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_the_structure_aware_mutations_are_handled_as_expected(target: str) -> None:
    module = harness(target)

    for index, path in enumerate(corpus(target)):
        for seed in range(MUTATIONS_PER_INPUT):
            mutated = module.mutate(path.read_bytes(), MAX_LEN, index * 100 + seed, flips(seed))

            assert isinstance(mutated, bytes)
            assert len(mutated) <= MAX_LEN
            module.test_one_input(mutated)


def test_replay_runs_inputs_through_a_target_without_atheris() -> None:
    inputs = [str(path) for path in corpus("publish_api")[:3]]

    completed = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), "--replay", "publish_api", *inputs],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "every input handled as expected" in completed.stdout


def test_the_runner_refuses_an_unknown_target() -> None:
    completed = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), "no_such_target"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2
    assert "unknown targets" in completed.stderr
