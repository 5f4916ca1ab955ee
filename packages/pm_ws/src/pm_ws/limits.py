"""The numbers that bound what one connection and one process may use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Limits of SPEC §3 and §4, with the contract's defaults.

    `max_consecutive_errors` invalid frames in a row, or
    `max_consecutive_rate_limited` frames refused by the rate limit in a row, close
    the connection (1008): a client that ignores its errors must not cost a core.
    Every bound is per process: with N processes behind a balancer, the fleet's
    global limit is N × `max_connections`.
    """

    max_connections: int = 10_000
    max_connections_per_tenant: int = 1_000
    max_subscriptions: int = 1_000
    max_message_bytes: int = 65_536
    send_queue_size: int = 1_024
    rate_limit_max_requests: int = 100
    rate_limit_window_secs: float = 60.0
    heartbeat_interval_secs: float = 30.0
    heartbeat_timeout_secs: float = 10.0
    max_consecutive_errors: int = 10
    max_consecutive_rate_limited: int = 20

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_connections_per_tenant",
            "max_subscriptions",
            "max_message_bytes",
            "send_queue_size",
            "rate_limit_max_requests",
            "rate_limit_window_secs",
            "heartbeat_interval_secs",
            "heartbeat_timeout_secs",
            "max_consecutive_errors",
            "max_consecutive_rate_limited",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
