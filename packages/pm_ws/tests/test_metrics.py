from pm_ws.metrics import GatewayMetrics
from prometheus_client import CollectorRegistry, generate_latest


def exercised(metrics: GatewayMetrics) -> None:
    metrics.connection_opened("t1")
    metrics.connection_opened("t1")
    metrics.connection_opened("t2")
    metrics.connection_closed("t1", 1000)
    metrics.message_received("t1", "subscribe")
    metrics.message_received("t2", "ping")
    metrics.delivered("t1", 5)
    metrics.delivered("t2", 2)


def label_names(registry: CollectorRegistry) -> set[str]:
    return {name for family in registry.collect() for s in family.samples for name in s.labels}


def test_two_gateway_metrics_on_separate_registries_do_not_clash() -> None:
    first_registry, second_registry = CollectorRegistry(), CollectorRegistry()
    first = GatewayMetrics(first_registry)
    second = GatewayMetrics(second_registry)

    first.connection_opened("t1")
    first.errors.labels("DECODE_ERROR").inc()

    assert first_registry.get_sample_value("pm_ws_connections_opened_total") == 1
    assert second_registry.get_sample_value("pm_ws_connections_opened_total") == 0
    assert first_registry.get_sample_value("pm_ws_errors_total", {"code": "DECODE_ERROR"}) == 1
    assert second_registry.get_sample_value("pm_ws_errors_total", {"code": "DECODE_ERROR"}) is None
    assert second.connections_active is not first.connections_active


def test_metrics_of_different_namespaces_share_one_registry() -> None:
    registry = CollectorRegistry()
    GatewayMetrics(registry, namespace="a").connection_opened("t1")
    GatewayMetrics(registry, namespace="b")

    assert registry.get_sample_value("a_ws_connections_opened_total") == 1
    assert registry.get_sample_value("b_ws_connections_opened_total") == 0


def test_without_tenant_labels_no_series_carries_a_tenant_id() -> None:
    registry = CollectorRegistry()
    exercised(GatewayMetrics(registry))

    assert "tenant_id" not in label_names(registry)
    assert registry.get_sample_value("pm_ws_connections_opened_total") == 3
    assert registry.get_sample_value("pm_ws_connections_active") == 2
    assert registry.get_sample_value("pm_ws_connections_closed_total", {"code": "1000"}) == 1
    assert registry.get_sample_value("pm_ws_messages_received_total", {"type": "subscribe"}) == 1
    assert registry.get_sample_value("pm_ws_events_delivered_total") == 7
    assert registry.get_sample_value("pm_ws_connections_opened_total", {"tenant_id": "t1"}) is None
    assert b"t1" not in generate_latest(registry)


def test_with_tenant_labels_connection_message_and_delivery_series_are_per_tenant() -> None:
    registry = CollectorRegistry()
    exercised(GatewayMetrics(registry, tenant_labels=True))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("pm_ws_connections_opened_total", tenant_id="t1") == 2
    assert value("pm_ws_connections_opened_total", tenant_id="t2") == 1
    assert value("pm_ws_connections_active", tenant_id="t1") == 1
    assert value("pm_ws_connections_active", tenant_id="t2") == 1
    assert value("pm_ws_messages_received_total", type="subscribe", tenant_id="t1") == 1
    assert value("pm_ws_messages_received_total", type="ping", tenant_id="t2") == 1
    assert value("pm_ws_events_delivered_total", tenant_id="t1") == 5
    assert value("pm_ws_events_delivered_total", tenant_id="t2") == 2
    assert value("pm_ws_connections_opened_total") is None
    # Close codes and error codes stay unlabelled by tenant: their cardinality is fixed.
    assert value("pm_ws_connections_closed_total", code="1000") == 1


def test_every_metric_of_the_contract_is_exposed_with_the_namespace() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.connections_refused.labels("tenant_limit").inc()
    metrics.rate_limited.inc()
    metrics.slow_client_disconnects.inc()
    metrics.heartbeat_timeouts.inc()
    metrics.message_handling.observe(0.001)
    metrics.publish_to_delivery.observe(0.002)
    metrics.broker_publish.labels("ok").observe(0.003)
    metrics.history_replays.labels("true").inc()

    assert (
        registry.get_sample_value("pm_ws_connections_refused_total", {"reason": "tenant_limit"})
        == 1
    )
    assert registry.get_sample_value("pm_ws_rate_limited_frames_total") == 1
    assert registry.get_sample_value("pm_ws_slow_client_disconnects_total") == 1
    assert registry.get_sample_value("pm_ws_heartbeat_timeouts_total") == 1
    assert registry.get_sample_value("pm_ws_message_handling_seconds_count") == 1
    assert registry.get_sample_value("pm_ws_publish_to_delivery_seconds_count") == 1
    assert registry.get_sample_value("pm_broker_publish_seconds_count", {"outcome": "ok"}) == 1
    assert registry.get_sample_value("pm_ws_history_replays_total", {"recovered": "true"}) == 1
