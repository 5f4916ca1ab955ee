import asyncio
import logging

import pytest
from pm_auth import TenantContext
from pm_ws.commands import CommandContext, CommandRouter
from pm_ws.exceptions import ProtocolError

CONTEXT = CommandContext(
    tenant=TenantContext(tenant_id="t1", user_id="u1", roles=("member",), expires_at=2e9),
    connection_id="c1",
)


async def echo(context: CommandContext, body: bytes) -> bytes:
    return b"%s/%s:%s" % (context.tenant.tenant_id.encode(), context.connection_id.encode(), body)


async def refusal(
    router: CommandRouter, name: str, body: bytes = b"", request_id: str = "r1"
) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        await router.dispatch(CONTEXT, name, body, request_id=request_id)
    return info.value


async def test_a_registered_handler_gets_the_sender_and_body_and_its_result_is_returned() -> None:
    router = CommandRouter()
    router.register("board.move", echo)

    result = await router.dispatch(CONTEXT, "board.move", b"card-7", request_id="r1")

    assert result == b"t1/c1:card-7"


async def test_the_decorator_registers_the_handler_under_its_name() -> None:
    router = CommandRouter()

    @router.command("board.echo")
    async def handler(context: CommandContext, body: bytes) -> bytes:
        return body[::-1]

    assert await router.dispatch(CONTEXT, "board.echo", b"abc") == b"cba"
    assert await handler(CONTEXT, b"xy") == b"yx"


async def test_each_name_reaches_only_its_own_handler() -> None:
    router = CommandRouter()

    async def first(context: CommandContext, body: bytes) -> bytes:
        return b"first"

    async def second(context: CommandContext, body: bytes) -> bytes:
        return b"second"

    router.register("a.first", first)
    router.register("a.second", second)

    assert await router.dispatch(CONTEXT, "a.second", b"") == b"second"
    assert await router.dispatch(CONTEXT, "a.first", b"") == b"first"


async def test_registering_a_name_twice_raises_and_keeps_the_first_handler() -> None:
    router = CommandRouter()
    router.register("board.move", echo)

    async def other(context: CommandContext, body: bytes) -> bytes:
        return b"other"

    with pytest.raises(ValueError, match=r"board\.move"):
        router.register("board.move", other)
    with pytest.raises(ValueError, match="already registered"):
        router.command("board.move")(other)

    assert await router.dispatch(CONTEXT, "board.move", b"x") == b"t1/c1:x"


async def test_an_unknown_command_is_refused_with_unknown_command_and_the_request_id() -> None:
    router = CommandRouter()
    router.register("board.move", echo)

    error = await refusal(router, "board.delete", request_id="r42")

    assert error.code == "UNKNOWN_COMMAND"
    assert error.request_id == "r42"
    assert error.field == "command.name"


async def test_a_crashing_handler_is_answered_with_internal_error_and_no_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = CommandRouter()

    @router.command("board.crash")
    async def crash(context: CommandContext, body: bytes) -> bytes:
        raise ValueError("secret /etc/path")

    with caplog.at_level(logging.ERROR, logger="pm_ws.commands"):
        error = await refusal(router, "board.crash", request_id="r7")

    assert error.code == "INTERNAL_ERROR"
    assert error.request_id == "r7"
    assert error.field is None
    for public in (error.message, str(error)):
        assert "secret" not in public
        assert "/etc" not in public
    (record,) = [r for r in caplog.records if r.name == "pm_ws.commands"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert "board.crash" in record.getMessage()
    assert "secret /etc/path" in caplog.text
    assert "Traceback" in caplog.text


async def test_a_handler_protocol_error_reaches_the_client_as_it_is_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = CommandRouter()

    @router.command("board.move")
    async def refuse(context: CommandContext, body: bytes) -> bytes:
        raise ProtocolError("card is locked", code="INVALID_MESSAGE", field="card_id")

    error = await refusal(router, "board.move", request_id="r9")

    assert error.code == "INVALID_MESSAGE"
    assert error.message == "card is locked"
    assert error.field == "card_id"
    assert error.request_id == "r9"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_cancelling_a_command_is_not_turned_into_an_error() -> None:
    router = CommandRouter()

    @router.command("board.slow")
    async def cancelled(context: CommandContext, body: bytes) -> bytes:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await router.dispatch(CONTEXT, "board.slow", b"")
