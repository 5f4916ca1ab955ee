"""The upgrade's admission ladder (SPEC §3): origin → draining → token → tenant → slot.

Driven through a real `Gateway.admit` with plain header dicts: no socket, no
aiohttp. Each rung has its test, and so has each question of order (which
refusal a request failing two rungs gets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pm_auth import SUBPROTOCOL, TenantContext
from pm_ws import Admitted, GatewayLimits, LimitExceeded, Refusal
from pm_ws.admission import (
    BROKER_UNAVAILABLE,
    NOT_AN_UPGRADE,
    ORIGIN_NOT_ALLOWED,
    SERVER_SHUTTING_DOWN,
    TENANT_NOT_ALLOWED,
    over_limit,
)

from packages.pm_ws.tests.session_harness import NOW, OTHER_TENANT, TENANT, USER, Engine

ALLOWED_ORIGIN = "https://board.example"
BAD_ORIGIN = "https://evil.example"
BEARER_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="pm-realtime"'),)


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def refusal_of(outcome: Admitted | Refusal) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    return outcome


async def admit(engine: Engine, headers: dict[str, str]) -> Admitted:
    outcome = await engine.gateway.admit(headers)
    assert isinstance(outcome, Admitted), outcome
    return outcome


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(allowed_origins=frozenset({ALLOWED_ORIGIN})) as engine:
        yield engine


async def test_a_good_token_is_admitted_with_its_identity_and_holds_a_slot(
    engine: Engine,
) -> None:
    admitted = await engine.gateway.admit(bearer(engine.token(expires_in=600)))

    assert isinstance(admitted, Admitted)
    assert admitted.context == TenantContext(
        tenant_id=TENANT, user_id=USER, roles=(), expires_at=NOW + 600
    )
    assert admitted.tenant_id == TENANT
    assert admitted.subprotocol is None, "a header token selects no subprotocol"
    assert engine.gateway.registry.reserved == 1
    assert engine.gateway.registry.tenant_counts() == {TENANT: 1}
    admitted.release()


async def test_a_token_offered_as_a_subprotocol_selects_pm_v1(engine: Engine) -> None:
    headers = {"Sec-WebSocket-Protocol": f"{SUBPROTOCOL}, pm.bearer.{engine.token()}"}

    with await admit(engine, headers) as admitted:
        assert admitted.subprotocol == SUBPROTOCOL == "pm.v1"


async def test_an_origin_outside_the_allowed_set_is_refused_403(engine: Engine) -> None:
    refusal = refusal_of(await engine.gateway.admit(bearer(engine.token(), Origin=BAD_ORIGIN)))

    assert refusal is ORIGIN_NOT_ALLOWED
    assert (refusal.status, refusal.code, refusal.reason) == (403, "ORIGIN_NOT_ALLOWED", "origin")
    assert refusal.body() == {"code": "ORIGIN_NOT_ALLOWED", "message": "origin not allowed"}


async def test_an_allowed_origin_and_no_origin_at_all_are_both_admitted(engine: Engine) -> None:
    for headers in (bearer(engine.token(), Origin=ALLOWED_ORIGIN), bearer(engine.token())):
        with await admit(engine, headers) as admitted:
            assert admitted.tenant_id == TENANT


async def test_any_origin_is_admitted_when_no_set_is_configured() -> None:
    async with Engine() as engine:
        with await admit(engine, bearer(engine.token(), Origin=BAD_ORIGIN)) as admitted:
            assert admitted.tenant_id == TENANT


async def test_a_bad_origin_is_refused_before_a_bad_token(engine: Engine) -> None:
    refusal = refusal_of(await engine.gateway.admit({"Origin": BAD_ORIGIN}))

    assert refusal is ORIGIN_NOT_ALLOWED


async def test_a_bad_origin_is_refused_even_while_draining(engine: Engine) -> None:
    engine.gateway.shutdown.begin()

    refusal = refusal_of(await engine.gateway.admit(bearer(engine.token(), Origin=BAD_ORIGIN)))

    assert refusal is ORIGIN_NOT_ALLOWED


async def test_draining_refuses_503_before_looking_at_the_token(engine: Engine) -> None:
    engine.gateway.shutdown.begin()

    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, bearer(engine.token())):
        refusal = refusal_of(await engine.gateway.admit(headers))
        assert refusal is SERVER_SHUTTING_DOWN
        assert (refusal.status, refusal.code, refusal.reason) == (
            503,
            "SERVER_SHUTTING_DOWN",
            "draining",
        )
    assert engine.gateway.registry.reserved == 0


@pytest.mark.parametrize(
    ("headers", "code", "field"),
    [
        ({}, "MISSING_AUTH_HEADER", None),
        ({"Authorization": "Basic abc"}, "INVALID_AUTH_SCHEME", None),
        ({"Authorization": "Bearer not.a.jwt"}, "JWT_DECODE_FAILED", None),
        ({"Sec-WebSocket-Protocol": "pm.bearer.abc"}, "INVALID_TOKEN", None),
    ],
)
async def test_a_missing_or_malformed_token_is_refused_401_with_a_bearer_challenge(
    engine: Engine, headers: dict[str, str], code: str, field: str | None
) -> None:
    refusal = refusal_of(await engine.gateway.admit(headers))

    assert (refusal.status, refusal.code, refusal.field, refusal.reason) == (
        401,
        code,
        field,
        "auth",
    )
    assert refusal.headers == BEARER_CHALLENGE
    assert set(refusal.body()) == {"code", "message"}


async def test_an_expired_token_is_refused_401_token_expired(engine: Engine) -> None:
    refusal = refusal_of(await engine.gateway.admit(bearer(engine.token(expires_in=-3600))))

    assert (refusal.status, refusal.code) == (401, "TOKEN_EXPIRED")


async def test_a_claim_out_of_bounds_is_refused_401_naming_the_claim(engine: Engine) -> None:
    refusal = refusal_of(await engine.gateway.admit(bearer(engine.token(tenant="t" * 129))))

    assert (refusal.status, refusal.code, refusal.field) == (401, "INVALID_CLAIM", "tenant_id")
    assert refusal.body() == {
        "code": "INVALID_CLAIM",
        "message": refusal.message,
        "field": "tenant_id",
    }


async def test_a_malformed_bearer_subprotocol_is_refused_401_even_beside_a_good_header(
    engine: Engine,
) -> None:
    headers = bearer(engine.token(), **{"Sec-WebSocket-Protocol": "pm.v1, pm.bearer."})

    refusal = refusal_of(await engine.gateway.admit(headers))

    assert (refusal.status, refusal.code) == (401, "INVALID_TOKEN")
    assert engine.gateway.registry.reserved == 0


async def test_a_tenant_the_check_rejects_is_refused_403_after_the_token_is_checked() -> None:
    asked: list[str] = []

    async def only_acme(context: TenantContext) -> bool:
        asked.append(context.tenant_id)
        return context.tenant_id == TENANT

    async with Engine(tenant_check=only_acme) as engine:
        refused = refusal_of(await engine.gateway.admit(bearer(engine.token(tenant=OTHER_TENANT))))
        bad_token = refusal_of(await engine.gateway.admit({"Authorization": "Bearer x.y.z"}))
        with await admit(engine, bearer(engine.token())) as admitted:
            assert admitted.tenant_id == TENANT

    assert refused is TENANT_NOT_ALLOWED
    assert (refused.status, refused.code, refused.reason) == (403, "TENANT_NOT_ALLOWED", "tenant")
    assert bad_token.status == 401
    assert asked == [OTHER_TENANT, TENANT], "the check only sees authenticated tenants"


async def test_the_tenants_limit_is_refused_429_and_the_global_one_503() -> None:
    limits = GatewayLimits(max_connections=3, max_connections_per_tenant=2)
    async with Engine(limits=limits) as engine:
        held = [await engine.gateway.admit(bearer(engine.token())) for _ in range(2)]
        tenant_full = refusal_of(await engine.gateway.admit(bearer(engine.token())))
        held.append(await engine.gateway.admit(bearer(engine.token(tenant=OTHER_TENANT))))
        all_full = refusal_of(await engine.gateway.admit(bearer(engine.token(tenant="initech"))))

        assert all(isinstance(outcome, Admitted) for outcome in held)
        assert engine.gateway.registry.reserved == 3
        for outcome in held:
            assert isinstance(outcome, Admitted)
            outcome.release()

    assert (tenant_full.status, tenant_full.code, tenant_full.reason) == (
        429,
        "CONNECTION_LIMIT",
        "limit_tenant",
    )
    assert (all_full.status, all_full.code, all_full.reason) == (
        503,
        "CONNECTION_LIMIT",
        "limit_global",
    )
    assert tenant_full.headers == all_full.headers == ()


async def test_draining_that_begins_during_the_tenant_check_refuses_503_shutting_down() -> None:
    draining: list[Engine] = []

    async def begin_draining(context: TenantContext) -> bool:
        draining[0].gateway.shutdown.begin()  # a SIGTERM while the check was out
        return True

    async with Engine(tenant_check=begin_draining) as engine:
        draining.append(engine)
        refusal = refusal_of(await engine.gateway.admit(bearer(engine.token())))

        assert engine.gateway.registry.reserved == 0

    assert (refusal.status, refusal.code, refusal.reason) == (
        503,
        "SERVER_SHUTTING_DOWN",
        "limit_draining",
    )
    assert refusal.message == "the server is shutting down"


async def test_the_slot_is_released_when_the_upgrade_never_happens(engine: Engine) -> None:
    with await admit(engine, bearer(engine.token())) as admitted:
        assert engine.gateway.registry.reserved == 1
        # the handshake fails here: no session ever takes the slot

    assert engine.gateway.registry.reserved == 0
    assert engine.gateway.registry.tenant_counts() == {}
    admitted.release()  # idempotent: a second release gives nothing back twice
    assert engine.gateway.registry.reserved == 0


async def test_a_refused_request_takes_no_slot() -> None:
    async with Engine(limits=GatewayLimits(max_connections_per_tenant=1)) as engine:
        with await admit(engine, bearer(engine.token())):
            for _ in range(3):
                refusal_of(await engine.gateway.admit(bearer(engine.token())))

            assert engine.gateway.registry.reserved == 1


def test_refusals_decided_outside_the_ladder_keep_their_status_code_and_reason() -> None:
    assert (NOT_AN_UPGRADE.status, NOT_AN_UPGRADE.code, NOT_AN_UPGRADE.reason) == (
        400,
        "INVALID_MESSAGE",
        "bad",
    )
    assert NOT_AN_UPGRADE.body() == {
        "code": "INVALID_MESSAGE",
        "message": "expected a WebSocket upgrade",
    }
    assert (BROKER_UNAVAILABLE.status, BROKER_UNAVAILABLE.code, BROKER_UNAVAILABLE.reason) == (
        503,
        "BROKER_UNAVAILABLE",
        "broker_unavailable",
    )


def test_a_limit_refusal_carries_the_limits_own_message() -> None:
    refusal = over_limit(LimitExceeded("the tenant is at its connection limit", scope="tenant"))

    assert refusal.body() == {
        "code": "CONNECTION_LIMIT",
        "message": "the tenant is at its connection limit",
    }
