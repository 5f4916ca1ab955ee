"""Tokens on the client side: when to refresh, reading a token's expiry, minting dev tokens."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import jwt
from pm_proto.contract import MAX_ID_CHARS, MIN_HS256_SECRET_BYTES, is_valid_id

TokenProvider = Callable[[], Awaitable[str]]
"""Returns a fresh token for the connection's user; called before the first connection,
after a 4001 or 401, and before the current token expires (proactive refresh)."""


def token_expiry(token: str) -> float | None:
    """The token's `exp` claim in seconds since the epoch, read WITHOUT verifying it.

    Only for scheduling a refresh: the server is the judge of validity. Returns
    None when the token is not a JWT or has no numeric `exp`.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


def refresh_delay(expires_at: float, now: float, refresh_before_secs: float) -> float:
    """Seconds from `now` until a token expiring at `expires_at` should be replaced.

    That is `refresh_before_secs` before expiry, but never sooner than half the
    remaining life, so that a token shorter-lived than `refresh_before_secs` is
    not refreshed in a tight loop; 0 when it has already expired.
    """
    remaining = expires_at - now
    if remaining <= 0:
        return 0.0
    return max(remaining - refresh_before_secs, remaining / 2)


def mint_token(
    *,
    tenant_id: str,
    user_id: str,
    key: str,
    algorithm: Literal["HS256", "RS256"] = "HS256",
    roles: Sequence[str] = (),
    ttl_secs: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A signed development token with the claims of SPEC §3.

    Args:
        tenant_id: The `tenant_id` claim (a valid id: 1..128 characters, no control characters).
        user_id: The `sub` claim (a valid id, too).
        key: The HS256 secret, or the RS256 private key as PEM text.
        algorithm: HS256 or RS256, matching the server's `JWT_SECRET` or `JWT_PUBLIC_KEY`.
        roles: The `roles` claim.
        ttl_secs: Lifetime; `exp` is `iat + ttl_secs`, rounded up to a whole second.
        issuer: The `iss` claim, when the server checks `JWT_ISSUER`.
        audience: The `aud` claim, when the server checks `JWT_AUDIENCE`.
        now: The issue time (seconds since the epoch); the wall clock by default.

    Raises:
        ValueError: An HS256 secret shorter than 32 bytes, ids out of bounds, or
            a non-positive `ttl_secs`.
        jwt.InvalidKeyError: `key` is not an RSA private key for RS256.
    """
    for name, value in (("tenant_id", tenant_id), ("user_id", user_id)):
        if not is_valid_id(value):
            raise ValueError(
                f"{name} must be 1 to {MAX_ID_CHARS} characters without control characters, "
                f"got {len(value)} characters"
            )
    if not (math.isfinite(ttl_secs) and ttl_secs > 0):
        raise ValueError(f"ttl_secs must be a positive number of seconds, got {ttl_secs}")
    if algorithm == "HS256" and len(key.encode()) < MIN_HS256_SECRET_BYTES:
        raise ValueError(
            f"the HS256 secret is {len(key.encode())} bytes; at least "
            f"{MIN_HS256_SECRET_BYTES} are required (the server refuses shorter ones)"
        )
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "iat": issued,
        "exp": issued + math.ceil(ttl_secs),
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm=algorithm)
