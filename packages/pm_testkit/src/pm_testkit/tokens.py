"""Tenants, signed tokens and the secrets a test server and its clients share."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

__all__ = ["Credentials", "make_token", "new_tenant"]

SigningKey = str | bytes | Any
"""An HS* secret, or a private key object of `cryptography` for RS*/ES* (what PyJWT takes)."""


def new_tenant(prefix: str = "t") -> str:
    """A tenant id no other test uses, so that tests sharing a server or a Redis stay apart."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_token(
    key: SigningKey,
    tenant: str,
    user: str = "u1",
    *,
    expires_in: float = 3600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A JWT with `sub`, `tenant_id`, `iat` and `exp`, plus `claims` (which win).

    `expires_in` may be negative for a token that expired already. `algorithm`
    is PyJWT's name (HS256 with a secret, RS256 with an RSA private key, ...).
    """
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": user,
        "tenant_id": tenant,
        "iat": now,
        "exp": int(now + expires_in),
        **claims,
    }
    return jwt.encode(body, key, algorithm=algorithm)


@dataclass(frozen=True, slots=True)
class Credentials:
    """The JWT secret and API keys a server is started with, and that its clients use."""

    jwt_secret: str
    publish_key: str
    admin_key: str

    @classmethod
    def generate(cls) -> Credentials:
        """Fresh random values: a 48-character secret, `pub-…` and `adm-…` keys."""
        return cls(
            jwt_secret=secrets.token_urlsafe(36),
            publish_key="pub-" + secrets.token_urlsafe(24),
            admin_key="adm-" + secrets.token_urlsafe(24),
        )

    def token(
        self, tenant: str, user: str = "u1", *, expires_in: float = 3600, **claims: Any
    ) -> str:
        """An HS256 token of `tenant` and `user` signed with `jwt_secret` (see `make_token`)."""
        return make_token(self.jwt_secret, tenant, user, expires_in=expires_in, **claims)
