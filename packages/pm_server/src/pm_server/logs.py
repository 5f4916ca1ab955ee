"""Process logging: text or JSON lines, connection ids on every record, tokens redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Final, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from pm_ws.log_context import connection_log_context

CONNECTION_FIELDS: Final = ("tenant_id", "connection_id", "user_id")
REDACTED: Final = "<redacted>"

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_COLORS: Final = {
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET: Final = "\x1b[0m"
# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# RFC 6750 token68 characters: never a quote or backslash, so a JSON line stays JSON.
_BEARER: Final = re.compile(r"\b(bearer)(\s+|\.)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_BARE: Final = re.compile(r"[^\s\"=]+")


def redact_tokens(text: str) -> str:
    """`text` with every JWT and every `Bearer <credential>` replaced by `<redacted>`.

    Defence in depth: nothing should log a token, but a library might format a
    header or a subprotocol (`pm.bearer.<jwt>`) into a message. A word that follows
    "Bearer" in prose is redacted too; that is the price of never missing a key.
    """
    text = _JWT.sub(REDACTED, text)
    return _BEARER.sub(lambda match: f"{match[1]}{match[2]}{REDACTED}", text)


class ConnectionContextFilter(logging.Filter):
    """Adds tenant_id, connection_id and user_id to records logged while serving a connection.

    The ids come from `pm_ws.log_context.connection_log_context`, read in the
    logging call's own context, so libraries never format them into messages.
    Ids passed explicitly with `extra=` win. Records are never dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the current connection's ids, if any, to `record`."""
        context = connection_log_context.get()
        if context is not None:
            for name in CONNECTION_FIELDS:
                if not hasattr(record, name):
                    setattr(record, name, getattr(context, name))
        return True


class TextFormatter(logging.Formatter):
    """`2026-11-25T18:00:00.123Z INFO logger message key=value ...`, in UTC.

    Connection ids come first among the `key=value` fields, then `extra` fields;
    values with spaces or quotes are JSON-quoted. A traceback follows on its own
    lines. Level names are colored with ANSI codes when `colored`. The whole
    output passes through `redact_tokens`.
    """

    def __init__(self, *, colored: bool = False) -> None:
        super().__init__()
        self._colored = colored

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one line (plus its traceback, if any)."""
        level = record.levelname
        if self._colored:
            level = f"{_COLORS.get(record.levelno, '')}{level}{_RESET}"
        line = f"{_timestamp(record)} {level} {record.name} {record.getMessage()}"
        pairs = [f"{name}={_text_value(value)}" for name, value in _fields(record).items()]
        if pairs:
            line = f"{line} {' '.join(pairs)}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return redact_tokens(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: `ts`, `level`, `logger`, `message`, the connection ids when set, every
    `extra` field (values JSON can't hold become strings), `exc` with the
    traceback and `stack` with the stack when present. Tokens are redacted.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON object."""
        document: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _fields(record).items():
            document.setdefault(name, value)
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return redact_tokens(json.dumps(document, default=str, ensure_ascii=False))


class AccessLogger(AbstractAccessLogger):
    """aiohttp's `access_log_class`: one record per request, as structured fields.

    Logs at info on aiohttp's access logger, so the root handler formats it as
    text or JSON like every other line. Fields: method, path, status, size (bytes
    sent, headers included, as aiohttp's `%b`), duration_ms, remote. The query
    string is never printed: a path with one shows as `/ws?<redacted>` (a token
    could be in it, even though it is refused there). The path is the raw,
    percent-encoded one, so it can't inject line breaks.
    """

    __slots__ = ()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Log one finished request; `time` is its duration in seconds."""
        path, _, query = request.raw_path.partition("?")
        if query:
            path = f"{path}?{REDACTED}"
        self.logger.info(
            "%s %s %s",
            request.method,
            path,
            response.status,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status,
                "size": response.body_length,
                "duration_ms": round(time * 1000, 3),
                "remote": request.remote,
            },
        )

    @property
    def enabled(self) -> bool:
        """Whether aiohttp should time requests for this logger at all."""
        return self.logger.isEnabledFor(logging.INFO)


class ThrottledLog:
    """At most one record per `interval_secs` for a condition that can repeat without end.

    For what a flood can trigger thousands of times a second (malformed requests,
    `accept()` out of descriptors): the first occurrence is logged at once, later
    ones within the interval are only counted, and the next record that is
    logged says how many were held back (also as a `suppressed` field). A
    flood therefore costs one line per interval, never a full disk. The count
    of the last interval of a flood is reported only if the condition recurs.
    Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        interval_secs: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_secs <= 0:
            raise ValueError("interval_secs must be positive")
        self._logger = logger
        self._level = level
        self._interval = interval_secs
        self._clock = clock
        self._next_at: float | None = None
        self._held = 0

    def log(self, message: str, *args: object) -> bool:
        """Log `message % args` unless a record went out less than an interval ago.

        Returns whether a record was written; when not, the occurrence is counted
        for the next record.
        """
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            self._held += 1
            return False
        held, self._held = self._held, 0
        self._next_at = now + self._interval
        if not held:
            self._logger.log(self._level, message, *args)
            return True
        self._logger.log(
            self._level,
            f"{message} (and %d more since the last report)",
            *args,
            held,
            extra={"suppressed": held},
        )
        return True


class _ServerHandler(logging.StreamHandler[TextIO]):
    """The root handler `configure_logging` installs, told apart so it can be replaced."""


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "text",
    colored: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records, aiohttp's and `warnings` included, to `stream` in one format.

    Only the server calls this; libraries just log. Calling it again replaces the
    handler it installed before and leaves other handlers (pytest's, say) alone.

    Args:
        level: debug, info, warning, error or critical (any case).
        fmt: `text` or `json`. With `json` every record becomes one JSON object,
            so all the process writes to `stream` through logging is JSON.
        colored: Color level names in text; `None` colors when `stream` is a tty.
        stream: Where lines go; `sys.stderr` (looked up at call time) by default.

    Raises:
        ValueError: For an unknown level or format; `load_settings` has already
            rejected those with a clearer message.
    """
    stream = sys.stderr if stream is None else stream
    numeric_level = _LEVELS.get(level.lower())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter(colored=_isatty(stream) if colored is None else colored)
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    handler = _ServerHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ConnectionContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServerHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    logging.captureWarnings(True)


def redact_url(url: str) -> str:
    """`url` with any password (in the user info or a `password=` query) redacted.

    User info without a colon is redacted whole: Redis clients would read it as a
    user name, but people paste passwords there.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc and "password" not in parts.query.lower():
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if k.lower() == "password" else v) for k, v in pairs], safe="<>"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _fields(record: logging.LogRecord) -> dict[str, object]:
    present = {name: getattr(record, name) for name in CONNECTION_FIELDS if hasattr(record, name)}
    for name, value in vars(record).items():
        if name not in _RECORD_ATTRIBUTES and name not in present:
            present[name] = value
    return present


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _text_value(value: object) -> str:
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False
