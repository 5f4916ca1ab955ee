"""Run the fuzz targets, each in its own process, on a throwaway copy of the committed corpus.

    uv run --group fuzz python tools/fuzz/run.py [--seconds 60] [--merge] [TARGET ...] [-- FLAG ...]
    uv run python tools/fuzz/run.py --replay TARGET FILE ...

Each target fuzzes for `--seconds` (libFuzzer's `-max_total_time`) starting from
a temporary copy of `tools/fuzz/corpus/<target>/`, so a run never changes the
tree. A target that crashes (an unexpected exception, a failed check, a
timeout, running out of memory) has its input copied to
`tools/fuzz/crashes/<target>/`, and the run says how to reproduce it and exits 1.
`--merge` (for long runs) adds what the run found that reaches new code to the
committed corpus. `--replay` runs inputs through a target's check without
atheris or libFuzzer, for a plain Python traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]
CORPUS: Final = HERE / "corpus"
CRASHES: Final = HERE / "crashes"
TARGETS: Final = ("client_frame", "publish_api", "auth", "redis_codec")

MAX_LEN: Final = 16384
"""Largest input tried: past every limit the targets check (8 KiB tokens, 1000-deep JSON)."""

INPUT_TIMEOUT_SECS: Final = 25
"""One input taking longer is a crash (`timeout-*`): the parsers are meant to be linear."""

STARTUP_GRACE_SECS: Final = 120
"""Time a target may take beyond `--seconds` (imports, instrumentation, corpus) before a kill."""

_CRASH_PREFIXES: Final = ("crash-", "timeout-", "oom-", "leak-")
# libFuzzer's status lines, in one process and with -fork=N.
_PROGRESS: Final = re.compile(r"^#(\d+)(?:\s+\w+\s+|: )cov: (\d+) ft: (\d+) corp: (\d+)")
_FORK_SPEED: Final = re.compile(r" exec/s (\d+) ")
_STAT: Final = re.compile(r"^stat::(\w+):\s+(\d+)")


@dataclass(frozen=True)
class Outcome:
    """What one target's run did."""

    target: str
    returncode: int
    seconds: float
    executions: int
    execs_per_sec: int
    coverage: int
    features: int
    corpus: int
    crashes: tuple[Path, ...]
    log: str

    @property
    def crashed(self) -> bool:
        return bool(self.crashes) or self.returncode != 0


def fuzz(target: str, seconds: int, flags: list[str], *, verbose: bool, merge: bool) -> Outcome:
    """Fuzz `target` for `seconds` in a temporary directory; copy out any crashing input.

    With `merge`, the inputs found that reach code the committed corpus does
    not are added to it (libFuzzer's `-merge=1`).
    """
    with tempfile.TemporaryDirectory(prefix=f"pm-fuzz-{target}-") as scratch:
        work = Path(scratch)
        corpus = work / "corpus"
        artifacts = work / "artifacts"
        shutil.copytree(CORPUS / target, corpus)
        artifacts.mkdir()
        command = [
            sys.executable,
            str(HERE / f"fuzz_{target}.py"),
            str(corpus),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={artifacts}/",
            f"-timeout={INPUT_TIMEOUT_SECS}",
            f"-max_len={MAX_LEN}",
            "-print_final_stats=1",
            *flags,
        ]
        dictionary = HERE / "dicts" / f"{target}.dict"
        if dictionary.exists():
            command.append(f"-dict={dictionary}")
        started = time.monotonic()
        try:
            completed = subprocess.run(
                command,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=seconds + STARTUP_GRACE_SECS,
                check=False,
            )
            returncode, log = completed.returncode, completed.stdout
        except subprocess.TimeoutExpired as expired:
            output = expired.output
            text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
            returncode, log = -9, text + f"\nkilled: still running {seconds + STARTUP_GRACE_SECS} s"
        elapsed = time.monotonic() - started
        if verbose:
            print(log)
        if merge and returncode == 0:
            _merge(target, corpus, work)
        kept = []
        for artifact in sorted(artifacts.iterdir()):
            if artifact.name.startswith(_CRASH_PREFIXES):
                destination = CRASHES / target / artifact.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(artifact, destination)
                kept.append(destination)
    return _outcome(target, returncode, elapsed, tuple(kept), log)


