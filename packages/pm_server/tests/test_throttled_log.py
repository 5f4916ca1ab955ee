import logging

import pytest
from pm_server.logs import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def caught(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="throttled")
    return caplog


def test_a_flood_writes_one_record_per_interval(caught: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("throttled"), logging.WARNING, 10.0, clock=clock)

    written = [log.log("accept failed: %s", "EMFILE") for _ in range(5_000)]

    assert written.count(True) == 1
    assert [r.getMessage() for r in caught.records] == ["accept failed: EMFILE"]
    assert caught.records[0].levelno == logging.WARNING


def test_the_next_record_says_how_many_were_held_back(caught: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("throttled"), logging.INFO, 10.0, clock=clock)
    log.log("bad request from %s", "a")
    for _ in range(41):
        clock.now += 0.1
        log.log("bad request from %s", "b")

    clock.now += 10.0
    log.log("bad request from %s", "c")

    assert [r.getMessage() for r in caught.records] == [
        "bad request from a",
        "bad request from c (and 41 more since the last report)",
    ]
    assert getattr(caught.records[1], "suppressed", None) == 41


def test_a_quiet_condition_is_logged_every_time(caught: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("throttled"), logging.INFO, 1.0, clock=clock)

    for _ in range(3):
        assert log.log("rare")
        clock.now += 1.0

    assert [r.getMessage() for r in caught.records] == ["rare", "rare", "rare"]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_secs"):
        ThrottledLog(logging.getLogger("throttled"), logging.INFO, 0)
