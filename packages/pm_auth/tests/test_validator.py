import base64
import contextlib
import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from pm_auth import (
    AuthError,
    Claims,
    InvalidClaim,
    InvalidKey,
    InvalidToken,
    JwtDecodeFailed,
    JwtValidator,
    TokenExpired,
)
from pm_proto.contract import MAX_TOKEN_BYTES

NOW = 1_700_000_000
SECRET = b"0123456789abcdef0123456789abcdef"  # exactly 32 bytes


@dataclass
class FakeClock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_raw(header: bytes, payload: bytes, secret: bytes = SECRET) -> str:
    """Signs any bytes with HMAC-SHA256, including what PyJWT's encoder refuses to."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def sign_hs256(header: Any, payload: Any, secret: bytes = SECRET) -> str:
    return sign_raw(json.dumps(header).encode(), json.dumps(payload).encode(), secret)


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid payload issued at NOW for an hour; an override of None drops the claim."""
    payload: dict[str, Any] = {"sub": "user-1", "tenant_id": "tenant-1", "iat": NOW}
    payload["exp"] = NOW + 3600
    payload.update(overrides)
    return {name: value for name, value in payload.items() if value is not None}


def hs_token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs_validator(**kwargs: Any) -> JwtValidator:
    kwargs.setdefault("clock", FakeClock())
    return JwtValidator.hs256(SECRET, **kwargs)


@pytest.fixture
def rs_validator(rsa_key: rsa.RSAPrivateKey) -> JwtValidator:
    return JwtValidator.rs256(public_pem(rsa_key), clock=FakeClock())


def test_a_31_byte_secret_is_refused_at_construction() -> None:
    with pytest.raises(InvalidKey, match="31 bytes"):
        JwtValidator.hs256(SECRET[:31])


@pytest.mark.parametrize(
    "secret", [SECRET, SECRET.decode(), "é" * 16], ids=["bytes", "str", "utf8"]
)
def test_a_32_byte_secret_is_accepted(secret: str | bytes) -> None:
    assert JwtValidator.hs256(secret).algorithm == "HS256"


def test_invalid_key_message_never_contains_the_secret() -> None:
    secret = "short-but-recognisable"
    with pytest.raises(InvalidKey) as caught:
        JwtValidator.hs256(secret)
    assert secret not in str(caught.value)


def test_a_public_key_pem_is_refused_as_an_hs256_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidKey, match="RS256"):
        JwtValidator.hs256(public_pem(rsa_key))


def test_a_jwk_document_is_refused_as_an_hs256_secret() -> None:
    jwk = json.dumps({"kty": "oct", "k": b64url(SECRET)})
    with pytest.raises(InvalidKey, match="JWK"):
        JwtValidator.hs256(jwk)


def test_an_unparseable_pem_is_refused_at_construction() -> None:
    with pytest.raises(InvalidKey, match="could not parse"):
        JwtValidator.rs256("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")


def test_a_private_key_is_refused_where_the_public_key_belongs(rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidKey, match="public key") as caught:
        JwtValidator.rs256(private_pem)
    assert private_pem.decode().splitlines()[1] not in str(caught.value)


