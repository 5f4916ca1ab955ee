from dataclasses import dataclass

import pytest
from pm_ws.events import ConnectionId, TenantId
from pm_ws.exceptions import LimitExceeded
from pm_ws.registry import ConnectionInfo, ConnectionRegistry, SlotReservation

T1 = TenantId("t1")
T2 = TenantId("t2")


@dataclass
class FakeConnection:
    connection_id: ConnectionId
    tenant_id: TenantId
    user_id: str = "u1"

    def describe(self) -> ConnectionInfo:
        return ConnectionInfo(
            connection_id=self.connection_id,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            remote="127.0.0.1",
            connected_at_ms=0,
            project_ids=(),
            sprint_ids=(),
            work_item_ids=(),
            queue_depth=0,
        )


def connection(connection_id: str, tenant_id: TenantId = T1) -> FakeConnection:
    return FakeConnection(ConnectionId(connection_id), tenant_id)


def registry(*, total: int = 100, per_tenant: int = 10) -> ConnectionRegistry[FakeConnection]:
    return ConnectionRegistry(max_connections=total, max_connections_per_tenant=per_tenant)


def refusal(connections: ConnectionRegistry[FakeConnection], tenant_id: TenantId) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        connections.reserve(tenant_id)
    return info.value


def test_only_the_tenant_limit_of_twenty_concurrent_reservations_succeed() -> None:
    connections = registry(per_tenant=3)
    granted: list[SlotReservation[FakeConnection]] = []
    refused: list[LimitExceeded] = []

    for _ in range(20):
        try:
            granted.append(connections.reserve(T1))
        except LimitExceeded as exc:
            refused.append(exc)

    assert len(granted) == 3
    assert len(refused) == 17
    assert {exc.scope for exc in refused} == {"tenant"}
    assert {exc.code for exc in refused} == {"CONNECTION_LIMIT"}
    assert connections.reserved == 3
    assert connections.tenant_counts() == {T1: 3}


def test_one_tenant_at_its_limit_does_not_stop_another() -> None:
    connections = registry(per_tenant=1)
    connections.reserve(T1)

    assert refusal(connections, T1).scope == "tenant"
    assert connections.reserve(T2).tenant_id == T2


def test_the_global_limit_refuses_every_tenant_with_scope_global() -> None:
    connections = registry(total=2, per_tenant=10)
    connections.reserve(T1)
    connections.reserve(T2)

    assert refusal(connections, TenantId("t3")).scope == "global"
    assert refusal(connections, T1).scope == "global"
    assert connections.reserved == 2


def test_stop_admitting_refuses_new_slots_with_scope_draining_and_keeps_held_ones() -> None:
    connections = registry()
    held = connections.reserve(T1)
    held.attach(connection("c1"))

    connections.stop_admitting()

    assert refusal(connections, T2).scope == "draining"
    assert connections.get("c1") is not None
    assert connections.reserved == 1


def test_release_gives_the_slot_back() -> None:
    connections = registry(per_tenant=2)
    first = connections.reserve(T1)
    connections.reserve(T1)

    first.release()

    assert connections.reserved == 1
    assert connections.tenant_counts() == {T1: 1}
    connections.reserve(T1)
    assert refusal(connections, T1).scope == "tenant"


def test_release_is_idempotent() -> None:
    connections = registry(per_tenant=2)
    first = connections.reserve(T1)
    second = connections.reserve(T1)

    first.release()
    first.release()
    first.release()

    assert connections.reserved == 1
    assert connections.tenant_counts() == {T1: 1}
    second.release()
    second.release()
    assert connections.reserved == 0
    assert connections.tenant_counts() == {}


def test_a_reservation_used_as_a_context_manager_is_released_when_the_body_raises() -> None:
    connections = registry(per_tenant=1)

    def upgrade_that_fails() -> None:
        with connections.reserve(T1) as slot:
            slot.attach(connection("c1"))
            raise RuntimeError("handshake failed")

    with pytest.raises(RuntimeError, match="handshake failed"):
        upgrade_that_fails()

    assert connections.reserved == 0
    assert connections.get("c1") is None
    assert connections.reserve(T1) is not None


def test_a_reservation_used_as_a_context_manager_is_released_on_normal_exit() -> None:
    connections = registry()

    with connections.reserve(T1) as slot:
        slot.attach(connection("c1"))
        assert connections.count() == 1

    assert connections.reserved == 0
    assert connections.count() == 0


def test_a_reserved_slot_counts_against_the_limits_before_a_connection_is_attached() -> None:
    connections = registry(per_tenant=1)
    connections.reserve(T1)

    assert connections.reserved == 1
    assert connections.count() == 0
    assert refusal(connections, T1).scope == "tenant"


def test_an_attached_connection_is_registered_until_its_slot_is_released() -> None:
    connections = registry()
    slot = connections.reserve(T1)
    conn = connection("c1")

    slot.attach(conn)

    assert connections.get("c1") is conn
    assert list(connections) == [conn]
    assert connections.count() == 1
    assert connections.count(T1) == 1
    assert connections.count(T2) == 0
    slot.release()
    assert connections.get("c1") is None
    assert list(connections) == []
    assert connections.count() == 0


def test_attach_after_release_raises_and_registers_nothing() -> None:
    connections = registry()
    slot = connections.reserve(T1)
    slot.release()

    with pytest.raises(RuntimeError, match="released"):
        slot.attach(connection("c1"))

    assert connections.get("c1") is None
    assert connections.reserved == 0


def test_snapshot_lists_connections_oldest_first_and_filters_by_tenant() -> None:
    connections = registry()
    for connection_id, tenant in [("a", T1), ("b", T2), ("c", T1)]:
        connections.reserve(tenant).attach(connection(connection_id, tenant))

    everyone = connections.snapshot()
    tenant_one = connections.snapshot("t1")

    assert [info.connection_id for info in everyone] == ["a", "b", "c"]
    assert [info.connection_id for info in tenant_one] == ["a", "c"]
    assert {info.tenant_id for info in tenant_one} == {"t1"}
    assert connections.snapshot("nobody") == []


def test_connections_can_release_while_the_registry_is_being_iterated() -> None:
    connections = registry()
    by_id: dict[str, SlotReservation[FakeConnection]] = {}
    for connection_id in ("a", "b", "c"):
        slot = connections.reserve(T1)
        slot.attach(connection(connection_id))
        by_id[connection_id] = slot

    seen: list[ConnectionId] = []
    for conn in connections:
        seen.append(conn.connection_id)
        by_id[conn.connection_id].release()

    assert seen == ["a", "b", "c"]
    assert connections.count() == 0
    assert connections.reserved == 0


def test_tenant_counts_forget_a_tenant_whose_last_slot_is_released() -> None:
    connections = registry()
    slot = connections.reserve(T1)
    connections.reserve(T2)

    slot.release()

    assert connections.tenant_counts() == {T2: 1}
