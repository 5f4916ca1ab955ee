"""Child processes of a test: their output read back from files, and stopping them for sure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from pm_testkit.waiting import WAIT_SECS, block_until, wait_until

__all__ = ["ProcessOutput", "child_pids", "stop_process", "terminate"]

_SHOWN_LINES: Final = 60


class ProcessOutput:
    """What a child process wrote to one stream, read back from the file the stream goes to.

    The child writes straight into the file (no pipe to drain, no reader
    thread), so the file is also there to look into after a failure. Reading
    is incremental; a line counts once its newline is written, or when the
    process has exited. Safe to read from several threads.
    """

    def __init__(self, path: Path, name: str, exited: Callable[[], bool]) -> None:
        self.path = path
        self.name = name
        self._exited = exited
        self._lines: list[str] = []
        self._partial = b""
        self._offset = 0
        self._lock = threading.Lock()

    @property
    def lines(self) -> list[str]:
        """Every line so far, without line ends."""
        exited = self._exited()  # before reading: whatever it wrote is in the file then
        with self._lock:
            with contextlib.suppress(FileNotFoundError), self.path.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
                self._offset += len(data)
                *complete, self._partial = (self._partial + data).split(b"\n")
                self._lines.extend(_decode(line) for line in complete)
            tail = [_decode(self._partial)] if exited and self._partial else []
            return self._lines + tail

    @property
    def text(self) -> str:
        """Every line so far, joined."""
        return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        """How many lines so far match the regular expression `pattern`."""
        compiled = re.compile(pattern)
        return sum(compiled.search(line) is not None for line in self.lines)

    def wait_for(
        self, pattern: str, *, count: int = 1, after: int = 0, within: float = WAIT_SECS
    ) -> re.Match[str]:
        """The `count`-th line after the first `after` that matches `pattern` (a regex).

        Blocks up to `within` seconds; raises `WaitTimeout` with the last lines
        written when the deadline passes or the process exits first.
        """
        found: list[re.Match[str]] = []
        block_until(
            lambda: self._search(pattern, count, after, found),
            within=within,
            what=lambda: self._failure(pattern, count),
        )
        return self._found(found, pattern, count)

    async def wait(
        self, pattern: str, *, count: int = 1, after: int = 0, within: float = WAIT_SECS
    ) -> re.Match[str]:
        """`wait_for` without blocking the event loop."""
        found: list[re.Match[str]] = []
        await wait_until(
            lambda: self._search(pattern, count, after, found),
            within=within,
            what=lambda: self._failure(pattern, count),
        )
        return self._found(found, pattern, count)

    def _search(self, pattern: str, count: int, after: int, found: list[re.Match[str]]) -> bool:
        exited = self._exited()
        compiled = re.compile(pattern)
        matches = [m for line in self.lines[after:] if (m := compiled.search(line)) is not None]
        if len(matches) >= count:
            found.append(matches[count - 1])
            return True
        return exited  # nothing more will come

    def _found(self, found: list[re.Match[str]], pattern: str, count: int) -> re.Match[str]:
        if not found:  # the process exited first
            raise AssertionError(self._failure(pattern, count))
        return found[0]

    def _failure(self, pattern: str, count: int) -> str:
        state = "exited" if self._exited() else "still running"
        shown = "\n".join(self.lines[-_SHOWN_LINES:])
        return f"{self.name} ({state}) wrote no {count} lines matching {pattern!r}:\n{shown}"


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


def child_pids(pid: int) -> set[int]:
    """The live children of `pid` (Linux /proc); empty when it has none or is gone."""
    children: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.update(int(c) for c in (task / "children").read_text().split())
    return children


def terminate(
    process: subprocess.Popen[bytes],
    *,
    signals: Iterable[signal.Signals] = (signal.SIGTERM,),
    within: float = WAIT_SECS,
) -> int | None:
    """Stop `process` on any path; its exit code, or None when it had to be killed.

    Sends each of `signals` in turn, waiting up to `within` seconds after
    each; then SIGKILLs its children (a supervisor's workers, which have
    process groups of their own) while they are still its children, and it.
    """
    for signum in signals:
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(within)
    if process.poll() is not None:
        return process.returncode
    for pid in child_pids(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()
    return None


async def stop_process(process: asyncio.subprocess.Process, *, within: float = 15.0) -> int | None:
    """SIGTERM an asyncio child and wait up to `within` seconds, then SIGKILL it.

    Returns its exit code, or None when it had to be killed.
    """
    if process.returncode is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return None
