"""Authentication errors, each carrying a stable wire code and a client-safe message.

The tree::

    Exception
    ├── AuthError               a client's credentials were refused: code, message, field
    │   ├── MissingAuthHeader   MISSING_AUTH_HEADER  no token offered at all
    │   ├── InvalidAuthScheme   INVALID_AUTH_SCHEME  Authorization scheme is not Bearer
    │   ├── InvalidToken        INVALID_TOKEN        badly transported, too big, not valid yet
    │   ├── JwtDecodeFailed     JWT_DECODE_FAILED    malformed, other alg, bad signature
    │   ├── TokenExpired        TOKEN_EXPIRED        exp plus leeway has passed
    │   ├── InvalidClaim        INVALID_CLAIM        claim missing, mistyped, out of bounds
    │   └── RateLimitExceeded   RATE_LIMIT_EXCEEDED  the connection's token bucket is empty
    └── ValueError
        └── InvalidKey          an operator built a validator with an unusable key

`AuthError` messages go to clients as they are: they never contain the token, key
material or library internals. `InvalidKey` is raised at construction, for operators.
"""

from typing import ClassVar

__all__ = [
    "AuthError",
    "InvalidAuthScheme",
    "InvalidClaim",
    "InvalidKey",
    "InvalidToken",
    "JwtDecodeFailed",
    "MissingAuthHeader",
    "RateLimitExceeded",
    "TokenExpired",
]


class AuthError(Exception):
    """A client's credentials or request rate were refused.

    Catch this one class to handle every client-facing auth failure; raise a subclass.
    `code` is the stable wire code, `message` is safe to send to the client as is,
    and `field` names the offending claim when there is one. The base class itself
    reports `INVALID_TOKEN`, so an unclassified failure still maps to a stable code.

    Args:
        message: Client-safe text; the subclass's default when omitted. Never pass
            the token or anything derived from it.
        field: The claim or input the error is about, if any.
    """

    code: ClassVar[str] = "INVALID_TOKEN"
    default_message: ClassVar[str] = "authentication failed"

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message: str = self.default_message if message is None else message
        self.field: str | None = field
        super().__init__(self.message)


class MissingAuthHeader(AuthError):
    """No token was offered: neither an `Authorization` header nor a bearer subprotocol."""

    code = "MISSING_AUTH_HEADER"
    default_message = "no token: send 'Authorization: Bearer <jwt>' or the pm.bearer subprotocol"


class InvalidAuthScheme(AuthError):
    """The `Authorization` header uses a scheme other than `Bearer` (e.g. `Basic`)."""

    code = "INVALID_AUTH_SCHEME"
    default_message = "the Authorization scheme must be Bearer"


class InvalidToken(AuthError):
    """The token was refused before or after verification for a reason other than decoding.

    Raised for a badly transported token (empty, whitespace or non-ASCII inside,
    ambiguous subprotocols), a token over the size limit, and an authentic token
    that is not valid yet (`nbf` or `iat` in the future beyond the leeway).
    """

    code = "INVALID_TOKEN"
    default_message = "the token is invalid"


class JwtDecodeFailed(AuthError):
    """The token is not a JWT this validator can verify.

    Raised for a malformed token (segments, base64url, JSON), a header naming another
    algorithm (including `none`), and a signature that does not verify with the key.
    """

    code = "JWT_DECODE_FAILED"
    default_message = "the token could not be decoded or verified"


class TokenExpired(AuthError):
    """The token's `exp`, plus the validator's leeway, has passed; the client needs a new one."""

    code = "TOKEN_EXPIRED"
    default_message = "the token has expired"


class InvalidClaim(AuthError):
    """A claim is missing, of the wrong type, out of bounds or not the expected value.

    Args:
        field: The claim's name (`exp`, `tenant_id`, `iss`, ...); always set.
        message: Client-safe text; defaults to one naming the claim.
    """

    code = "INVALID_CLAIM"

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(f"claim {field!r} is invalid" if message is None else message, field=field)


class RateLimitExceeded(AuthError):
    """The connection sent more frames than its token bucket allows; the frame is not processed."""

    code = "RATE_LIMIT_EXCEEDED"
    default_message = "rate limit exceeded"


class InvalidKey(ValueError):
    """A validator was built with an unusable key: too short, unparseable, wrong type or size.

    Meant for operators at start-up, never for clients. The message says what is
    wrong and how to fix it but never contains the secret or key material.
    """
