"""Routing client commands to the handlers the embedding application registers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pm_auth import TenantContext

from pm_ws.exceptions import ProtocolError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who sent a command: the connection's trusted identity and its id."""

    tenant: TenantContext
    connection_id: str


CommandHandler = Callable[[CommandContext, bytes], Awaitable[bytes]]
"""A handler takes the sender and the command body and returns the result body.

Raise `ProtocolError` for a refusal the client should see (its code and message
are sent as they are); anything else is a bug: logged with its traceback and
answered with `INTERNAL_ERROR`, no details.
"""


class CommandRouter:
    """Maps command names to handlers. No business handler ships with the engine."""

    def __init__(self) -> None:
        self._handlers: dict[str, CommandHandler] = {}

    def register(self, name: str, handler: CommandHandler) -> None:
        """Route `name` to `handler`.

        Raises:
            ValueError: the name is already taken.
        """
        if name in self._handlers:
            raise ValueError(f"command {name!r} is already registered")
        self._handlers[name] = handler

    def command(self, name: str) -> Callable[[CommandHandler], CommandHandler]:
        """Decorator form of `register`."""

        def decorate(handler: CommandHandler) -> CommandHandler:
            self.register(name, handler)
            return handler

        return decorate

    async def dispatch(
        self, context: CommandContext, name: str, body: bytes, *, request_id: str = ""
    ) -> bytes:
        """Run the handler for `name`.

        Raises:
            ProtocolError: UNKNOWN_COMMAND for a name with no handler, the handler's own
                `ProtocolError`, or INTERNAL_ERROR when the handler failed otherwise.
        """
        handler = self._handlers.get(name)
        if handler is None:
            raise ProtocolError(
                "no handler for this command",
                code="UNKNOWN_COMMAND",
                field="command.name",
                request_id=request_id,
            )
        try:
            return await handler(context, body)
        except ProtocolError as exc:
            exc.request_id = request_id
            raise
        except Exception as exc:
            logger.exception("command handler %r failed", name)
            raise ProtocolError(
                "the command failed", code="INTERNAL_ERROR", request_id=request_id
            ) from exc
