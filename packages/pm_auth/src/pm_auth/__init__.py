"""Claims, JWT validation, token extraction, auth errors and per-connection rate limiting."""

from pm_auth.claims import Claims, TenantContext
from pm_auth.exceptions import (
    AuthError,
    InvalidAuthScheme,
    InvalidClaim,
    InvalidKey,
    InvalidToken,
    JwtDecodeFailed,
    MissingAuthHeader,
    RateLimitExceeded,
    TokenExpired,
)
from pm_auth.extraction import (
    BEARER_SUBPROTOCOL_PREFIX,
    SUBPROTOCOL,
    extract_token,
    parse_subprotocol_header,
    token_from_authorization,
    token_from_subprotocols,
)
from pm_auth.rate_limit import ConnectionRateLimiter, RateLimiterFactory
from pm_auth.validator import (
    DEFAULT_LEEWAY_SECS,
    MIN_HS256_SECRET_BYTES,
    JwtAlgorithm,
    JwtValidator,
)

__all__ = [
    "BEARER_SUBPROTOCOL_PREFIX",
    "DEFAULT_LEEWAY_SECS",
    "MIN_HS256_SECRET_BYTES",
    "SUBPROTOCOL",
    "AuthError",
    "Claims",
    "ConnectionRateLimiter",
    "InvalidAuthScheme",
    "InvalidClaim",
    "InvalidKey",
    "InvalidToken",
    "JwtAlgorithm",
    "JwtDecodeFailed",
    "JwtValidator",
    "MissingAuthHeader",
    "RateLimitExceeded",
    "RateLimiterFactory",
    "TenantContext",
    "TokenExpired",
    "extract_token",
    "parse_subprotocol_header",
    "token_from_authorization",
    "token_from_subprotocols",
]
