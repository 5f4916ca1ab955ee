"""Running one fuzz harness under atheris: coverage of our code, libFuzzer's loop, its arguments.

A harness module defines `test_one_input(data: bytes)` (and maybe a custom
mutator) without importing atheris, so pytest can replay the corpus through
it; only its `main()` calls `fuzz` here, which imports atheris.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable
from typing import Final, NoReturn

from protomutator import RawMutate

INSTRUMENTED: Final = (
    "pm_ws",
    "pm_auth",
    "pm_server",
    "pm_proto",
    "jwt",
    "json",
    "base64",
    "google.protobuf.json_format",
)
"""Modules whose Python code gives coverage feedback; everything else runs uninstrumented."""

CustomMutator = Callable[[bytes, int, int], bytes]
"""libFuzzer's `LLVMFuzzerCustomMutator(data, max_size, seed)`."""


def instrument(prefixes: tuple[str, ...] = INSTRUMENTED) -> int:
    """Add coverage instrumentation to every loaded function of the modules under `prefixes`.

    Like `atheris.instrument_all` but only for the code under test, so start-up
    takes a second rather than instrumenting aiohttp and the standard library.
    Returns how many functions were instrumented.
    """
    import atheris

    count = 0
    for candidate in gc.get_objects():
        if not isinstance(candidate, types.FunctionType):
            continue
        module = getattr(candidate, "__module__", None) or ""
        if not any(module == p or module.startswith(p + ".") for p in prefixes):
            continue
        atheris.instrument_func(candidate)
        count += 1
    return count


def guarded(mutator: Callable[[bytes, int, int, RawMutate], bytes]) -> CustomMutator:
    """Bind `mutator` to libFuzzer's byte mutation, falling back to it if `mutator` fails.

    A bug in a mutator must not be reported as a crash of the code under test;
    the smoke test runs the mutators unguarded, so such bugs still surface.
    """
    import atheris

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        mutate: RawMutate = atheris.Mutate
        try:
            return mutator(data, max_size, seed, mutate)
        except Exception:
            return mutate(data, max_size)

    return custom_mutator


def fuzz(
    test_one_input: Callable[[bytes], None],
    mutator: Callable[[bytes, int, int, RawMutate], bytes] | None = None,
) -> NoReturn:
    """Fuzz `test_one_input` with libFuzzer, taking its flags and corpus dirs from `sys.argv`.

    Any exception `test_one_input` lets out (including a failed assertion) is a
    crash: libFuzzer writes the input to `-artifact_prefix` and exits non-zero.
    Given files instead of directories, it only runs those inputs (a reproduction).
    """
    import atheris

    atheris.enabled_hooks.add("RegEx")
    atheris.enabled_hooks.add("str")
    count = instrument()
    print(f"INFO: instrumented {count} functions of {', '.join(INSTRUMENTED)}", file=sys.stderr)
    if mutator is None:
        atheris.Setup(sys.argv, test_one_input)
    else:
        atheris.Setup(sys.argv, test_one_input, custom_mutator=guarded(mutator))
    atheris.Fuzz()
    raise SystemExit(0)