def _merge(target: str, found: Path, work: Path) -> None:
    committed = CORPUS / target
    before = sum(1 for _ in committed.iterdir())
    command = [sys.executable, str(HERE / f"fuzz_{target}.py"), "-merge=1", str(committed)]
    subprocess.run(
        [*command, str(found)],
        cwd=work,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=STARTUP_GRACE_SECS * 5,
        check=True,
    )
    added = sum(1 for _ in committed.iterdir()) - before
    print(f"{target}: merged {added} new inputs into {committed.relative_to(ROOT)}", flush=True)


def _outcome(
    target: str, returncode: int, elapsed: float, crashes: tuple[Path, ...], log: str
) -> Outcome:
    stats: dict[str, int] = {}
    executions = speed = coverage = features = corpus = 0
    for line in log.splitlines():
        if progress := _PROGRESS.match(line):
            executions, coverage, features, corpus = (int(progress[i]) for i in (1, 2, 3, 4))
            if fork_speed := _FORK_SPEED.search(line):
                speed = int(fork_speed[1])
        elif stat := _STAT.match(line):
            stats[stat[1]] = int(stat[2])
    return Outcome(
        target=target,
        returncode=returncode,
        seconds=elapsed,
        executions=stats.get("number_of_executed_units", executions),
        execs_per_sec=stats.get("average_exec_per_sec", speed),
        coverage=coverage,
        features=features,
        corpus=corpus,
        crashes=crashes,
        log=log,
    )


def report(outcome: Outcome) -> None:
    """One line per target; for a crash, the end of its log and how to reproduce it."""
    summary = (
        f"{outcome.target}: {outcome.executions} inputs in {outcome.seconds:.0f} s "
        f"({outcome.execs_per_sec}/s), coverage {outcome.coverage} edges, "
        f"{outcome.features} features, corpus {outcome.corpus}"
    )
    if not outcome.crashed:
        print(f"{summary}; no crash", flush=True)
        return
    print(f"{summary}; CRASH (exit {outcome.returncode})", flush=True)
    print("\n".join(f"    {line}" for line in outcome.log.splitlines()[-60:]))
    if not outcome.crashes:
        print("  the fuzzer failed without a crashing input: see its log above")
        return
    for path in outcome.crashes:
        relative = path.relative_to(ROOT)
        print(f"  input kept in {relative}; reproduce with")
        print(f"    uv run python tools/fuzz/run.py --replay {outcome.target} {relative}")
        print(f"    uv run --group fuzz python tools/fuzz/fuzz_{outcome.target}.py {relative}")
    print(
        f"  once fixed, add the input to tools/fuzz/corpus/{outcome.target}/ "
        "so that every later run tries it first"
    )


def replay(target: str, files: list[str]) -> int:
    """Run `files` through `target`'s check in this process: a plain traceback, no atheris."""
    sys.path.insert(0, str(HERE))
    harness = importlib.import_module(f"fuzz_{target}")
    for name in files:
        print(f"{target}: {name}", flush=True)
        harness.test_one_input(Path(name).read_bytes())
    print(f"{target}: every input handled as expected")
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    flags: list[str] = []
    if "--" in arguments:
        at = arguments.index("--")
        arguments, flags = arguments[:at], arguments[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--verbose", action="store_true", help="print libFuzzer's whole output")
    parser.add_argument(
        "--merge", action="store_true", help="add inputs reaching new code to the committed corpus"
    )
    parser.add_argument("--replay", nargs="+", metavar=("TARGET", "FILE"), help="no fuzzing")
    options = parser.parse_args(arguments)
    if options.replay:
        target, *files = options.replay
        if target not in TARGETS or not files:
            parser.error(f"--replay needs a target of {', '.join(TARGETS)} and input files")
        return replay(target, files)
    unknown = sorted(set(options.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}: choose from {', '.join(TARGETS)}")
    chosen = options.targets or list(TARGETS)
    started = time.monotonic()
    outcomes = []
    for target in chosen:
        print(f"{target}: fuzzing for {options.seconds} s", flush=True)
        outcome = fuzz(target, options.seconds, flags, verbose=options.verbose, merge=options.merge)
        report(outcome)
        outcomes.append(outcome)
    crashed = [outcome.target for outcome in outcomes if outcome.crashed]
    total = sum(outcome.executions for outcome in outcomes)
    elapsed = time.monotonic() - started
    if crashed:
        print(f"fuzzing: crashes in {', '.join(crashed)} (inputs under tools/fuzz/crashes/)")
        return 1
    print(f"fuzzing: {len(outcomes)} targets, {total} inputs in {elapsed:.0f} s, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
