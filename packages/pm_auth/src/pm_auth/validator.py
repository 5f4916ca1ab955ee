"""JWT verification for exactly one algorithm (HS256 or RS256) against an injected clock.

How a refused token maps to errors, checked in this order:

- longer than `pm_proto.contract.MAX_TOKEN_BYTES` → `InvalidToken`, before any parsing;
- not ASCII, not three base64url segments, header or payload not a JSON object,
  a header `alg` other than the validator's (`none`, `RS512`, `HS256` against an
  RS256 validator, ...), or a signature that does not verify → `JwtDecodeFailed`:
  we could not obtain an authentic payload;
- a required claim (`exp`, `iat`, `sub`, `tenant_id`) missing, a claim of the wrong
  type or out of bounds, `iss` or `aud` missing or not the configured value →
  `InvalidClaim` with `field` naming the claim;
- `exp` plus the leeway at or before now → `TokenExpired`;
- `nbf` or `iat` later than now plus the leeway → `InvalidToken`: authentic,
  well-formed, but not valid yet (usually clock skew at the issuer).

PyJWT verifies the signature, `iss` and `aud`; time checks are ours so that they
use the injected clock. When no audience is configured, `aud` is not checked at all
(an optional check, as with Centrifugo), rather than PyJWT's default of refusing
every token that carries one.
"""

import math
import time
from collections.abc import Callable
from typing import Final, Literal, Self

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm
from pm_proto.contract import MAX_TOKEN_BYTES, MIN_HS256_SECRET_BYTES

from pm_auth.claims import Claims
from pm_auth.exceptions import InvalidClaim, InvalidKey, InvalidToken, JwtDecodeFailed, TokenExpired

__all__ = [
    "DEFAULT_LEEWAY_SECS",
    "MIN_HS256_SECRET_BYTES",
    "JwtAlgorithm",
    "JwtValidator",
]

_MIN_RSA_KEY_BITS: Final = 2048

DEFAULT_LEEWAY_SECS: Final = 30.0

_REQUIRED_CLAIMS: Final = ("exp", "iat", "sub", "tenant_id")

JwtAlgorithm = Literal["HS256", "RS256"]
"""The algorithms a validator can be built for."""


