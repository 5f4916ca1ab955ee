import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_client import (
    Backoff,
    Disposition,
    close_disposition,
    reconnect_delay,
    refusal_disposition,
)

backoffs = st.builds(
    Backoff,
    initial=st.floats(0, 5),
    max=st.floats(5, 60),
    multiplier=st.floats(1, 4),
    jitter=st.floats(0, 1),
)


@pytest.mark.parametrize("code", [1001, 1011, 4008, 4009, 4011, 1006])
def test_codes_the_spec_names_for_reconnecting_reconnect(code: int) -> None:
    assert close_disposition(code) is Disposition.RECONNECT


@pytest.mark.parametrize("code", [4003, 4010, 1008, 1009, 1002])
def test_terminal_codes_stop_the_client(code: int) -> None:
    assert close_disposition(code) is Disposition.TERMINAL


def test_token_expired_asks_for_a_new_token() -> None:
    assert close_disposition(4001) is Disposition.NEW_TOKEN


@pytest.mark.parametrize("code", [1000, 1012, 4000, 4999])
def test_unknown_or_normal_closes_from_the_server_reconnect(code: int) -> None:
    assert close_disposition(code) is Disposition.RECONNECT


@pytest.mark.parametrize(
    ("status", "disposition"),
    [
        (401, Disposition.NEW_TOKEN),
        (429, Disposition.RECONNECT),
        (503, Disposition.RECONNECT),
        (502, Disposition.RECONNECT),
        (403, Disposition.TERMINAL),
        (404, Disposition.TERMINAL),
        (400, Disposition.TERMINAL),
    ],
)
def test_upgrade_refusals_map_to_what_retrying_can_fix(
    status: int, disposition: Disposition
) -> None:
    assert refusal_disposition(status) is disposition


@given(backoffs, st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_a_delay_stays_within_the_jittered_ceiling(
    backoff: Backoff, attempt: int, rng: random.Random
) -> None:
    ceiling = backoff.ceiling(attempt)
    delay = backoff.delay(attempt, rng)
    assert ceiling <= backoff.max
    assert ceiling * (1 - backoff.jitter) - 1e-9 <= delay <= ceiling


@given(backoffs, st.integers(0, 200))
def test_the_ceiling_never_shrinks_as_attempts_fail(backoff: Backoff, attempt: int) -> None:
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1) + 1e-9


def test_the_ceiling_doubles_from_initial_up_to_max() -> None:
    backoff = Backoff(initial=0.2, max=1.0, jitter=0)
    assert [backoff.ceiling(n) for n in range(5)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay(2, random.Random(1)) == pytest.approx(0.8)


def test_the_same_seed_gives_the_same_delays() -> None:
    backoff = Backoff()
    first = [backoff.delay(n, random.Random(7)) for n in range(5)]
    assert first == [backoff.delay(n, random.Random(7)) for n in range(5)]


@given(backoffs, st.integers(0, 50), st.integers(0, 60_000), st.randoms(use_true_random=False))
def test_reconnect_waits_at_least_what_the_server_asked(
    backoff: Backoff, attempt: int, after_ms: int, rng: random.Random
) -> None:
    delay = reconnect_delay(backoff, attempt, rng, reconnect_after_ms=after_ms)
    assert delay >= after_ms / 1000
    assert delay <= max(backoff.max, after_ms / 1000)


def test_without_a_closing_the_backoff_alone_decides() -> None:
    backoff = Backoff(initial=0.5, jitter=0)
    assert reconnect_delay(backoff, 0, random.Random()) == 0.5
    assert reconnect_delay(backoff, 0, random.Random(), reconnect_after_ms=2500) == 2.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1},
        {"initial": 5, "max": 1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
        {"initial": float("nan")},
    ],
)
def test_nonsensical_backoffs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Backoff(**kwargs)  # type: ignore[arg-type]
