"""The supervisor's restart timing and decisions, on a manual clock (the processes: tests/redis)."""

from __future__ import annotations

import dataclasses
import signal

import pytest
from pm_server.workers import (
    GiveUp,
    Phase,
    Restart,
    RestartBackoff,
    RestartPolicy,
    SignalVerdict,
    Supervision,
    describe_exit,
)

POLICY = RestartPolicy()


class ManualClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def crash(backoff: RestartBackoff, clock: ManualClock, *, after: float) -> Restart | GiveUp:
    """Start the slot's worker, let it run `after` seconds, and report its death."""
    backoff.started()
    clock.advance(after)
    return backoff.died()


# RestartBackoff: one slot's timing


def test_default_policy_is_half_a_second_doubling_to_30s_and_5_deaths_in_60s() -> None:
    assert dataclasses.asdict(RestartPolicy()) == {
        "first_delay_secs": 0.5,
        "max_delay_secs": 30.0,
        "stable_after_secs": 60.0,
        "crash_loop_deaths": 5,
        "crash_loop_window_secs": 60.0,
    }


def test_delay_doubles_with_each_death_in_a_row_up_to_the_cap(clock: ManualClock) -> None:
    # Deaths 61 s apart never make a crash loop, and each worker lived 1 s: not stable.
    backoff = RestartBackoff(POLICY, clock)
    delays = []
    for _ in range(9):
        verdict = crash(backoff, clock, after=1)
        assert isinstance(verdict, Restart)
        delays.append(verdict.delay_secs)
        clock.advance(60)

    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_worker_that_stayed_up_long_enough_restarts_after_the_first_delay_again(
    clock: ManualClock,
) -> None:
    backoff = RestartBackoff(POLICY, clock)
    assert crash(backoff, clock, after=1) == Restart(0.5)
    assert crash(backoff, clock, after=1) == Restart(1)
    assert crash(backoff, clock, after=59.9) == Restart(2)  # not quite stable

    assert crash(backoff, clock, after=60) == Restart(0.5)
    assert crash(backoff, clock, after=1) == Restart(1)


def test_fifth_death_within_the_window_gives_up(clock: ManualClock) -> None:
    backoff = RestartBackoff(POLICY, clock)
    verdicts = [crash(backoff, clock, after=0.1) for _ in range(5)]

    assert verdicts[:4] == [Restart(0.5), Restart(1), Restart(2), Restart(4)]
    assert verdicts[4] == GiveUp(deaths=5, window_secs=60)


@pytest.mark.parametrize(
    ("last_gap", "verdict"), [(15, GiveUp(deaths=5, window_secs=60)), (15.1, Restart(8))]
)
def test_the_window_includes_a_death_exactly_60s_before(
    clock: ManualClock, last_gap: float, verdict: Restart | GiveUp
) -> None:
    backoff = RestartBackoff(POLICY, clock)
    for _ in range(4):
        assert isinstance(crash(backoff, clock, after=15), Restart)

    # The first death was 15 s in; this one comes 60 (or 60.1) s after it.
    assert crash(backoff, clock, after=last_gap) == verdict


def test_deaths_spread_wider_than_the_window_never_give_up(clock: ManualClock) -> None:
    backoff = RestartBackoff(POLICY, clock)
    for _ in range(50):
        # 4 deaths within any 60 s at most: every 15.1 s.
        assert isinstance(crash(backoff, clock, after=15.1), Restart)


