"""Who may open a WebSocket: the upgrade's admission ladder, with no socket in sight.

An upgrade request climbs origin → draining → token → tenant → slot, and the
first rung it fails answers it with an HTTP refusal (SPEC §3): 403, 503, 401,
403, then 429 or 503. The order is part of the contract: an origin that is not
allowed is refused before anything else is looked at (a browser page of another
site learns nothing about the token), a draining process refuses without
validating tokens, and no slot is taken for a request refused earlier.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from pm_auth import (
    SUBPROTOCOL,
    AuthError,
    JwtValidator,
    TenantContext,
    extract_token,
    parse_subprotocol_header,
    token_from_subprotocols,
)

from pm_ws.events import TenantId
from pm_ws.exceptions import LimitExceeded
from pm_ws.registry import ConnectionRegistry, SlotReservation
from pm_ws.session import Session
from pm_ws.shutdown import ShutdownCoordinator

__all__ = [
    "BROKER_UNAVAILABLE",
    "NOT_AN_UPGRADE",
    "ORIGIN_NOT_ALLOWED",
    "SERVER_SHUTTING_DOWN",
    "TENANT_NOT_ALLOWED",
    "Admission",
    "Admitted",
    "Refusal",
    "TenantCheck",
    "over_limit",
    "unauthorized",
]

TenantCheck = Callable[[TenantContext], Awaitable[bool]]
"""Decides whether an authenticated tenant may connect here (403 when it answers False)."""

_BEARER_CHALLENGE: Final = ("WWW-Authenticate", 'Bearer realm="pm-realtime"')


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upgrade answered with an HTTP error instead of a WebSocket.

    `reason` is the `reason` label of `pm_ws_connections_refused_total`; the
    body a client reads is `body()`; `headers` go with the response as they are.
    """

    status: int
    code: str
    message: str
    reason: str
    field: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, str]:
        """The JSON body: `{"code", "message"}`, and `"field"` when one is named."""
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


ORIGIN_NOT_ALLOWED: Final = Refusal(403, "ORIGIN_NOT_ALLOWED", "origin not allowed", "origin")
SERVER_SHUTTING_DOWN: Final = Refusal(
    503, "SERVER_SHUTTING_DOWN", "server is shutting down", "draining"
)
TENANT_NOT_ALLOWED: Final = Refusal(403, "TENANT_NOT_ALLOWED", "tenant not allowed", "tenant")
NOT_AN_UPGRADE: Final = Refusal(400, "INVALID_MESSAGE", "expected a WebSocket upgrade", "bad")
"""An admitted request that is no WebSocket handshake (only the HTTP layer can tell)."""
BROKER_UNAVAILABLE: Final = Refusal(
    503, "BROKER_UNAVAILABLE", "event broker unavailable", "broker_unavailable"
)
"""The tenant's stream could not be joined: the client may retry the upgrade later."""


def unauthorized(error: AuthError) -> Refusal:
    """401 for a missing, malformed, expired or bad token, with a Bearer challenge."""
    return Refusal(401, error.code, error.message, "auth", error.field, (_BEARER_CHALLENGE,))


def over_limit(error: LimitExceeded) -> Refusal:
    """429 at the tenant's connection limit; 503 at the process's, or once draining began."""
    if error.scope == "tenant":
        return Refusal(429, error.code, error.message, "limit_tenant")
    code = "SERVER_SHUTTING_DOWN" if error.scope == "draining" else error.code
    return Refusal(503, code, error.message, f"limit_{error.scope}")


@dataclass(frozen=True, slots=True)
class Admitted:
    """An upgrade that passed every rung: who connects, how, and the slot held for it.

    `subprotocol` is the one the upgrade answer selects (`pm.v1` when the token
    came as a subprotocol, else None). The slot stays reserved until `release`,
    which must run on every path — refusal after admission, failed handshake,
    crash, close: use the value as a context manager.
    """

    context: TenantContext
    subprotocol: str | None
    reservation: SlotReservation[Session]

    @property
    def tenant_id(self) -> TenantId:
        """The tenant the token is for."""
        return TenantId(self.context.tenant_id)

    def release(self) -> None:
        """Give the slot back (and forget the session that held it); idempotent."""
        self.reservation.release()

    def __enter__(self) -> Admitted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reservation.release()


class Admission:
    """The admission ladder of one gateway, as a function of headers and its state.

    `allowed_origins` None admits any `Origin` (and requests without one); a set
    admits only those. `tenant_check` None admits every tenant with a valid
    token. Nothing here reads a socket or writes a response: the adapter
    translates the request's headers in and the `Refusal` out.
    """

    def __init__(
        self,
        *,
        jwt: JwtValidator,
        registry: ConnectionRegistry[Session],
        shutdown: ShutdownCoordinator,
        allowed_origins: frozenset[str] | None = None,
        tenant_check: TenantCheck | None = None,
    ) -> None:
        self._jwt = jwt
        self._registry = registry
        self._shutdown = shutdown
        self._allowed_origins = allowed_origins
        self._tenant_check = tenant_check

    async def admit(self, headers: Mapping[str, str]) -> Admitted | Refusal:
        """Decide on an upgrade request from its headers; an `Admitted` holds a slot.

        `headers` are looked up by their canonical names (`Origin`,
        `Authorization`, `Sec-WebSocket-Protocol`): pass a case-insensitive
        mapping, as aiohttp's `request.headers` is, when names may come in any
        case. Asynchronous only because the tenant check may be; the slot is
        reserved after it, synchronously, so however many upgrades race, at most
        the limit are admitted.
        """
        origin = headers.get("Origin")
        allowed = self._allowed_origins
        if allowed is not None and origin is not None and origin not in allowed:
            return ORIGIN_NOT_ALLOWED
        if self._shutdown.draining:
            return SERVER_SHUTTING_DOWN
        offered = parse_subprotocol_header(headers.get("Sec-WebSocket-Protocol"))
        try:
            token = extract_token(headers.get("Authorization"), offered)
            context = TenantContext.from_claims(self._jwt.validate(token))
            # A malformed `pm.bearer.` entry is refused even beside a good header.
            bearer = token_from_subprotocols(offered)
        except AuthError as exc:
            return unauthorized(exc)
        if self._tenant_check is not None and not await self._tenant_check(context):
            return TENANT_NOT_ALLOWED
        try:
            reservation = self._registry.reserve(TenantId(context.tenant_id))
        except LimitExceeded as exc:
            return over_limit(exc)
        return Admitted(context, SUBPROTOCOL if bearer is not None else None, reservation)
