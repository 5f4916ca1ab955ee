"""How the text of each kind of setting is read and bounded; `config` declares which kind each is.

A parser takes a variable's value, stripped and not empty, and returns the setting
or raises `ValueError` whose message says what the variable accepts (`expected
..., got '...'`), on one line and never quoting a secret; `config.Variable` puts
the variable's name in front.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import urlsplit

from pm_proto.contract import MAX_ID_CHARS, is_valid_id

from pm_server.logs import redact_url

_T = TypeVar("_T")
_Choice = TypeVar("_Choice", bound=str)

Parser = Callable[[str], _T]
"""The setting of a non-empty, stripped value; `ValueError` saying what is accepted otherwise."""

MIN_API_KEY_CHARS: Final = 16
KEYGEN_COMMAND: Final = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
"""How to make a good secret or API key; error messages and the README suggest it."""

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_BOOL_WORDS: Final = "true/false/1/0/yes/no/on/off"
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_DOTTED_DIGITS: Final = re.compile(r"[0-9.]+")


def text(value: str) -> str | None:
    """The value as it is (an issuer, an audience, a key before its own checks)."""
    return value


def whole(high: int, *, zero_ok: bool = False) -> Parser[int]:
    """A whole number from 1 (or 0 when `zero_ok`, meaning off) to `high`, ASCII digits only."""
    low = 0 if zero_ok else 1

    def parse(value: str) -> int:
        if value.isascii() and value.isdigit() and low <= int(value) <= high:
            return int(value)
        off = " (0 = off)" if zero_ok else ""
        raise ValueError(f"expected a whole number from {low} to {high}{off}, got {value!r}")

    return parse


def seconds(high: float, *, zero_ok: bool = False) -> Parser[float]:
    """A finite number of seconds above 0 (or from 0 when `zero_ok`) and at most `high`."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        low_ok = number >= 0 if zero_ok else number > 0
        if math.isfinite(number) and low_ok and number <= high:
            return number
        bounds = f"from 0 to {high}" if zero_ok else f"greater than 0 and at most {high}"
        raise ValueError(f"expected a number of seconds {bounds}, got {value!r}")

    return parse


def boolean(value: str) -> bool:
    """true/1/yes/on or false/0/no/off, in any case."""
    word = value.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected one of {_BOOL_WORDS}, got {value!r}")


def boolean_or_auto(value: str) -> bool | None:
    """A `boolean`, or `auto` (None): the program decides."""
    word = value.lower()
    if word == "auto":
        return None
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise ValueError(f"expected one of {_BOOL_WORDS} or auto, got {value!r}")


def choice(choices: tuple[_Choice, ...]) -> Parser[_Choice]:
    """One of `choices`, in any case."""

    def parse(value: str) -> _Choice:
        for option in choices:
            if value.lower() == option:
                return option
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return parse


def bind_addr(value: str) -> tuple[str, int]:
    """`host:port`: an IPv4 address or a host name, or an IPv6 address in brackets."""
    accepted = "expected host:port with a port from 1 to 65535, e.g. 0.0.0.0:3000 or [::1]:3000"
    if value.startswith("["):
        host, close, port = value[1:].partition("]:")
        host_ok = bool(close) and _is_ip(host, version=6)
    else:
        host, colon, port = value.rpartition(":")
        host_ok = bool(colon) and (
            _is_ip(host, version=4)
            or (_HOSTNAME.fullmatch(host) is not None and not _DOTTED_DIGITS.fullmatch(host))
        )
        if ":" in host:
            accepted += " (an IPv6 address goes in brackets)"
    if host_ok and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:
        return host, int(port)
    raise ValueError(f"{accepted}, got {value!r}")


def broker_url(url: str) -> str:
    """`memory://`, or a `redis://` or `rediss://` URL with a host; refusals hide passwords."""
    accepted = "expected memory://, redis://[:password@]host[:port][/db] or rediss://..."
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{accepted}, got {shown!r}") from None
    scheme = parts.scheme.lower()
    if scheme == "memory" and url.lower() == "memory://":
        return "memory://"
    db = parts.path.removeprefix("/")
    if (
        scheme in ("redis", "rediss")
        and parts.hostname
        and (port is None or port > 0)
        and (db == "" or db.isdigit())
    ):
        return url
    raise ValueError(f"{accepted}, got {shown!r}")


def api_key(key: str) -> str | None:
    """At least 16 visible ASCII characters; a refusal never shows the key."""
    # Visible ASCII only: a key must travel in an `Authorization: Bearer` header.
    if len(key) < MIN_API_KEY_CHARS or not all("!" <= c <= "~" for c in key):
        raise ValueError(
            f"expected at least {MIN_API_KEY_CHARS} visible ASCII characters, no spaces "
            f"(e.g. {KEYGEN_COMMAND}), or unset to turn the endpoint off"
        )
    return key


def ws_origins(value: str) -> tuple[str, ...] | None:
    """Comma-separated origins, normalised as browsers send them; `*` is None (any)."""
    entries = _items(value, "origins")
    if entries == ("*",):
        return None
    return tuple(dict.fromkeys(_origin(entry) for entry in entries))


def cors_origins(value: str) -> tuple[str, ...]:
    """Comma-separated origins, normalised as browsers send them; `*` stays `("*",)`."""
    entries = _items(value, "origins")
    if entries == ("*",):
        return entries
    return tuple(dict.fromkeys(_origin(entry) for entry in entries))


def tenants(value: str) -> frozenset[str] | None:
    """Comma-separated tenant ids, each a valid id of the contract (`pm_proto.contract`)."""
    entries = _items(value, "tenant ids")
    for entry in entries:
        if not is_valid_id(entry):
            raise ValueError(
                f"expected tenant ids of 1 to {MAX_ID_CHARS} characters without control "
                f"characters, got {entry!r}"
            )
    return frozenset(entries)


def _items(value: str, what: str) -> tuple[str, ...]:
    entries = [entry.strip() for entry in value.split(",")]
    if "" in entries:
        raise ValueError(f"expected comma-separated {what} with no empty entry, got {value!r}")
    return tuple(dict.fromkeys(entries))


def _is_ip(value: str, *, version: int) -> bool:
    try:
        return ipaddress.ip_address(value).version == version
    except ValueError:
        return False


def _origin(value: str) -> str:
    """`value` as browsers send it in `Origin`: lower-case, no default port, no path."""
    default_ports = {"http": 80, "https": 443}
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if (
        parts is None
        or not parts.scheme
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            "expected * or comma-separated origins like https://app.example.com "
            f"(scheme://host[:port], no path), got {value!r}"
        )
    scheme = parts.scheme.lower()
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None or default_ports.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
