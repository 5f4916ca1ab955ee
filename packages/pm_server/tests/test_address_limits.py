import pytest
from pm_server.address_limits import AuthFailureLimiter, PendingConnections, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# address_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
        (None, ""),
        ("not-an-address", "not-an-address"),
    ],
)
def test_an_address_is_counted_by_ipv4_address_or_ipv6_slash_64(host: str | None, key: str) -> None:
    assert address_key(host) == key


def test_every_address_of_one_ipv6_slash_64_shares_one_key() -> None:
    keys = {address_key(f"2001:db8:0:7:{i:x}::{i:x}") for i in range(1, 500)}

    assert keys == {"2001:db8:0:7::/64"}


# PendingConnections


def test_pending_connections_are_admitted_up_to_the_limit_per_address() -> None:
    pending = PendingConnections(2)

    assert [pending.admit("a") for _ in range(3)] == [True, True, False]
    assert pending.admit("b")
    assert pending.held("a") == 2


def test_a_released_connection_makes_room_and_empty_addresses_are_forgotten() -> None:
    pending = PendingConnections(1)
    assert pending.admit("a")
    assert not pending.admit("a")

    pending.release("a")

    assert pending.held("a") == 0
    assert pending.admit("a")


def test_a_limit_of_zero_admits_everything_and_counts_nothing() -> None:
    pending = PendingConnections(0)

    assert all(pending.admit("a") for _ in range(10_000))
    assert pending.held("a") == 0


# AuthFailureLimiter


def test_an_address_may_fail_the_whole_bucket_then_must_wait() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(3, 60.0, clock=clock)

    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.record_failure("a")

    assert limiter.retry_after("a") == pytest.approx(20.0)  # one failure per 60/3 s
    assert limiter.retry_after("b") is None


def test_the_bucket_refills_at_max_failures_per_window() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(3, 60.0, clock=clock)
    for _ in range(3):
        limiter.record_failure("a")

    clock.now += 15.0
    assert limiter.retry_after("a") == pytest.approx(5.0)
    clock.now += 5.0
    assert limiter.retry_after("a") is None
    limiter.record_failure("a")
    assert limiter.retry_after("a") == pytest.approx(20.0)


def test_successes_cost_nothing_and_a_refilled_address_is_forgotten() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(2, 10.0, clock=clock)
    limiter.record_failure("a")
    assert len(limiter) == 1

    clock.now += 5.0

    assert limiter.retry_after("a") is None
    assert len(limiter) == 0


def test_the_table_never_outgrows_its_cap_and_forgets_the_oldest_first() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(1, 3600.0, clock=clock, max_addresses=100)

    for number in range(10_000):
        limiter.record_failure(f"2001:db8:{number:x}::/64")

    assert len(limiter) == 100
    assert limiter.retry_after("2001:db8:0::/64") is None  # evicted: a fresh bucket
    assert limiter.retry_after(f"2001:db8:{9_999:x}::/64") is not None


def test_a_failing_address_stays_in_the_table_while_others_come_and_go() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(1, 3600.0, clock=clock, max_addresses=3)
    limiter.record_failure("attacker")
    for other in ("b", "c"):
        limiter.record_failure(other)
    limiter.record_failure("attacker")  # its latest failure makes it the newest entry

    limiter.record_failure("d")

    assert limiter.retry_after("attacker") is not None
    assert limiter.retry_after("b") is None


def test_a_limit_of_zero_is_off() -> None:
    limiter = AuthFailureLimiter(0, 60.0)

    for _ in range(100):
        limiter.record_failure("a")

    assert not limiter.enabled
    assert limiter.retry_after("a") is None
    assert len(limiter) == 0


@pytest.mark.parametrize(
    ("failures", "window", "addresses"), [(-1, 60.0, 10), (1, 0.0, 10), (1, 60.0, 0)]
)
def test_nonsense_limits_are_refused(failures: int, window: float, addresses: int) -> None:
    with pytest.raises(ValueError, match="max_failures"):
        AuthFailureLimiter(failures, window, max_addresses=addresses)
