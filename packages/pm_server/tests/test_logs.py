import io
import json
import logging
import re
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from pm_server.logs import AccessLogger, configure_logging, redact_tokens
from pm_ws.events import ConnectionId, TenantId, UserId
from pm_ws.log_context import ConnectionLogContext, connection_log_context

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJ1MSIsInRlbmFudF9pZCI6InQxIiwiZXhwIjo0MTAyNDQ0ODAwfQ"
    ".c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)
CONTEXT = ConnectionLogContext(
    tenant_id=TenantId("t1"), connection_id=ConnectionId("c1"), user_id=UserId("u1")
)
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) (\S+) (.*)")


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def connection_context() -> Iterator[None]:
    token = connection_log_context.set(CONTEXT)
    yield
    connection_log_context.reset(token)


def configured(fmt: str, *, level: str = "info", colored: bool | None = False) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level=level, fmt=fmt, colored=colored, stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# Text


def test_text_line_has_utc_time_level_logger_and_message() -> None:
    stream = configured("text")

    logging.getLogger("pm_ws.connection").info("opened %s", "now")

    match = TEXT_LINE.fullmatch(stream.getvalue().rstrip("\n"))
    assert match is not None
    assert match.groups() == ("INFO", "pm_ws.connection", "opened now")
    assert "\x1b[" not in stream.getvalue()


def test_text_level_is_colored_on_request() -> None:
    stream = configured("text", colored=True)

    logging.getLogger("pm_ws").warning("slow")

    assert " \x1b[33mWARNING\x1b[0m pm_ws slow" in stream.getvalue()


def test_text_is_colored_automatically_only_on_a_terminal() -> None:
    terminal = TerminalStream()
    configure_logging(fmt="text", colored=None, stream=terminal)
    logging.getLogger("pm_ws").info("hello")
    plain = configured("text", colored=None)
    logging.getLogger("pm_ws").info("hello")

    assert "\x1b[32mINFO\x1b[0m" in terminal.getvalue()
    assert "\x1b[" not in plain.getvalue()


@pytest.mark.usefixtures("connection_context")
def test_text_line_carries_the_connection_ids_when_serving_a_connection() -> None:
    stream = configured("text")

    logging.getLogger("pm_ws.connection").info("subscribed")

    assert (
        stream.getvalue()
        .rstrip()
        .endswith("pm_ws.connection subscribed tenant_id=t1 connection_id=c1 user_id=u1")
    )


def test_text_line_has_no_connection_ids_outside_a_connection() -> None:
    stream = configured("text")

    logging.getLogger("pm_ws.connection").info("started")

    assert "tenant_id" not in stream.getvalue()


def test_text_shows_extra_fields_quoted_when_needed() -> None:
    stream = configured("text")

    logging.getLogger("pm_server").info("ready", extra={"port": 3000, "reason": "two words"})

    assert stream.getvalue().rstrip().endswith('ready port=3000 reason="two words"')


def test_records_below_the_level_are_dropped() -> None:
    stream = configured("text", level="WARNING")

    logging.getLogger("pm_ws").info("quiet")
    logging.getLogger("pm_ws").error("loud")

    assert "quiet" not in stream.getvalue()
    assert "loud" in stream.getvalue()


def test_configuring_again_replaces_the_previous_handler() -> None:
    first = configured("text")
    second = configured("json")

    logging.getLogger("pm_ws").info("once")

    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_unknown_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        configure_logging(level="loud")
    with pytest.raises(ValueError, match="format"):
        configure_logging(fmt="xml")


# JSON


