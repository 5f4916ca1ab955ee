"""Token claims and the trusted tenant identity a connection runs as."""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Self

from pm_proto.contract import MAX_ID_CHARS, has_control_characters

from pm_auth.exceptions import InvalidClaim

__all__ = ["Claims", "TenantContext"]

_MAX_NUMERIC_DATE: Final = 253_402_300_799
"""9999-12-31T23:59:59Z: later dates are nonsense and would overflow millisecond int64s."""


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a verified token, in bounds by construction.

    Construction checks the bounds (ids as `pm_proto.contract.is_valid_id` has
    them: 1..128 characters without control characters or lone surrogates;
    numeric dates within 0..year 9999; roles non-empty ids) and raises
    `InvalidClaim` naming the field otherwise. Use `from_payload` to build one
    from a decoded JSON payload, which also checks types.

    Attributes:
        sub: The user id.
        tenant_id: The tenant the user acts for.
        exp: Expiry, seconds since the epoch.
        iat: Issue time, seconds since the epoch.
        nbf: Not-before time, seconds since the epoch, if the token has one.
        jti: The token's unique id, if it has one.
        roles: The user's roles; empty when the token has none.
    """

    sub: str
    tenant_id: str
    exp: int
    iat: int
    nbf: int | None = None
    jti: str | None = None
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_id("sub", self.sub)
        _check_id("tenant_id", self.tenant_id)
        _check_numeric_date("exp", self.exp)
        _check_numeric_date("iat", self.iat)
        if self.nbf is not None:
            _check_numeric_date("nbf", self.nbf)
        if self.jti is not None:
            _check_id("jti", self.jti)
        for role in self.roles:
            _check_id("roles", role)

    @classmethod
    def from_payload(cls, payload: Mapping[str, object]) -> Self:
        """Builds claims from a JWT payload, checking presence, types and bounds.

        `exp`, `iat`, `sub` and `tenant_id` are required (a JSON `null` counts as
        missing). Numeric dates may be JSON integers or finite fractions: `exp` and
        `iat` round down, `nbf` rounds up, so rounding never extends a token's
        validity. `roles` must be a list of strings. Unknown claims are ignored.
        This checks shapes only; expiry against a clock is the validator's job.

        Raises:
            InvalidClaim: A claim is missing, of the wrong type or out of bounds;
                `field` names it.
        """
        roles = payload.get("roles")
        if roles is None:
            roles = []
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise InvalidClaim("roles", "claim 'roles' must be a list of strings")
        jti = payload.get("jti")
        return cls(
            sub=_required_str(payload, "sub"),
            tenant_id=_required_str(payload, "tenant_id"),
            exp=_numeric_date(payload, "exp", math.floor),
            iat=_numeric_date(payload, "iat", math.floor),
            nbf=None if payload.get("nbf") is None else _numeric_date(payload, "nbf", math.ceil),
            jti=None if jti is None else _required_str(payload, "jti"),
            roles=tuple(roles),
        )


@dataclass(frozen=True, slots=True)
class TenantContext:
    """The trusted identity a connection runs as, taken from a verified token.

    Everything a connection needs to scope its work to one tenant and to close
    itself when the token runs out; hand it around instead of raw claims.

    Attributes:
        tenant_id: The tenant every subscription and event of the connection is scoped to.
        user_id: The user (the token's `sub`).
        roles: The user's roles, possibly empty.
        expires_at: The token's `exp`, seconds since the epoch (without leeway).
        jti: The token's id, if it has one.
    """

    tenant_id: str
    user_id: str
    roles: tuple[str, ...]
    expires_at: float
    jti: str | None = None

    @classmethod
    def from_claims(cls, claims: Claims) -> Self:
        """Takes the identity out of validated claims; never fails."""
        return cls(
            tenant_id=claims.tenant_id,
            user_id=claims.sub,
            roles=claims.roles,
            expires_at=float(claims.exp),
            jti=claims.jti,
        )

    @property
    def expires_at_ms(self) -> int:
        """Expiry in milliseconds since the epoch, as `Welcome.token_expires_at_ms` carries it."""
        return round(self.expires_at * 1000)


def _check_id(field: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidClaim(field, f"claim {field!r} must be a string")
    if not 1 <= len(value) <= MAX_ID_CHARS:
        raise InvalidClaim(field, f"claim {field!r} must be 1 to {MAX_ID_CHARS} characters")
    if has_control_characters(value):
        raise InvalidClaim(field, f"claim {field!r} must not contain control characters")


def _check_numeric_date(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidClaim(field, f"claim {field!r} must be an integer")
    if not 0 <= value <= _MAX_NUMERIC_DATE:
        raise InvalidClaim(field, f"claim {field!r} is out of range")


def _required_str(payload: Mapping[str, object], field: str) -> str:
    value = payload.get(field)
    if value is None:
        raise InvalidClaim(field, f"claim {field!r} is required")
    if not isinstance(value, str):
        raise InvalidClaim(field, f"claim {field!r} must be a string")
    return value


def _numeric_date(
    payload: Mapping[str, object], field: str, rounding: Callable[[float], int]
) -> int:
    value = payload.get(field)
    if value is None:
        raise InvalidClaim(field, f"claim {field!r} is required")
    # bool is an int subclass; true/false are not dates.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClaim(field, f"claim {field!r} must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidClaim(field, f"claim {field!r} must be a finite number")
        return rounding(value)
    return value
