"""Taking the bearer token out of a WebSocket upgrade request's headers or subprotocols."""

import re
from collections.abc import Sequence
from typing import Final

from pm_proto.contract import BEARER_SUBPROTOCOL_PREFIX, MAX_TOKEN_BYTES, SUBPROTOCOL

from pm_auth.exceptions import InvalidAuthScheme, InvalidToken, MissingAuthHeader

__all__ = [
    "BEARER_SUBPROTOCOL_PREFIX",
    "SUBPROTOCOL",
    "extract_token",
    "parse_subprotocol_header",
    "token_from_authorization",
    "token_from_subprotocols",
]

_HTTP_WHITESPACE: Final = " \t"
_VISIBLE_ASCII: Final = re.compile(r"[!-~]+")


def token_from_authorization(header: str | None) -> str:
    """Returns the token of an `Authorization: Bearer <token>` header value.

    The scheme is matched case-insensitively; spaces or tabs around the token are
    tolerated, anything else around or inside it is not. A token is one run of
    visible ASCII characters (a JWT is base64url and dots).

    Raises:
        MissingAuthHeader: The header is absent, empty or blank.
        InvalidAuthScheme: The scheme is not Bearer (e.g. `Basic ...`, or a bare token).
        InvalidToken: Bearer without a token, with whitespace, control or non-ASCII
            characters in it, or a token longer than `MAX_TOKEN_BYTES`.
    """
    if header is None or not header.strip(_HTTP_WHITESPACE):
        raise MissingAuthHeader()
    # A tab inside the token stays whitespace, so it is still refused below.
    scheme, _, token = header.strip(_HTTP_WHITESPACE).replace("\t", " ").partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidAuthScheme()
    return _checked_token(token.strip(" "))


def token_from_subprotocols(offered: Sequence[str]) -> str | None:
    """Returns the token of the `pm.bearer.<token>` subprotocol, or None when none is offered.

    Browsers cannot set headers on a WebSocket, so they offer `pm.v1` and
    `pm.bearer.<jwt>` instead; the server then selects `pm.v1` (never echo the
    bearer entry back: it would put the token in the response).
    Subprotocol names are case-sensitive (RFC 6455); entries should already be
    split and stripped (see `parse_subprotocol_header`).

    Raises:
        InvalidToken: A bearer entry is offered without `pm.v1`, twice, with an
            empty or malformed token, or with a token longer than `MAX_TOKEN_BYTES`.
        TypeError: `offered` is a single string rather than a sequence of names.
    """
    if isinstance(offered, str):
        raise TypeError("offered must be a sequence of subprotocol names, not one string")
    bearer = [name for name in offered if name.startswith(BEARER_SUBPROTOCOL_PREFIX)]
    if not bearer:
        return None
    if len(bearer) > 1:
        raise InvalidToken("more than one bearer subprotocol offered")
    if SUBPROTOCOL not in offered:
        raise InvalidToken(f"the bearer subprotocol requires offering {SUBPROTOCOL!r} too")
    return _checked_token(bearer[0].removeprefix(BEARER_SUBPROTOCOL_PREFIX))


def extract_token(authorization: str | None, offered_subprotocols: Sequence[str]) -> str:
    """Returns the upgrade request's token, from the header when it has one, else the subprotocols.

    A blank `Authorization` header counts as absent. When the header is present the
    subprotocols are not looked at.

    Raises:
        MissingAuthHeader: Neither carries a token.
        InvalidAuthScheme: See `token_from_authorization`.
        InvalidToken: See `token_from_authorization` and `token_from_subprotocols`.
    """
    if authorization is not None and authorization.strip(_HTTP_WHITESPACE):
        return token_from_authorization(authorization)
    token = token_from_subprotocols(offered_subprotocols)
    if token is None:
        raise MissingAuthHeader()
    return token


def parse_subprotocol_header(value: str | None) -> list[str]:
    """Splits a `Sec-WebSocket-Protocol` header value into subprotocol names, in order.

    Splits on commas and strips spaces and tabs; empty entries are dropped. Join
    repeated headers with `,` before calling. Never fails.
    """
    if value is None:
        return []
    return [name for name in (part.strip(_HTTP_WHITESPACE) for part in value.split(",")) if name]


def _checked_token(token: str) -> str:
    if not token:
        raise InvalidToken("the token is empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    # Visible ASCII only: rules out whitespace, controls and look-alike characters.
    if not _VISIBLE_ASCII.fullmatch(token):
        raise InvalidToken("the token contains characters a JWT cannot have")
    return token
