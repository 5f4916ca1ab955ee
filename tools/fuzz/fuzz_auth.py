#!/usr/bin/env python3
"""Fuzz target `auth`: token extraction, claims parsing and JWT validation (pm_auth).

The first byte picks what the rest is (mod 5):

- 0: an `Authorization` header value, through `token_from_authorization`;
- 1: a `Sec-WebSocket-Protocol` header value, through `parse_subprotocol_header`,
  `token_from_subprotocols` and `extract_token`;
- 2: a JWT payload as JSON, through `Claims.from_payload`;
- 3: a token string, through `JwtValidator.validate` (HS256);
- 4: a JWT header and payload as JSON text separated by a NUL byte, signed with
  the validator's secret and then validated — so the fuzzer reaches the claims
  checks behind a valid signature, with any header (`alg`, `typ`, `kid`...).

Expected: a token, claims within SPEC §3's bounds, or an `AuthError`. Anything
else (a `TypeError`, a `KeyError`, an `OverflowError`...) is a crash.

    uv run --group fuzz python tools/fuzz/fuzz_auth.py CORPUS_DIR [libFuzzer flags]
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import unicodedata

from jsonmutator import mutate_json
from pm_auth import (
    AuthError,
    Claims,
    JwtValidator,
    extract_token,
    parse_subprotocol_header,
    token_from_authorization,
    token_from_subprotocols,
)
from protomutator import RawMutate, mutate_string

HEADER, SUBPROTOCOLS, PAYLOAD, TOKEN, SIGNED = range(5)
FORMS = 5
SECRET = b"fuzzing-secret-of-at-least-32-bytes!"
NOW = 1_900_000_000
MAX_NUMERIC_DATE = 253_402_300_799
VISIBLE_ASCII = re.compile(r"[!-~]+")
REFUSAL_CODES = frozenset({"INVALID_TOKEN", "JWT_DECODE_FAILED", "TOKEN_EXPIRED", "INVALID_CLAIM"})
CLAIM_KEYS = ("sub", "tenant_id", "exp", "iat", "nbf", "jti", "roles", "iss", "aud")
HEADER_KEYS = ("alg", "typ", "kid", "crit", "b64", "jku", "cty")
DATES = (NOW, NOW - 30, NOW + 30, NOW + 29.5, MAX_NUMERIC_DATE, MAX_NUMERIC_DATE + 1, 2**63, -1)
SCHEMES = ("Bearer", "bearer", "BEARER", "Basic", "Bearer:", "", " Bearer", "Bearer\t")
VALIDATORS = (
    JwtValidator.hs256(SECRET, clock=lambda: NOW),
    JwtValidator.hs256(SECRET, issuer="https://issuer.example", audience="pm", clock=lambda: NOW),
)


def test_one_input(data: bytes) -> None:
    form, rest = (data[0] % FORMS, data[1:]) if data else (HEADER, b"")
    text = rest.decode("utf-8", "surrogateescape")
    if form == HEADER:
        check_authorization(text)
    elif form == SUBPROTOCOLS:
        check_subprotocols(text)
    elif form == PAYLOAD:
        check_payload(rest)
    elif form == TOKEN:
        check_token(text, VALIDATORS[len(rest) % 2])
    else:
        header, _, payload = rest.partition(b"\x00")
        check_token(signed(header, payload), VALIDATORS[data[0] // FORMS % 2])


def check_authorization(header: str) -> None:
    try:
        token = token_from_authorization(header)
    except AuthError:
        return
    check_transported(token)
    assert header.strip(" \t")[:6].lower() == "bearer", header


def check_subprotocols(value: str) -> None:
    names = parse_subprotocol_header(value)
    for name in names:
        assert name, names
        assert name == name.strip(" \t"), names
        assert "," not in name, names
    try:
        token = token_from_subprotocols(names)
    except AuthError:
        pass
    else:
        if token is not None:
            check_transported(token)
    with contextlib.suppress(AuthError):
        check_transported(extract_token(None, names))


def check_transported(token: str) -> None:
    assert 1 <= len(token) <= 8192
    assert VISIBLE_ASCII.fullmatch(token), token


def check_payload(data: bytes) -> None:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(payload, dict):
        return
    try:
        claims = Claims.from_payload(payload)
    except AuthError as refusal:
        check_claim_refusal(refusal)
        return
    check_claims(claims)


def check_token(token: str, validator: JwtValidator) -> None:
    try:
        claims = validator.validate(token)
    except AuthError as refusal:
        check_refusal(refusal)
        return
    check_claims(claims)
    assert claims.exp + validator.leeway_secs > NOW
    assert claims.iat <= NOW + validator.leeway_secs
    assert claims.nbf is None or claims.nbf <= NOW + validator.leeway_secs
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256", header


def check_refusal(refusal: AuthError) -> None:
    assert refusal.code in REFUSAL_CODES, refusal.code
    assert refusal.message


def check_claim_refusal(refusal: AuthError) -> None:
    assert refusal.code == "INVALID_CLAIM", refusal.code
    assert refusal.field, refusal


def check_claims(claims: Claims) -> None:
    for value in (claims.sub, claims.tenant_id, *claims.roles):
        assert valid_id(value), claims
    assert claims.jti is None or valid_id(claims.jti), claims
    for date in (claims.exp, claims.iat):
        assert isinstance(date, int), claims
        assert 0 <= date <= MAX_NUMERIC_DATE, claims
    assert claims.nbf is None or 0 <= claims.nbf <= MAX_NUMERIC_DATE, claims


def valid_id(value: str) -> bool:
    """SPEC §3: 1..128 characters, no control characters or lone surrogates."""
    return 1 <= len(value) <= 128 and not any(
        unicodedata.category(c) in ("Cc", "Cs") for c in value
    )


def signed(header: bytes, payload: bytes) -> str:
    """A JWS compact token over exactly these header and payload bytes, HMAC-SHA256 signed."""
    signing_input = _b64url(header) + b"." + _b64url(payload)
    signature = hmac.new(SECRET, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64url(signature)).decode("ascii")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mutate(data: bytes, max_size: int, seed: int, raw_mutate: RawMutate) -> bytes:
    """Mutate claims and JOSE headers as JSON documents, Authorization headers by their parts."""
    rng = random.Random(seed)
    form, rest = (data[0], data[1:]) if data else (HEADER, b"")
    room = max(0, max_size - 1)
    if form % FORMS == PAYLOAD:
        rest = mutate_json(rest, room, rng, raw_mutate, CLAIM_KEYS, DATES)
    elif form % FORMS == SIGNED:
        header, _, payload = rest.partition(b"\x00")
        if rng.random() < 0.3:
            header = mutate_json(header, room, rng, raw_mutate, HEADER_KEYS)
        else:
            payload = mutate_json(payload, room, rng, raw_mutate, CLAIM_KEYS, DATES)
        rest = header + b"\x00" + payload
    elif form % FORMS == HEADER and rng.random() < 0.5:
        _, _, token = rest.decode("utf-8", "replace").partition(" ")
        if rng.random() < 0.5:
            token = mutate_string(token, rng, raw_mutate)
        separator = rng.choice((" ", "\t", "  "))
        rest = f"{rng.choice(SCHEMES)}{separator}{token}".encode()
    else:
        rest = raw_mutate(rest, room)
    return bytes([form]) + rest[:room]


def main() -> None:
    from libfuzzer import fuzz

    fuzz(test_one_input, mutate)


if __name__ == "__main__":
    main()