def test_one_death_allowed_gives_up_on_the_first() -> None:
    backoff = RestartBackoff(RestartPolicy(crash_loop_deaths=1), ManualClock())

    assert backoff.died() == GiveUp(deaths=1, window_secs=60)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"first_delay_secs": 0}, "must be positive"),
        ({"max_delay_secs": -1}, "must be positive"),
        ({"first_delay_secs": 31}, "exceeds max_delay_secs"),
        ({"stable_after_secs": 0}, "must be positive"),
        ({"crash_loop_deaths": 0}, "at least 1"),
        ({"crash_loop_window_secs": 0}, "must be positive"),
    ],
)
def test_policy_refuses_values_that_cannot_work(bad: dict[str, float], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RestartPolicy(**bad)  # type: ignore[arg-type]


# Supervision: every slot's decisions together


def test_every_slot_starts_at_once_and_nothing_is_pending(clock: ManualClock) -> None:
    supervision = Supervision(3, POLICY, clock)

    assert supervision.starts_due() == [0, 1, 2]
    assert supervision.running == {0, 1, 2}
    assert supervision.wait_secs() is None
    assert supervision.starts_due() == []
    assert not supervision.done


def test_a_dead_worker_is_restarted_after_its_delay_while_the_others_keep_running(
    clock: ManualClock,
) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()
    clock.advance(5)

    assert supervision.exited(1, -signal.SIGKILL) == Restart(0.5)
    assert supervision.running == {0}
    assert supervision.wait_secs() == 0.5
    clock.advance(0.4)
    assert supervision.starts_due() == []
    clock.advance(0.1)
    assert supervision.starts_due() == [1]
    assert supervision.running == {0, 1}
    assert supervision.phase is Phase.SERVING


@pytest.mark.parametrize("exitcode", [0, 1, 2, -signal.SIGTERM, -signal.SIGSEGV])
def test_any_exit_while_serving_is_a_death(clock: ManualClock, exitcode: int) -> None:
    supervision = Supervision(1, POLICY, clock)
    supervision.starts_due()

    assert supervision.exited(0, exitcode) == Restart(0.5)


def test_slots_back_off_independently(clock: ManualClock) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()
    assert supervision.exited(0, 1) == Restart(0.5)
    clock.advance(0.5)
    assert supervision.starts_due() == [0]
    assert supervision.exited(0, 1) == Restart(1)

    assert supervision.exited(1, 1) == Restart(0.5)
    assert supervision.wait_secs() == 0.5  # slot 1's, the sooner of the two


def test_first_signal_drains_and_drops_pending_restarts(clock: ManualClock) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()
    supervision.exited(0, -signal.SIGKILL)

    assert supervision.signalled() is SignalVerdict.DRAIN
    assert supervision.phase is Phase.DRAINING
    assert supervision.wait_secs() is None
    clock.advance(60)
    assert supervision.starts_due() == []
    assert not supervision.done  # slot 1 still drains

    assert supervision.exited(1, 0) is None  # asked for: not restarted
    assert supervision.done
    assert supervision.exit_code == 0  # slot 0's earlier death was reported then


def test_a_worker_failing_its_drain_makes_the_exit_code_1(clock: ManualClock) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()
    supervision.signalled()

    supervision.exited(0, 0)
    supervision.exited(1, -signal.SIGKILL)

    assert supervision.done
    assert supervision.exit_code == 1


def test_second_signal_kills(clock: ManualClock) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()

    assert supervision.signalled() is SignalVerdict.DRAIN
    assert supervision.signalled() is SignalVerdict.KILL


def test_a_crash_loop_gives_up_drains_the_others_and_exits_1(clock: ManualClock) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()
    verdicts: list[Restart | GiveUp | None] = []
    for _ in range(5):
        clock.advance(0.2)  # each start fails fast
        verdicts.append(supervision.exited(0, 1))
        wait = supervision.wait_secs()
        if wait is not None:
            clock.advance(wait)
            assert supervision.starts_due() == [0]

    assert verdicts[-1] == GiveUp(deaths=5, window_secs=60)
    assert supervision.phase is Phase.GIVING_UP
    assert supervision.running == {1}  # to be told to drain
    assert supervision.wait_secs() is None
    assert supervision.exited(1, 0) is None
    assert supervision.done
    assert supervision.exit_code == 1


def test_a_signal_after_giving_up_kills(clock: ManualClock) -> None:
    supervision = Supervision(1, RestartPolicy(crash_loop_deaths=1), clock)
    supervision.starts_due()
    supervision.exited(0, 1)

    assert supervision.signalled() is SignalVerdict.KILL


def test_reporting_the_exit_of_a_slot_that_is_not_running_is_refused(
    clock: ManualClock,
) -> None:
    supervision = Supervision(2, POLICY, clock)
    supervision.starts_due()
    supervision.exited(0, 1)

    with pytest.raises(ValueError, match="slot 0 is not running"):
        supervision.exited(0, 1)


def test_zero_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Supervision(0)


@pytest.mark.parametrize(
    ("exitcode", "text"),
    [
        (0, "exited with code 0"),
        (1, "exited with code 1"),
        (-signal.SIGKILL, "died with signal SIGKILL"),
        (-signal.SIGSEGV, "died with signal SIGSEGV"),
        (-99, "died with signal 99"),
    ],
)
def test_exit_is_described_as_a_code_or_a_signal(exitcode: int, text: str) -> None:
    assert describe_exit(exitcode) == text
