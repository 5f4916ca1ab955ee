"""The servers under test as subprocesses, and what /proc says about their CPU and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pm_testkit import Credentials, ServerProcess, free_port, server_environment

ServerKind = Literal["pm-server", "hub"]
SERVER_KINDS: Final[tuple[ServerKind, ...]] = ("pm-server", "hub")

_HUB_SCRIPT: Final = Path(__file__).with_name("hub.py")
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
CPUS: Final = os.cpu_count() or 1
_QUIET_BUSY: Final = 0.25
_STOP_TIMEOUT_SECS: Final = 15.0


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process's CPU time and resident memory, and of the machine's CPUs."""

    at: float
    cpu_secs: float
    rss_bytes: int
    machine_busy_ticks: int
    machine_total_ticks: int

    @classmethod
    def read(cls, pid: int) -> ProcSample:
        """Read /proc/<pid>/stat (utime + stime), /proc/<pid>/status (VmRSS) and /proc/stat."""
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu_secs = (int(stat[11]) + int(stat[12])) / _CLK_TCK
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
        busy, total = machine_ticks()
        return cls(time.monotonic(), cpu_secs, rss, busy, total)

    def cpu_since(self, before: ProcSample) -> float:
        """CPU seconds the process used between `before` and this sample (10 ms resolution)."""
        return self.cpu_secs - before.cpu_secs

    def machine_busy_since(self, before: ProcSample) -> float | None:
        """Fraction of all CPUs busy between the samples (1.0 = every core)."""
        total = self.machine_total_ticks - before.machine_total_ticks
        if total <= 0:
            return None
        return (self.machine_busy_ticks - before.machine_busy_ticks) / total


def machine_ticks() -> tuple[int, int]:
    """Busy and total jiffies over all CPUs since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, sum(values[:8])


async def wait_for_quiet(max_wait_secs: float) -> float | None:
    """Wait until the machine is under 25 % busy over half a second, at most `max_wait_secs`.

    Other work on the machine (a test suite, a build) distorts throughput and latency; CPU
    per delivery suffers less. Returns the busy fraction last seen (0..1, all cores), or
    None without looking when `max_wait_secs` is 0.
    """
    if max_wait_secs <= 0:
        return None
    deadline = time.monotonic() + max_wait_secs
    while True:
        busy0, total0 = machine_ticks()
        await asyncio.sleep(0.5)
        busy1, total1 = machine_ticks()
        busy = (busy1 - busy0) / max(1, total1 - total0)
        if busy < _QUIET_BUSY or time.monotonic() >= deadline:
            return busy


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """pm-server settings the bench raises so that limits don't shape the figures."""

    max_connections: int = 20_000
    send_queue_size: int = 65_536


class RunningServer(ServerProcess):
    """One server under test: a process of the test kit, its kind, and its /proc readings."""

    def __init__(
        self, kind: ServerKind, log_dir: Path, credentials: Credentials, limits: ServerLimits
    ) -> None:
        port = free_port()
        super().__init__(
            log_dir,
            env=server_environment(_settings(kind, port, credentials, limits)),
            port=port,
            name=f"{kind}-{port}",
            command=_command(kind, port),
        )
        self.kind = kind

    @property
    def publish_url(self) -> str:
        """Where the publisher POSTs events."""
        path = "/api/v1/publish" if self.kind == "pm-server" else "/publish"
        return f"{self.url}{path}"

    def sample(self) -> ProcSample:
        """Read the process's CPU time and RSS now."""
        return ProcSample.read(self.pid)


def _command(kind: ServerKind, port: int) -> list[str]:
    if kind == "pm-server":
        ablation = os.environ.get("PM_BENCH_ABLATE")
        if ablation:
            return [sys.executable, str(Path(__file__).with_name("ablate.py")), ablation]
        return [sys.executable, "-m", "pm_server"]
    return [sys.executable, str(_HUB_SCRIPT), f"127.0.0.1:{port}"]


def _settings(
    kind: ServerKind, port: int, credentials: Credentials, limits: ServerLimits
) -> dict[str, str]:
    settings = {"JWT_SECRET": credentials.jwt_secret, "PUBLISH_API_KEY": credentials.publish_key}
    if kind == "pm-server":
        settings.update(
            BIND_ADDR=f"127.0.0.1:{port}",
            MAX_CONNECTIONS=str(limits.max_connections),
            MAX_CONNECTIONS_PER_TENANT=str(limits.max_connections),
            SEND_QUEUE_SIZE=str(limits.send_queue_size),
            LOG_LEVEL="warning",
        )
    return settings


@contextlib.asynccontextmanager
async def run_server(
    kind: ServerKind,
    credentials: Credentials,
    log_dir: Path,
    limits: ServerLimits | None = None,
) -> AsyncIterator[RunningServer]:
    """Start a fresh `kind` server on a free loopback port; SIGTERM it (then SIGKILL) on exit.

    Its stdout and stderr go to `<kind>-<port>.stdout` and `.stderr` in `log_dir`. Fails
    (`AssertionError`, with the log's end) when it exits during start-up or doesn't accept
    connections within 30 s.
    """
    server = RunningServer(kind, log_dir, credentials, limits or ServerLimits()).start()
    try:
        await server.wait_accepting()
        yield server
    finally:
        await asyncio.to_thread(server.close, grace=_STOP_TIMEOUT_SECS)


def py_spy_command() -> list[str]:
    """How to run py-spy: `$BENCH_PY_SPY`, else `py-spy` on PATH, else `uv tool run py-spy`.

    `uv tool run` installs py-spy into uv's tool cache, never into the project's lock file.
    """
    configured = os.environ.get("BENCH_PY_SPY")
    if configured:
        return shlex.split(configured)
    if shutil.which("py-spy"):
        return ["py-spy"]
    return ["uv", "tool", "run", "py-spy"]


@contextlib.asynccontextmanager
async def profiled(pid: int, output: Path, fmt: str = "raw") -> AsyncIterator[None]:
    """Sample `pid` with `py-spy record --nonblocking` while the block runs.

    `fmt` is py-spy's: `raw` (collapsed stacks, one line per stack with its sample count),
    `flamegraph` (SVG) or `speedscope` (JSON). py-spy writes `output` when it gets SIGINT at
    the end of the block. Sampling costs the server some CPU: figures from a profiled run are
    not comparable with an unprofiled one.
    """
    log = output.with_suffix(".py-spy.log")
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *py_spy_command(), "record", "--pid", str(pid), "--rate", "250", "--nonblocking",
            "--format", fmt, "--output", str(output),
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        await asyncio.sleep(1.0)  # py-spy attaches (and `uv tool run` resolves) before load starts
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
