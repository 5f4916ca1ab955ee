"""Prometheus metrics of the engine, on a registry the application passes in."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pm_ws import close_codes

_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class GatewayMetrics:
    """Every metric of SPEC §5 the engine records.

    Per-tenant labels (`tenant_id`) are added to the connection, message and
    delivery series only when `tenant_labels` is true: with thousands of tenants
    they multiply the series count, so they are opt-in. Hot paths record in bulk
    (one `inc(n)` per event, not one per recipient).
    """

    def __init__(
        self, registry: CollectorRegistry, *, namespace: str = "pm", tenant_labels: bool = False
    ) -> None:
        self.tenant_labels = tenant_labels
        tenant = ("tenant_id",) if tenant_labels else ()
        ns = namespace
        self.connections_active = Gauge(
            "ws_connections_active", "Open WebSocket connections.", tenant,
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.connections_opened = Counter(
            "ws_connections_opened", "WebSocket connections accepted.", tenant,
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.connections_refused = Counter(
            "ws_connections_refused", "Upgrades refused, by reason.", ("reason",),
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.connections_closed = Counter(
            "ws_connections_closed",
            "Connections closed, by close code (client-chosen codes as `other`).", ("code",),
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.messages_received = Counter(
            "ws_messages_received", "Client frames received, by message type.",
            ("type", *tenant), namespace=ns, registry=registry,
        )  # fmt: skip
        self.events_delivered = Counter(
            "ws_events_delivered", "Events queued to connections (one per recipient).", tenant,
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "ws_errors", "Error messages sent to clients, by code.", ("code",),
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "ws_rate_limited_frames", "Client frames refused by the rate limit.",
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.slow_client_disconnects = Counter(
            "ws_slow_client_disconnects", "Connections closed because their send queue was full.",
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.heartbeat_timeouts = Counter(
            "ws_heartbeat_timeouts", "Connections closed because the peer stopped answering pings.",
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.lagged_disconnects = Counter(
            "ws_lagged_disconnects", "Connections closed because the broker lost their events.",
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.message_handling = Histogram(
            "ws_message_handling_seconds", "Time to handle one client frame.",
            buckets=_LATENCY_BUCKETS, namespace=ns, registry=registry,
        )  # fmt: skip
        self.publish_to_delivery = Histogram(
            "ws_publish_to_delivery_seconds",
            "From the broker accepting an event to its fanout queueing it to connections.",
            buckets=_LATENCY_BUCKETS, namespace=ns, registry=registry,
        )  # fmt: skip
        self.broker_publish = Histogram(
            "broker_publish_seconds", "Time for the broker to accept one publish.",
            ("outcome",), buckets=_LATENCY_BUCKETS, namespace=ns, registry=registry,
        )  # fmt: skip
        self.history_replays = Counter(
            "ws_history_replays", "Resumes served from history, by whether nothing was lost.",
            ("recovered",), namespace=ns, registry=registry,
        )  # fmt: skip

    def connection_opened(self, tenant_id: str) -> None:
        """Count an accepted connection and raise the active gauge."""
        if self.tenant_labels:
            self.connections_opened.labels(tenant_id).inc()
            self.connections_active.labels(tenant_id).inc()
        else:
            self.connections_opened.inc()
            self.connections_active.inc()

    def connection_closed(self, tenant_id: str, code: int) -> None:
        """Count a closed connection by its close code and lower the active gauge.

        Codes a client picked outside the contract's count as `other`: the label
        set stays bounded however many distinct codes clients send.
        """
        self.connections_closed.labels(close_codes.metric_label(code)).inc()
        if self.tenant_labels:
            self.connections_active.labels(tenant_id).dec()
        else:
            self.connections_active.dec()

    def message_received(self, tenant_id: str, kind: str) -> None:
        """Count one client frame by its message type."""
        if self.tenant_labels:
            self.messages_received.labels(kind, tenant_id).inc()
        else:
            self.messages_received.labels(kind).inc()

    def delivered(self, tenant_id: str, count: int) -> None:
        """Count the recipients one event was queued to."""
        if self.tenant_labels:
            self.events_delivered.labels(tenant_id).inc(count)
        else:
            self.events_delivered.inc(count)
