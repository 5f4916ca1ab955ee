"""`pm-server --workers N`: N processes on one port, supervised and restarted by the first."""

from __future__ import annotations

import asyncio
import enum
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from pm_server.app import serve
from pm_server.config import Settings
from pm_server.logs import configure_logging

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds on a monotonic scale, e.g. `time.monotonic`."""

# A worker that could not even be spawned counts as one that exited with this code.
_SPAWN_FAILED = 1


@dataclass(frozen=True)
class RestartPolicy:
    """How soon a dead worker is restarted, and when the supervisor stops trying.

    The defaults restart after 0.5 s, 1 s, 2 s, ... up to 30 s between attempts;
    a worker that stayed up 60 s starts the sequence over; 5 deaths of one slot
    within 60 s are a crash loop (every start failing, e.g. the port taken by
    another program), on which the supervisor gives up.

    Attributes:
        first_delay_secs: Wait before the first restart of a slot, and again
            after a worker that had been stable.
        max_delay_secs: Cap on the wait, which doubles with each death in a row.
        stable_after_secs: A worker that ran at least this long before dying
            resets its slot's delay to `first_delay_secs`.
        crash_loop_deaths: This many deaths of one slot within
            `crash_loop_window_secs` make the supervisor give up; 1 gives up on
            the first death.
        crash_loop_window_secs: The window of `crash_loop_deaths`.

    Raises:
        ValueError: A delay or window that is not positive, a first delay above
            the cap, or fewer than one death.
    """

    first_delay_secs: float = 0.5
    max_delay_secs: float = 30.0
    stable_after_secs: float = 60.0
    crash_loop_deaths: int = 5
    crash_loop_window_secs: float = 60.0

    def __post_init__(self) -> None:
        durations = (
            self.first_delay_secs,
            self.max_delay_secs,
            self.stable_after_secs,
            self.crash_loop_window_secs,
        )
        if min(durations) <= 0:
            raise ValueError(f"delays and windows must be positive: {self}")
        if self.first_delay_secs > self.max_delay_secs:
            raise ValueError(f"first_delay_secs exceeds max_delay_secs: {self}")
        if self.crash_loop_deaths < 1:
            raise ValueError(f"crash_loop_deaths must be at least 1: {self}")


@dataclass(frozen=True)
class Restart:
    """Start the slot's worker again after `delay_secs`."""

    delay_secs: float


@dataclass(frozen=True)
class GiveUp:
    """The slot crash-loops: `deaths` deaths within `window_secs`; stop everything."""

    deaths: int
    window_secs: float


