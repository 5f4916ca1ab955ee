"""Who may connect to a real pm-server: the tenant check and the connection limits."""

from __future__ import annotations

import pytest
from pm_testkit import ServerProcess

PER_TENANT = 2
GLOBAL = 3

pytestmark = pytest.mark.pm_server(
    {
        "ALLOWED_TENANTS": "acme,globex,initech",
        "MAX_CONNECTIONS_PER_TENANT": str(PER_TENANT),
        "MAX_CONNECTIONS": str(GLOBAL),
    },
    api_keys=False,
)


@pytest.fixture
async def server(server: ServerProcess) -> ServerProcess:
    """The module's server, once the previous test's connections are gone from it."""
    await server.wait_connections(0)
    return server


async def test_a_tenant_outside_allowed_tenants_is_refused_403(server: ServerProcess) -> None:
    answer = await server.refused(server.token("umbrella"))

    assert answer.status == 403
    body = answer.json()
    assert body["code"] == "TENANT_NOT_ALLOWED"
    assert body["message"]


async def test_an_allowed_tenant_is_welcomed(server: ServerProcess) -> None:
    client = await server.connect("initech")

    assert client.welcome.tenant_id == "initech"


async def test_an_upgrade_beyond_the_tenants_limit_is_refused_429(server: ServerProcess) -> None:
    for user in range(PER_TENANT):
        await server.connect("acme", f"user-{user}")

    answer = await server.refused(server.token("acme", "one-too-many"))

    assert answer.status == 429
    body = answer.json()
    assert body["code"] == "CONNECTION_LIMIT"
    assert body["message"]
    await server.connect("globex")  # another tenant still gets in


async def test_an_upgrade_beyond_the_global_limit_is_refused_503(server: ServerProcess) -> None:
    await server.connect("acme")
    await server.connect("globex")
    await server.connect("initech")

    answer = await server.refused(server.token("initech", "fourth"))

    assert answer.status == 503
    body = answer.json()
    assert body["code"] == "CONNECTION_LIMIT"
    assert body["message"]


async def test_a_slot_is_released_when_its_client_leaves(server: ServerProcess) -> None:
    leaving = await server.connect("acme", "leaving")
    await server.connect("acme", "staying")
    assert (await server.refused(server.token("acme", "waiting"))).status == 429

    await leaving.ws.close()
    await server.wait_connections(1)

    admitted = await server.connect("acme", "waiting")
    assert admitted.welcome.user_id == "waiting"


async def test_refusals_are_counted_by_reason_in_metrics(server: ServerProcess) -> None:
    await server.refused(server.token("umbrella"))

    metrics = (await server.get("/metrics")).text

    assert 'pm_ws_connections_refused_total{reason="tenant"}' in metrics


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/publish"),
        ("GET", "/api/v1/connections"),
        ("POST", "/api/v1/disconnect"),
    ],
)
async def test_api_endpoints_are_404_without_their_key_configured(
    server: ServerProcess, method: str, path: str
) -> None:
    answer = await server.http(method, path, bearer="any-key-of-enough-length", data=b"{}")

    assert answer.status == 404
    assert answer.json()["code"]


async def test_cors_is_off_unless_configured(server: ServerProcess) -> None:
    answer = await server.http(
        "OPTIONS",
        "/api/v1/publish",
        headers={"Origin": "https://admin.example.com", "Access-Control-Request-Method": "POST"},
    )

    assert "Access-Control-Allow-Origin" not in answer.headers