def test_json_lines_are_objects_with_time_level_logger_and_message() -> None:
    stream = configured("json")

    logging.getLogger("pm_ws.broker").info("connected to %s", "redis", extra={"latency_ms": 1.5})

    [line] = json_lines(stream)
    assert isinstance(line["ts"], str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert line == {
        "ts": line["ts"],
        "level": "INFO",
        "logger": "pm_ws.broker",
        "message": "connected to redis",
        "latency_ms": 1.5,
    }


@pytest.mark.usefixtures("connection_context")
def test_json_lines_carry_the_connection_ids_when_serving_a_connection() -> None:
    stream = configured("json")

    logging.getLogger("pm_ws.connection").info("subscribed")

    [line] = json_lines(stream)
    assert (line["tenant_id"], line["connection_id"], line["user_id"]) == ("t1", "c1", "u1")


def test_json_lines_have_no_connection_ids_outside_a_connection() -> None:
    stream = configured("json")

    logging.getLogger("pm_ws.connection").info("started")

    [line] = json_lines(stream)
    assert "tenant_id" not in line
    assert "connection_id" not in line


def test_explicit_ids_win_over_the_context(connection_context: None) -> None:
    stream = configured("json")

    logging.getLogger("pm_ws.registry").info("closing", extra={"connection_id": "c9"})

    [line] = json_lines(stream)
    assert (line["tenant_id"], line["connection_id"]) == ("t1", "c9")


def test_json_exception_is_one_string_field() -> None:
    stream = configured("json")

    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")

    [line] = json_lines(stream)
    assert isinstance(line["exc"], str)
    assert "Traceback" in line["exc"]
    assert "ValueError: boom" in line["exc"]


def test_json_holds_values_json_cannot_as_strings() -> None:
    stream = configured("json")

    logging.getLogger("pm_server").info("odd", extra={"where": {"a"}})

    [line] = json_lines(stream)
    assert line["where"] == "{'a'}"


def test_warnings_are_logged_as_json() -> None:
    stream = configured("json")

    logging.getLogger("py.warnings").warning("DeprecationWarning: old\n  old()")

    [line] = json_lines(stream)
    assert line["message"] == "DeprecationWarning: old\n  old()"


# Access log


async def test_access_log_is_structured_and_never_prints_the_query_string() -> None:
    stream = configured("json")
    app = web.Application()

    async def refuse(_request: web.Request) -> web.Response:
        return web.Response(status=401, text="no")

    app.router.add_get("/ws", refuse)
    runner = web.AppRunner(app, access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        _, port = runner.addresses[0]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/ws?token={JWT}&x=secret-query") as response,
        ):
            assert response.status == 401
    finally:
        await runner.cleanup()

    [line] = [entry for entry in json_lines(stream) if entry["logger"] == "aiohttp.access"]
    assert line["message"] == "GET /ws?<redacted> 401"
    assert line["method"] == "GET"
    assert line["path"] == "/ws?<redacted>"
    assert line["status"] == 401
    assert isinstance(line["size"], int)
    assert line["size"] > len("no")
    assert line["remote"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)
    assert "secret-query" not in stream.getvalue()
    assert "token=" not in stream.getvalue()


def test_access_logger_is_disabled_with_the_info_level() -> None:
    configured("text", level="warning")

    assert not AccessLogger(logging.getLogger("aiohttp.access"), "").enabled


# Tokens


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_jwt_logged_anywhere_at_debug_never_appears(fmt: str) -> None:
    stream = configured(fmt, level="debug")

    logging.getLogger("aiohttp.server").debug("upgrade with %s", JWT)
    logging.getLogger("pm_ws.connection").debug("token", extra={"token": JWT})
    logging.getLogger().debug(f"subprotocols: pm.v1, pm.bearer.{JWT}")
    logging.getLogger("websockets.client").debug("> Authorization: Bearer %s", JWT)
    try:
        raise RuntimeError(f"bad token {JWT}")
    except RuntimeError:
        logging.getLogger("pm_ws").debug("failed", exc_info=True)

    output = stream.getvalue()
    assert JWT not in output
    assert JWT.split(".")[1] not in output
    assert output.count("<redacted>") >= 5
    if fmt == "json":
        assert len(json_lines(stream)) == 5


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer <redacted>"),
        ("authorization: bearer s3cr3t-k3y==", "authorization: bearer <redacted>"),
        ("offered pm.bearer.abc123", "offered pm.bearer.<redacted>"),
        (f"token={JWT}&x=1", "token=<redacted>&x=1"),
        ("eyJ alone is fine, so is a.b.c", "eyJ alone is fine, so is a.b.c"),
    ],
)
def test_redact_tokens(text: str, shown: str) -> None:
    assert redact_tokens(text) == shown
