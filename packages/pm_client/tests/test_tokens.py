import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from pm_client import mint_token, refresh_delay, token_expiry

SECRET = "s" * 32


@given(
    st.floats(0, 1e6),
    st.floats(-1e5, 1e5),
    st.floats(0, 1e4),
)
def test_refresh_comes_before_expiry_but_not_before_half_the_remaining_life(
    now: float, life: float, before: float
) -> None:
    delay = refresh_delay(now + life, now, before)
    remaining = max(0.0, (now + life) - now)
    assert 0 <= delay <= remaining + 1e-6
    assert delay >= remaining / 2 - 1e-6


def test_a_long_token_is_refreshed_refresh_before_secs_ahead() -> None:
    assert refresh_delay(10_000 + 3600, 10_000, 60) == pytest.approx(3540)


def test_a_short_token_is_refreshed_at_half_its_remaining_life() -> None:
    assert refresh_delay(10_000 + 10, 10_000, 60) == pytest.approx(5)


def test_an_expired_token_is_refreshed_now() -> None:
    assert refresh_delay(9_000, 10_000, 60) == 0


def test_expiry_is_read_without_the_key() -> None:
    token = mint_token(tenant_id="t", user_id="u", key=SECRET, ttl_secs=90, now=1_000_000)
    assert token_expiry(token) == 1_000_090


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c"])
def test_a_token_without_readable_expiry_has_none(token: str) -> None:
    assert token_expiry(token) is None


def test_a_token_without_exp_has_no_expiry() -> None:
    assert token_expiry(jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")) is None


def test_minted_hs256_tokens_carry_the_claims_of_the_spec() -> None:
    token = mint_token(
        tenant_id="t1",
        user_id="u1",
        key=SECRET,
        roles=["admin", "viewer"],
        ttl_secs=60,
        issuer="iss",
        audience="aud",
    )
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="aud", issuer="iss")
    assert claims["sub"] == "u1"
    assert claims["tenant_id"] == "t1"
    assert claims["roles"] == ["admin", "viewer"]
    assert claims["exp"] - claims["iat"] == 60


def test_minting_refuses_a_secret_shorter_than_32_bytes() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        mint_token(tenant_id="t", user_id="u", key="short")


@pytest.mark.parametrize(
    "kwargs", [{"tenant_id": ""}, {"user_id": "x" * 129}, {"ttl_secs": 0}, {"ttl_secs": -5}]
)
def test_minting_refuses_claims_the_server_would_refuse(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"tenant_id": "t", "user_id": "u", "key": SECRET, **kwargs}
    with pytest.raises(ValueError, match="must be"):
        mint_token(**args)  # type: ignore[arg-type]


def test_minted_rs256_tokens_verify_with_the_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = mint_token(tenant_id="t1", user_id="u1", key=private, algorithm="RS256")
    assert jwt.decode(token, public, algorithms=["RS256"])["sub"] == "u1"