class RestartBackoff:
    """The restart timing of one worker slot: exponential backoff and crash-loop detection.

    Pure bookkeeping on an injected clock; it starts and kills nothing. Memory
    is bounded by `policy.crash_loop_deaths` timestamps.
    """

    def __init__(self, policy: RestartPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._next_delay = policy.first_delay_secs
        self._started_at: float | None = None
        self._deaths: deque[float] = deque()

    def started(self) -> None:
        """Note that the slot's worker started now (its uptime counts from here)."""
        self._started_at = self._clock()

    def died(self) -> Restart | GiveUp:
        """Note that the slot's worker died now, and say what to do about it.

        Returns:
            `GiveUp` when this death is the `crash_loop_deaths`-th within
            `crash_loop_window_secs` (inclusive), else `Restart` with a delay of
            `first_delay_secs` doubled for each earlier death in a row, capped
            at `max_delay_secs`; a worker that had stayed up
            `stable_after_secs` resets the doubling first.
        """
        now = self._clock()
        policy = self._policy
        if self._started_at is not None and now - self._started_at >= policy.stable_after_secs:
            self._next_delay = policy.first_delay_secs
        self._started_at = None
        self._deaths.append(now)
        while now - self._deaths[0] > policy.crash_loop_window_secs:
            self._deaths.popleft()
        if len(self._deaths) >= policy.crash_loop_deaths:
            return GiveUp(deaths=len(self._deaths), window_secs=policy.crash_loop_window_secs)
        delay = self._next_delay
        self._next_delay = min(delay * 2, policy.max_delay_secs)
        return Restart(delay_secs=delay)


class Phase(enum.Enum):
    """Where the supervisor is: serving (restarting the dead) or stopping for good."""

    SERVING = "serving"
    DRAINING = "draining"  # a signal arrived: the workers drain, nothing restarts
    GIVING_UP = "giving up"  # a slot crash-looped: the others drain, exit 1


class SignalVerdict(enum.Enum):
    """What a SIGTERM or SIGINT to the supervisor means."""

    DRAIN = "drain"  # pass it on to every running worker, once
    KILL = "kill"  # kill every worker and exit at once


class Supervision:
    """The supervisor's decisions for `workers` slots, without processes or signals.

    Each slot runs one worker process at a time. The I/O loop (`supervise`)
    starts what `starts_due` names, reports every exit with `exited` and every
    signal with `signalled`, sleeps at most `wait_secs`, and stops once `done`.
    Transitions are checked: reporting the exit of a slot that is not running
    raises `ValueError`.
    """

    def __init__(
        self, workers: int, policy: RestartPolicy | None = None, clock: Clock = time.monotonic
    ) -> None:
        if workers < 1:
            raise ValueError(f"need at least one worker, got {workers}")
        policy = policy or RestartPolicy()
        self._clock = clock
        self._backoffs = [RestartBackoff(policy, clock) for _ in range(workers)]
        now = clock()
        self._restart_at: dict[int, float] = dict.fromkeys(range(workers), now)
        self._running: set[int] = set()
        self._phase = Phase.SERVING
        self._failed = False

    @property
    def phase(self) -> Phase:
        """SERVING until the first signal (DRAINING) or a crash loop (GIVING_UP); never back."""
        return self._phase

    @property
    def running(self) -> frozenset[int]:
        """The slots with a worker process that has not been reported dead."""
        return frozenset(self._running)

    @property
    def done(self) -> bool:
        """True once stopping and no worker is left: the supervisor may return."""
        return self._phase is not Phase.SERVING and not self._running

    @property
    def exit_code(self) -> int:
        """1 after giving up or when a worker exited non-zero while stopping, else 0.

        A slot that was waiting for its restart when the signal came is not
        counted: its death was already reported when it happened.
        """
        return 1 if self._failed else 0

    def starts_due(self) -> list[int]:
        """The slots whose (re)start time has come, in order; they count as running from now."""
        now = self._clock()
        due = sorted(slot for slot, at in self._restart_at.items() if at <= now)
        for slot in due:
            del self._restart_at[slot]
            self._running.add(slot)
            self._backoffs[slot].started()
        return due

    def wait_secs(self) -> float | None:
        """Seconds until the next restart is due (0 if overdue); None when none is pending."""
        if not self._restart_at:
            return None
        return max(0.0, min(self._restart_at.values()) - self._clock())

    def exited(self, slot: int, exitcode: int) -> Restart | GiveUp | None:
        """Record that `slot`'s worker exited with `exitcode` (negative: killed by that signal).

        Returns:
            While serving, what the slot's backoff decided: `Restart` (its
            restart is now pending) or `GiveUp` (phase GIVING_UP: every other
            worker must be told to drain, pending restarts are dropped). None
            while stopping: the exit was asked for; a non-zero one makes the
            exit code 1.

        Raises:
            ValueError: `slot` had no running worker.
        """
        if slot not in self._running:
            raise ValueError(f"worker slot {slot} is not running")
        self._running.remove(slot)
        if self._phase is not Phase.SERVING:
            if exitcode != 0:
                self._failed = True
            return None
        verdict = self._backoffs[slot].died()
        if isinstance(verdict, GiveUp):
            self._stop(Phase.GIVING_UP)
            self._failed = True
        else:
            self._restart_at[slot] = self._clock() + verdict.delay_secs
        return verdict

    def signalled(self) -> SignalVerdict:
        """Record a SIGTERM or SIGINT: the first drains (no restart after it), any later one kills.

        After giving up, the workers have already been told to drain, so a
        signal then kills at once too.
        """
        if self._phase is Phase.SERVING:
            self._stop(Phase.DRAINING)
            return SignalVerdict.DRAIN
        return SignalVerdict.KILL

    def _stop(self, phase: Phase) -> None:
        self._phase = phase
        self._restart_at.clear()


def describe_exit(exitcode: int) -> str:
    """`exited with code 1`, or `died with signal SIGKILL` for a negative (multiprocessing) code."""
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = str(-exitcode)
    return f"died with signal {name}"


def supervise(
    settings: Settings, *, policy: RestartPolicy | None = None, clock: Clock = time.monotonic
) -> int:
    """Run `settings.workers` server processes sharing the port (SO_REUSEPORT) until stopped.

    The kernel spreads new connections across the workers; they share nothing
    but the broker, which is why configuration refuses N > 1 with `memory://`.
    Each worker is logged as `started worker pm-server-<slot> (pid <pid>)`.

    A worker that exits without being asked to (any exit code, or killed by a
    signal) is restarted in its slot while the others keep serving, after a
    per-slot exponential backoff (`policy`, default `RestartPolicy()`: 0.5 s
    doubling to 30 s, reset after 60 s up); each death is one ERROR line such
    as `worker pm-server-1 (pid 42) died with signal SIGKILL; restarting in
    0.5 s`. The dead worker's connections are cut (their clients reconnect and
    resume); while its slot is empty the port is served by the others. When one
    slot dies `crash_loop_deaths` times within `crash_loop_window_secs` (5 in
    60 s), e.g. every start failing on a port another program holds, the
    supervisor gives up: it logs why, tells the other workers to drain, and
    returns 1.

    SIGTERM or SIGINT is passed on to every running worker once; each drains as a
    single server does, and nothing is restarted after it. A second signal (or
    any signal after giving up) kills every worker and exits the process at once
    with 128 + the signal number.

    Not covered: a worker that hangs without exiting is not detected (probe
    `/live` for that). If the supervisor itself is killed (SIGKILL), its workers
    keep running and hold the port. Under systemd use `KillMode=mixed` (SIGTERM
    to the supervisor alone, SIGKILL to the whole cgroup at the end): with the
    default, every worker gets SIGTERM twice, directly and forwarded, and the
    second makes it exit without draining.

    Args:
        settings: The validated settings each worker serves with.
        policy: Restart timing and crash-loop limits.
        clock: Monotonic seconds, for the backoff.

    Returns:
        0 when every worker running at the signal drained and exited 0; 1 when
        one of them did not, or after giving up on a crash loop.
    """
    context = multiprocessing.get_context("spawn")
    supervision = Supervision(settings.workers, policy, clock)
    processes: dict[int, BaseProcess] = {}
    # Signal handlers only wake the loop (the C-level handler writes the signal
    # number to this pipe); all decisions are taken in the loop, between steps.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    previous_wakeup = signal.set_wakeup_fd(wake_write)
    previous_handlers = {
        signum: signal.signal(signum, _wake_only) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while not supervision.done:
            for slot in supervision.starts_due():
                _start(context, settings, slot, processes, supervision)
            by_sentinel = {process.sentinel: slot for slot, process in processes.items()}
            ready = multiprocessing.connection.wait(
                [wake_read, *by_sentinel], supervision.wait_secs()
            )
            # Signals first: a worker that exits together with a signal to stop
            # is not restarted.
            if wake_read in ready:
                for signum in _read_signals(wake_read):
                    _on_signal(signum, supervision, processes)
            for sentinel in ready:
                if isinstance(sentinel, int) and sentinel in by_sentinel:
                    _on_exit(by_sentinel[sentinel], supervision, processes)
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous_handlers.items():
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(signum, handler)
        os.close(wake_read)
        os.close(wake_write)
    logger.info("all workers stopped: exit code %d", supervision.exit_code)
    return supervision.exit_code


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """Python-level handler of the supervisor's signals: the wake-up pipe carries them."""


def _read_signals(fd: int) -> list[int]:
    received: list[int] = []
    while True:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return received
        if not data:
            return received
        received.extend(data)


def _start(
    context: multiprocessing.context.SpawnContext,
    settings: Settings,
    slot: int,
    processes: dict[int, BaseProcess],
    supervision: Supervision,
) -> None:
    process = context.Process(target=_worker, args=(settings, slot), name=f"pm-server-{slot}")
    try:
        process.start()
    except OSError as exc:
        logger.error("cannot start worker %s: %s", process.name, exc)
        _report_death(process.name, None, _SPAWN_FAILED, supervision.exited(slot, _SPAWN_FAILED))
        if supervision.phase is Phase.GIVING_UP:
            _forward(signal.SIGTERM, processes)
        return
    processes[slot] = process
    logger.info("started worker %s (pid %s)", process.name, process.pid)


def _on_signal(signum: int, supervision: Supervision, processes: dict[int, BaseProcess]) -> None:
    name = signal.Signals(signum).name
    if supervision.signalled() is SignalVerdict.KILL:
        logger.warning("received %s again: killing %d workers", name, len(processes))
        for process in processes.values():
            process.kill()
        os._exit(128 + signum)
    logger.info("received %s: draining %d workers", name, len(processes))
    _forward(signum, processes)


def _on_exit(slot: int, supervision: Supervision, processes: dict[int, BaseProcess]) -> None:
    process = processes.pop(slot)
    process.join()
    exitcode = process.exitcode
    assert exitcode is not None  # joined
    pid = process.pid
    process.close()
    verdict = supervision.exited(slot, exitcode)
    _report_death(process.name, pid, exitcode, verdict)
    if isinstance(verdict, GiveUp):
        _forward(signal.SIGTERM, processes)


def _report_death(
    name: str, pid: int | None, exitcode: int, verdict: Restart | GiveUp | None
) -> None:
    who = f"worker {name}" if pid is None else f"worker {name} (pid {pid})"
    how = describe_exit(exitcode)
    if verdict is None:
        logger.info("%s %s", who, how)
    elif isinstance(verdict, Restart):
        logger.error("%s %s; restarting in %g s", who, how, verdict.delay_secs)
    else:
        logger.critical(
            "%s %s: %d deaths within %g s, a crash loop; giving up: "
            "draining the other workers, then exiting 1",
            who,
            how,
            verdict.deaths,
            verdict.window_secs,
        )


def _forward(signum: int, processes: dict[int, BaseProcess]) -> None:
    # Every process here is started and not yet reaped, so its pid is still its own.
    for process in processes.values():
        if process.pid is not None:
            os.kill(process.pid, signum)


def _worker(settings: Settings, slot: int) -> None:
    # Own process group: a terminal's Ctrl-C reaches the workers only through the
    # supervisor, once, so it is not mistaken for a second signal.
    os.setpgrp()
    configure_logging(
        level=settings.log_level, fmt=settings.log_format, colored=settings.log_colored
    )
    raise SystemExit(asyncio.run(serve(settings, reuse_port=True)))