def test_an_ec_public_key_is_refused_for_rs256(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(InvalidKey, match="RSA"):
        JwtValidator.rs256(public_pem(ec_key))


def test_an_rsa_key_under_2048_bits_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refusing it is the point
    with pytest.raises(InvalidKey, match="1024 bits"):
        JwtValidator.rs256(public_pem(small))


@pytest.mark.parametrize("leeway", [-1.0, math.nan, math.inf])
def test_a_negative_or_non_finite_leeway_is_refused(leeway: float) -> None:
    with pytest.raises(ValueError, match="leeway"):
        JwtValidator.hs256(SECRET, leeway_secs=leeway)


def test_an_algorithm_other_than_hs256_or_rs256_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported algorithm"):
        JwtValidator("HS512", SECRET)  # type: ignore[arg-type]


def test_algorithm_and_leeway_are_exposed(rs_validator: JwtValidator) -> None:
    assert (rs_validator.algorithm, rs_validator.leeway_secs) == ("RS256", 30.0)
    assert JwtValidator.hs256(SECRET, leeway_secs=5).leeway_secs == 5.0


def test_repr_never_shows_the_secret() -> None:
    assert SECRET.decode() not in repr(JwtValidator.hs256(SECRET, issuer="idp"))


def test_a_valid_hs256_token_yields_its_claims() -> None:
    token = hs_token(nbf=NOW, jti="abc", roles=["admin", "viewer"])
    assert hs_validator().validate(token) == Claims(
        sub="user-1",
        tenant_id="tenant-1",
        exp=NOW + 3600,
        iat=NOW,
        nbf=NOW,
        jti="abc",
        roles=("admin", "viewer"),
    )


def test_a_valid_rs256_token_yields_its_claims(
    rs_validator: JwtValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert rs_validator.validate(token).tenant_id == "tenant-1"


def test_roles_default_to_empty() -> None:
    assert hs_validator().validate(hs_token()).roles == ()


def test_alg_none_token_is_rejected(rs_validator: JwtValidator) -> None:
    unsigned = jwt.encode(claims(), "", algorithm="none")
    for validator in (hs_validator(), rs_validator):
        with pytest.raises(JwtDecodeFailed):
            validator.validate(unsigned)


def test_hs256_token_signed_with_the_rsa_public_key_pem_is_rejected(
    rs_validator: JwtValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    forged = sign_hs256({"alg": "HS256", "typ": "JWT"}, claims(), secret=public_pem(rsa_key))
    with pytest.raises(JwtDecodeFailed):
        rs_validator.validate(forged)


def test_rs512_token_is_rejected_by_an_rs256_validator(
    rs_validator: JwtValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(JwtDecodeFailed):
        rs_validator.validate(jwt.encode(claims(), rsa_key, algorithm="RS512"))


def test_es256_token_is_rejected_by_an_rs256_validator(
    rs_validator: JwtValidator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(JwtDecodeFailed):
        rs_validator.validate(jwt.encode(claims(), ec_key, algorithm="ES256"))


def test_rs256_token_is_rejected_by_an_hs256_validator(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(JwtDecodeFailed):
        hs_validator().validate(jwt.encode(claims(), rsa_key, algorithm="RS256"))


@pytest.mark.parametrize("header", [{"alg": "HS512"}, {"alg": "hs256"}, {"typ": "JWT"}])
def test_a_header_not_naming_exactly_hs256_is_rejected_even_with_the_right_secret(
    header: dict[str, str],
) -> None:
    with pytest.raises(JwtDecodeFailed):
        hs_validator().validate(sign_hs256(header, claims()))


def test_hs256_token_signed_with_another_secret_is_rejected() -> None:
    token = jwt.encode(claims(), b"another secret of at least 32 bytes!", algorithm="HS256")
    with pytest.raises(JwtDecodeFailed):
        hs_validator().validate(token)


def test_rs256_token_signed_with_another_key_is_rejected(
    rs_validator: JwtValidator, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(JwtDecodeFailed):
        rs_validator.validate(jwt.encode(claims(), other_rsa_key, algorithm="RS256"))


def test_a_tampered_payload_is_rejected() -> None:
    header, _, signature = hs_token().split(".")
    forged_payload = b64url(json.dumps(claims(tenant_id="someone-else")).encode())
    with pytest.raises(JwtDecodeFailed):
        hs_validator().validate(f"{header}.{forged_payload}.{signature}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b",
        "a.b.c.d",
        "!!!.!!!.!!!",
        f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(b'sig')}",
        sign_hs256(["HS256"], claims()),
        sign_hs256({"alg": "HS256"}, ["not", "an", "object"]),
        sign_raw(b'{"alg": "HS256"}', b"[" * 2500 + b"]" * 2500),
        sign_raw(b'{"alg": "HS256"}', b'{"sub": "\xff"}'),
        "ey\u00e9.ey.sig",
    ],
    ids=[
        "empty",
        "one-segment",
        "two-segments",
        "four-segments",
        "bad-base64",
        "header-not-json",
        "header-not-object",
        "payload-not-object",
        "deeply-nested-payload",
        "payload-not-utf8",
        "non-ascii",
    ],
)
def test_a_malformed_token_is_rejected_as_undecodable(token: str) -> None:
    with pytest.raises(JwtDecodeFailed):
        hs_validator().validate(token)


def _signed_token_of_length(length: int) -> str:
    # Base64 skips some lengths, so also vary the header to land exactly.
    for kid in range(4):
        for pad in range(length):
            token = sign_hs256({"alg": "HS256", "kid": "k" * kid}, claims(pad="x" * pad))
            if len(token) == length:
                return token
            if len(token) > length:
                break
    raise AssertionError(f"no token of length {length}")


def test_a_token_of_exactly_8_kib_is_accepted() -> None:
    assert hs_validator().validate(_signed_token_of_length(MAX_TOKEN_BYTES)).sub == "user-1"


def test_a_token_longer_than_8_kib_is_rejected_before_parsing() -> None:
    with pytest.raises(InvalidToken, match="longer than"):
        hs_validator().validate(_signed_token_of_length(MAX_TOKEN_BYTES + 1))
    with pytest.raises(InvalidToken):
        hs_validator().validate("garbage" * 2000)


@pytest.mark.parametrize("name", ["exp", "iat", "sub", "tenant_id"])
def test_a_missing_required_claim_is_named(name: str) -> None:
    with pytest.raises(InvalidClaim) as caught:
        hs_validator().validate(hs_token(**{name: None}))
    assert caught.value.field == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", "tomorrow"),
        ("iat", True),
        ("nbf", [1]),
        ("sub", ""),
        ("sub", "u" * 129),
        ("sub", "user\n1"),
        ("tenant_id", ""),
        ("tenant_id", "t" * 129),
        ("tenant_id", "tenant\x001"),
        ("tenant_id", 42),
        ("jti", 7),
        ("roles", "admin"),
        ("roles", ["admin", 1]),
    ],
)
def test_a_claim_of_wrong_type_or_out_of_bounds_is_named(name: str, value: Any) -> None:
    with pytest.raises(InvalidClaim) as caught:
        hs_validator().validate(hs_token(**{name: value}))
    assert caught.value.field == name


def test_ids_of_128_characters_are_accepted() -> None:
    result = hs_validator().validate(hs_token(sub="u" * 128, tenant_id="t" * 128))
    assert (len(result.sub), len(result.tenant_id)) == (128, 128)


def test_a_token_expired_beyond_the_leeway_is_rejected() -> None:
    token = hs_token(exp=NOW)
    with pytest.raises(TokenExpired):
        hs_validator(clock=FakeClock(NOW + 30)).validate(token)


def test_a_token_expired_within_the_leeway_is_accepted() -> None:
    token = hs_token(exp=NOW)
    assert hs_validator(clock=FakeClock(NOW + 29.9)).validate(token).exp == NOW


def test_without_leeway_a_token_is_expired_at_its_exp() -> None:
    token = hs_token(exp=NOW + 10)
    validator = hs_validator(clock=FakeClock(NOW + 10), leeway_secs=0)
    with pytest.raises(TokenExpired):
        validator.validate(token)


def test_expiry_is_judged_by_the_injected_clock_not_wall_time() -> None:
    long_expired = hs_token(iat=946_684_800, exp=946_688_400)  # 2000-01-01, one hour
    assert hs_validator(clock=FakeClock(946_684_900)).validate(long_expired).iat == 946_684_800
    with pytest.raises(TokenExpired):
        hs_validator(clock=FakeClock(NOW + 10**6)).validate(hs_token())


def test_a_token_whose_nbf_is_beyond_the_leeway_is_not_valid_yet() -> None:
    with pytest.raises(InvalidToken, match="not valid yet"):
        hs_validator().validate(hs_token(nbf=NOW + 31))


def test_a_token_whose_nbf_is_within_the_leeway_is_accepted() -> None:
    assert hs_validator().validate(hs_token(nbf=NOW + 30)).nbf == NOW + 30


def test_a_token_issued_in_the_future_beyond_the_leeway_is_rejected() -> None:
    with pytest.raises(InvalidToken, match="future"):
        hs_validator().validate(hs_token(iat=NOW + 31))


def test_issuer_is_checked_when_configured() -> None:
    validator = hs_validator(issuer="https://idp.example")
    assert validator.validate(hs_token(iss="https://idp.example")).sub == "user-1"
    for iss in ["https://evil.example", None]:
        with pytest.raises(InvalidClaim) as caught:
            validator.validate(hs_token(iss=iss))
        assert caught.value.field == "iss"


def test_issuer_is_ignored_when_not_configured() -> None:
    assert hs_validator().validate(hs_token(iss="anyone")).sub == "user-1"


def test_audience_is_checked_when_configured() -> None:
    validator = hs_validator(audience="pm-realtime")
    assert validator.validate(hs_token(aud="pm-realtime")).sub == "user-1"
    assert validator.validate(hs_token(aud=["other", "pm-realtime"])).sub == "user-1"
    for aud in ["other", ["other"], None]:
        with pytest.raises(InvalidClaim) as caught:
            validator.validate(hs_token(aud=aud))
        assert caught.value.field == "aud"


def test_audience_is_ignored_when_not_configured() -> None:
    assert hs_validator().validate(hs_token(aud="some-api")).sub == "user-1"


def test_no_error_message_contains_the_token(
    rs_validator: JwtValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    marker = "Zm9yZ2VkLXNlY3JldC1tYXJrZXI"
    bad_tokens = [
        (hs_validator(), hs_token(exp=NOW - 3600, sub=marker)),
        (hs_validator(), hs_token(tenant_id=marker * 10)),
        (hs_validator(), hs_token(nbf=NOW + 3600, jti=marker)),
        (hs_validator(issuer="idp"), hs_token(iss=marker)),
        (hs_validator(audience="pm"), hs_token(aud=marker)),
        (hs_validator(), f"{marker}.{marker}.{marker}"),
        (hs_validator(), sign_hs256({"alg": "HS256", "kid": 1, "x": marker}, claims())),
        (hs_validator(), sign_hs256({"alg": marker}, claims())),
        (rs_validator, jwt.encode(claims(sub=marker), rsa_key, algorithm="RS512")),
        (hs_validator(), marker * 400),
    ]
    for validator, token in bad_tokens:
        with pytest.raises(AuthError) as caught:
            validator.validate(token)
        error = caught.value
        shown = f"{error} {error.message} {error!r} {error.field}"
        assert marker not in shown
        assert all(segment not in shown for segment in token.split(".") if len(segment) > 8)
        assert error.__cause__ is None


@given(st.text())
def test_arbitrary_text_yields_claims_or_an_auth_error(text: str) -> None:
    with contextlib.suppress(AuthError):
        assert isinstance(hs_validator().validate(text), Claims)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_claim_names = st.sampled_from(["sub", "tenant_id", "exp", "iat", "nbf", "jti", "roles", "iss"])


@given(
    header=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "b64"]), _json)
    | st.just({"alg": "HS256"}),
    payload=st.dictionaries(_claim_names, _json).map(lambda extra: claims() | extra) | _json,
)
def test_arbitrary_signed_headers_and_payloads_yield_claims_or_an_auth_error(
    header: Any, payload: Any
) -> None:
    with contextlib.suppress(AuthError):
        assert isinstance(hs_validator().validate(sign_hs256(header, payload)), Claims)