class JwtValidator:
    """Verifies JWTs signed with one algorithm and key, and returns their claims.

    Build one with `hs256` or `rs256` at start-up and share it: `validate` is
    synchronous, CPU-only (microseconds for HS256, a little more for RS256) and keeps
    no state between calls. A token must name exactly the validator's algorithm in its
    header, so `alg: none` and algorithm-confusion tokens (HS256 signed with the RSA
    public key text) are refused. See the module docstring for the error mapping.

    Args:
        algorithm: `"HS256"` or `"RS256"`.
        key: The HS256 secret, or the RS256 public key as PEM text.
        issuer: When set, tokens must carry exactly this `iss`.
        audience: When set, tokens must list this value in `aud`; when unset, `aud`
            is ignored.
        leeway_secs: Tolerated clock skew for `exp`, `nbf` and `iat`, seconds, >= 0.
        clock: Returns the current time in seconds since the epoch.

    Raises:
        InvalidKey: The key is unusable for the algorithm (see `hs256`, `rs256`).
        ValueError: Unknown algorithm, or a negative or non-finite leeway.
    """

    __slots__ = ("_algorithm", "_audience", "_clock", "_issuer", "_jwt", "_key", "_leeway_secs")

    def __init__(
        self,
        algorithm: JwtAlgorithm,
        key: str | bytes,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_secs: float = DEFAULT_LEEWAY_SECS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(leeway_secs) and leeway_secs >= 0):
            raise ValueError("leeway_secs must be a finite number >= 0")
        self._key: bytes | RSAPublicKey
        if algorithm == "HS256":
            self._key = _load_hs256_secret(key)
        elif algorithm == "RS256":
            self._key = _load_rs256_public_key(key)
        else:
            raise ValueError(f"unsupported algorithm {algorithm!r}: use HS256 or RS256")
        self._algorithm: JwtAlgorithm = algorithm
        self._issuer = issuer
        self._audience = audience
        self._leeway_secs = float(leeway_secs)
        self._clock = clock
        self._jwt = jwt.PyJWT(
            options={
                "require": list(_REQUIRED_CLAIMS),
                "verify_signature": True,
                # Time checks run against the injected clock in `validate`.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": issuer is not None,
                "verify_aud": audience is not None,
                # Claims.from_payload checks these and names the field.
                "verify_sub": False,
                "verify_jti": False,
                "enforce_minimum_key_length": True,
            }
        )

    @classmethod
    def hs256(
        cls,
        secret: str | bytes,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_secs: float = DEFAULT_LEEWAY_SECS,
        clock: Callable[[], float] = time.time,
    ) -> Self:
        """Builds a validator for HMAC-SHA256 tokens sharing `secret` with the issuer.

        Args:
            secret: At least 32 bytes (a `str` counts its UTF-8 bytes). Not PEM,
                SSH or JWK text: such a "secret" is a public key, which anyone can
                read and forge tokens with.
            issuer: See the class docstring.
            audience: See the class docstring.
            leeway_secs: See the class docstring.
            clock: See the class docstring.

        Raises:
            InvalidKey: The secret is too short or looks like a key document.
        """
        return cls(
            "HS256", secret, issuer=issuer, audience=audience, leeway_secs=leeway_secs, clock=clock
        )

    @classmethod
    def rs256(
        cls,
        public_key_pem: str | bytes,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_secs: float = DEFAULT_LEEWAY_SECS,
        clock: Callable[[], float] = time.time,
    ) -> Self:
        """Builds a validator for RSA-SHA256 tokens, verified with the issuer's public key.

        Args:
            public_key_pem: An RSA public key of at least 2048 bits as PEM
                (`-----BEGIN PUBLIC KEY-----`). A private key is refused: a gateway
                only verifies, and should not hold what can sign tokens.
            issuer: See the class docstring.
            audience: See the class docstring.
            leeway_secs: See the class docstring.
            clock: See the class docstring.

        Raises:
            InvalidKey: The PEM is unparseable, private, not RSA or under 2048 bits.
        """
        return cls(
            "RS256",
            public_key_pem,
            issuer=issuer,
            audience=audience,
            leeway_secs=leeway_secs,
            clock=clock,
        )

    @property
    def algorithm(self) -> JwtAlgorithm:
        """The one algorithm tokens must be signed with."""
        return self._algorithm

    @property
    def leeway_secs(self) -> float:
        """Tolerated clock skew, seconds: a token is usable until `exp` plus this."""
        return self._leeway_secs

    def validate(self, token: str) -> Claims:
        """Verifies `token` and returns its claims.

        The token must be signed with this validator's algorithm and key, carry
        `exp`, `iat`, `sub` and `tenant_id` in bounds, match the configured issuer
        and audience, and be valid now (per the clock) within the leeway.

        Raises:
            InvalidToken: Too long, or not valid yet (`nbf`/`iat` in the future).
            JwtDecodeFailed: Malformed, another algorithm, or a bad signature.
            InvalidClaim: A claim is missing, mistyped, out of bounds, or `iss`/`aud`
                does not match; `field` names it.
            TokenExpired: `exp` plus the leeway has passed.
        """
        # A JWT is ASCII, so its characters are its bytes.
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        if not token.isascii():
            raise JwtDecodeFailed()
        try:
            payload = self._jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
            )
        except jwt.MissingRequiredClaimError as exc:
            # exc.claim is one of the names we asked for (_REQUIRED_CLAIMS, iss, aud).
            raise InvalidClaim(exc.claim, f"claim {exc.claim!r} is required") from None
        except jwt.InvalidIssuerError:
            raise InvalidClaim("iss", "the token's issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise InvalidClaim("aud", "the token's audience is not accepted") from None
        except jwt.PyJWTError:
            # Deliberately unchained: PyJWT's text may quote token contents.
            raise JwtDecodeFailed() from None
        claims = Claims.from_payload(payload)
        self._check_times(claims)
        return claims

    def _check_times(self, claims: Claims) -> None:
        now = self._clock()
        if claims.exp + self._leeway_secs <= now:
            raise TokenExpired()
        if claims.nbf is not None and claims.nbf > now + self._leeway_secs:
            raise InvalidToken("the token is not valid yet")
        if claims.iat > now + self._leeway_secs:
            raise InvalidToken("the token was issued in the future")

    def __repr__(self) -> str:
        # Never shows the key: this repr may end up in logs.
        return (
            f"JwtValidator(algorithm={self._algorithm!r}, issuer={self._issuer!r}, "
            f"audience={self._audience!r}, leeway_secs={self._leeway_secs!r})"
        )


def _load_hs256_secret(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_HS256_SECRET_BYTES:
        raise InvalidKey(
            f"the HS256 secret is {len(key)} bytes; at least {MIN_HS256_SECRET_BYTES} are "
            "required (make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
    except jwt.InvalidKeyError:
        raise InvalidKey(
            "the HS256 secret looks like a public/private key or JWK document, which must "
            "not be used as a shared secret; use RS256 with a public key instead"
        ) from None
    return key


def _load_rs256_public_key(pem: str | bytes) -> RSAPublicKey:
    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    if b"PRIVATE KEY-----" in data:
        raise InvalidKey(
            "RS256 needs the issuer's public key, not a private key "
            "(derive it with: openssl rsa -in private.pem -pubout)"
        )
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKey(
            "could not parse the RS256 public key: expected PEM text starting with "
            "-----BEGIN PUBLIC KEY-----"
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise InvalidKey("the RS256 public key must be an RSA key")
    if key.key_size < _MIN_RSA_KEY_BITS:
        raise InvalidKey(
            f"the RS256 public key has {key.key_size} bits; at least {_MIN_RSA_KEY_BITS} "
            "are required"
        )
    return key
