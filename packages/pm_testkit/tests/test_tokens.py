"""Tokens carry the claims a pm-server checks, signed with HS256 or RS256."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from pm_testkit import Credentials, make_token, new_tenant


def test_a_token_has_sub_tenant_iat_and_exp_and_extra_claims() -> None:
    token = make_token("s" * 48, "acme", "alice", expires_in=60, role="admin")

    claims = jwt.decode(token, "s" * 48, algorithms=["HS256"])

    assert (claims["sub"], claims["tenant_id"], claims["role"]) == ("alice", "acme", "admin")
    assert claims["exp"] - claims["iat"] == 60
    assert abs(claims["iat"] - time.time()) < 5


def test_an_rs256_token_verifies_with_the_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    token = make_token(key, "acme", algorithm="RS256")

    claims = jwt.decode(token, key.public_key(), algorithms=["RS256"])
    assert claims["tenant_id"] == "acme"


def test_credentials_sign_with_their_secret_and_differ_each_time() -> None:
    first, second = Credentials.generate(), Credentials.generate()

    token = first.token("acme", "bob", expires_in=-1)

    claims = jwt.decode(
        token, first.jwt_secret, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims["sub"] == "bob"
    assert len(first.jwt_secret) == 48
    assert first != second


def test_new_tenants_are_distinct() -> None:
    assert len({new_tenant() for _ in range(100)}) == 100
