import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_auth import Claims, InvalidClaim, TenantContext

NOW = 1_700_000_000


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "user-1", "tenant_id": "tenant-1", "exp": NOW + 60, "iat": NOW}
    return base | overrides


def field_of(raw: dict[str, Any]) -> str | None:
    with pytest.raises(InvalidClaim) as caught:
        Claims.from_payload(raw)
    return caught.value.field


def test_a_minimal_payload_has_no_roles_nbf_or_jti() -> None:
    claims = Claims.from_payload(payload())
    assert (claims.roles, claims.nbf, claims.jti) == ((), None, None)


def test_unknown_claims_are_ignored() -> None:
    assert Claims.from_payload(payload(iss="idp", scope="x y")).sub == "user-1"


@pytest.mark.parametrize("name", ["sub", "tenant_id", "exp", "iat"])
def test_a_missing_or_null_required_claim_is_named(name: str) -> None:
    without = payload()
    del without[name]
    assert field_of(without) == name
    assert field_of(payload(**{name: None})) == name


@pytest.mark.parametrize("name", ["sub", "tenant_id"])
@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a\x00b", "a\nb", "a\x7fb", "a\x85b", "a\ud800b", 7, ["x"]],
    ids=[
        "empty",
        "129-chars",
        "nul",
        "newline",
        "del",
        "c1-control",
        "lone-surrogate",
        "int",
        "list",
    ],
)
def test_an_id_claim_out_of_bounds_is_refused(name: str, value: Any) -> None:
    assert field_of(payload(**{name: value})) == name


@pytest.mark.parametrize("name", ["sub", "tenant_id"])
def test_ids_of_1_and_128_characters_and_any_printable_unicode_are_accepted(name: str) -> None:
    for value in ["x", "x" * 128, "équipe-東京 🚀"]:
        assert getattr(Claims.from_payload(payload(**{name: value})), name) == value


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value", ["1700000000", True, [1], -1, 10**12, math.nan, math.inf], ids=str
)
def test_a_numeric_date_of_wrong_type_or_out_of_range_is_refused(name: str, value: Any) -> None:
    assert field_of(payload(**{name: value})) == name


def test_fractional_dates_round_toward_a_shorter_validity() -> None:
    claims = Claims.from_payload(payload(exp=NOW + 60.9, iat=NOW + 0.5, nbf=NOW + 0.1))
    assert (claims.exp, claims.iat, claims.nbf) == (NOW + 60, NOW, NOW + 1)


@pytest.mark.parametrize("roles", ["admin", {"admin": True}, ["admin", 1], ["admin", ""], [None]])
def test_roles_of_wrong_type_are_refused(roles: Any) -> None:
    assert field_of(payload(roles=roles)) == "roles"


def test_roles_keep_their_order() -> None:
    assert Claims.from_payload(payload(roles=["b", "a"])).roles == ("b", "a")


@pytest.mark.parametrize("jti", [1, "", "j" * 129])
def test_a_jti_of_wrong_type_or_length_is_refused(jti: Any) -> None:
    assert field_of(payload(jti=jti)) == "jti"


def test_claims_built_directly_are_checked_too() -> None:
    with pytest.raises(InvalidClaim) as caught:
        Claims(sub="u", tenant_id="t" * 129, exp=NOW, iat=NOW)
    assert caught.value.field == "tenant_id"


def test_claims_are_immutable() -> None:
    claims = Claims.from_payload(payload())
    with pytest.raises(AttributeError):
        claims.sub = "someone-else"  # type: ignore[misc]


def test_tenant_context_carries_the_identity_and_expiry() -> None:
    claims = Claims.from_payload(payload(jti="j-1", roles=["admin"]))
    context = TenantContext.from_claims(claims)
    assert context == TenantContext(
        tenant_id="tenant-1",
        user_id="user-1",
        roles=("admin",),
        expires_at=float(NOW + 60),
        jti="j-1",
    )
    assert context.expires_at_ms == (NOW + 60) * 1000


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=140),
    lambda children: st.lists(children, max_size=3),
    max_leaves=6,
)


@given(
    st.dictionaries(
        st.sampled_from(["sub", "tenant_id", "exp", "iat", "nbf", "jti", "roles"]), _json
    )
)
def test_any_payload_yields_claims_or_names_the_bad_field(overrides: dict[str, Any]) -> None:
    try:
        claims = Claims.from_payload(payload(**overrides))
    except InvalidClaim as error:
        refused = error.field
    else:
        assert 1 <= len(claims.tenant_id) <= 128
        assert 1 <= len(claims.sub) <= 128
        return
    assert refused in overrides
