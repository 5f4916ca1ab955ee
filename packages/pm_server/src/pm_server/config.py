"""Server settings read from the environment, validated, and redacted for the start-up log."""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, Literal, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dotenv import dotenv_values
from pm_auth import MIN_HS256_SECRET_BYTES, InvalidKey, JwtValidator

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
_Choice = TypeVar("_Choice", bound=str)

MIN_API_KEY_CHARS: Final = 16
DEV_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 3000
MAX_WORKERS: Final = 1024

_UINT32_MAX: Final = 2**32 - 1
_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
_MAX_ID_CHARS: Final = 128
_LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_BOOL_WORDS: Final = "true/false/1/0/yes/no/on/off"
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_DOTTED_DIGITS: Final = re.compile(r"[0-9.]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_KEYGEN_COMMAND: Final = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
REDACTED: Final = "<redacted>"
UNSET: Final = "<unset>"


class ConfigError(ValueError):
    """A setting that stops start-up.

    `str()` is always one line, `VARIABLE: what it accepts, got 'value'`, and never
    contains a secret's value, so the command line can print it as is and exit 2.
    """

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(variable, message)
        self.variable = variable
        self.message = message

    def __str__(self) -> str:
        return f"{self.variable}: {self.message}"


class Variable(NamedTuple):
    """An environment variable `load_settings` reads and its default as documented."""

    name: str
    default: str


_JWT_REQUIRED: Final = "required, exactly one (except --dev)"

VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("JWT_SECRET", _JWT_REQUIRED),
    Variable("JWT_PUBLIC_KEY", _JWT_REQUIRED),
    Variable("JWT_PUBLIC_KEY_FILE", _JWT_REQUIRED),
    Variable("JWT_ISSUER", "unset"),
    Variable("JWT_AUDIENCE", "unset"),
    Variable("JWT_LEEWAY_SECS", "30"),
    Variable("BIND_ADDR", "0.0.0.0:3000"),
    Variable("MAX_CONNECTIONS_PER_TENANT", "1000"),
    Variable("MAX_CONNECTIONS", "10000"),
    Variable("RATE_LIMIT_MAX_REQUESTS", "100"),
    Variable("RATE_LIMIT_WINDOW_SECS", "60"),
    Variable("RATE_LIMIT_MAX_VIOLATIONS", "20"),
    Variable("SEND_QUEUE_SIZE", "1024"),
    Variable("MAX_MESSAGE_BYTES", "65536"),
    Variable("MAX_SUBSCRIPTIONS_PER_CONNECTION", "1000"),
    Variable("HEARTBEAT_INTERVAL_SECS", "30"),
    Variable("HEARTBEAT_TIMEOUT_SECS", "10"),
    Variable("SHUTDOWN_TIMEOUT_SECS", "30"),
    Variable("HTTP_HEADER_TIMEOUT_SECS", "10"),
    Variable("MAX_PENDING_UPGRADES_PER_IP", "0"),
    Variable("MAX_AUTH_FAILURES_PER_IP", "0"),
    Variable("AUTH_FAILURE_WINDOW_SECS", "60"),
    Variable("BROKER_URL", "memory://"),
    Variable("HISTORY_SIZE", "1000"),
    Variable("HISTORY_TTL_SECS", "300"),
    Variable("WS_ALLOWED_ORIGINS", "any"),
    Variable("CORS_ALLOWED_ORIGINS", "none"),
    Variable("ALLOWED_TENANTS", "any"),
    Variable("PUBLISH_API_KEY", "unset"),
    Variable("ADMIN_API_KEY", "unset"),
    Variable("LOG_LEVEL", "info"),
    Variable("LOG_FORMAT", "text"),
    Variable("LOG_COLORED", "auto"),
    Variable("METRICS_TENANT_LABELS", "false"),
)
"""Every variable `load_settings` reads, in the order the README documents them."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's whole configuration, parsed and validated.

    Build it with `load_settings`; construct it directly only in tests. Field
    defaults are the documented defaults. Exactly one of `jwt_secret` (HS256) and
    `jwt_public_key` (RS256 PEM text) is set: there is no setting that turns
    authentication off, and construction raises `ConfigError` otherwise.

    `ws_allowed_origins` and `allowed_tenants` are `None` for "any";
    `cors_allowed_origins` is empty for "none" and `("*",)` for any origin;
    `publish_api_key` and `admin_api_key` are `None` when that endpoint is off;
    `log_colored` is `None` for "when stderr is a terminal";
    `max_pending_upgrades_per_ip` and `max_auth_failures_per_ip` are 0 for "no
    limit" (the default: behind a proxy every client has the proxy's address).
    Secrets and the public key are left out of `repr()`; log `redacted()` instead.
    """

    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_secs: float = 30.0
    bind_host: str = "0.0.0.0"
    bind_port: int = DEFAULT_PORT
    max_connections_per_tenant: int = 1000
    max_connections: int = 10000
    rate_limit_max_requests: int = 100
    rate_limit_window_secs: float = 60.0
    rate_limit_max_violations: int = 20
    send_queue_size: int = 1024
    max_message_bytes: int = 65536
    max_subscriptions_per_connection: int = 1000
    heartbeat_interval_secs: float = 30.0
    heartbeat_timeout_secs: float = 10.0
    shutdown_timeout_secs: float = 30.0
    http_header_timeout_secs: float = 10.0
    max_pending_upgrades_per_ip: int = 0
    max_auth_failures_per_ip: int = 0
    auth_failure_window_secs: float = 60.0
    broker_url: str = "memory://"
    history_size: int = 1000
    history_ttl_secs: float = 300.0
    ws_allowed_origins: tuple[str, ...] | None = None
    cors_allowed_origins: tuple[str, ...] = ()
    allowed_tenants: frozenset[str] | None = None
    publish_api_key: str | None = field(default=None, repr=False)
    admin_api_key: str | None = field(default=None, repr=False)
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    log_colored: bool | None = None
    metrics_tenant_labels: bool = False
    dev: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        if (self.jwt_secret is None) == (self.jwt_public_key is None):
            raise ConfigError("JWT_SECRET", "exactly one of jwt_secret and jwt_public_key is set")

    def redacted(self) -> dict[str, object]:
        """The configuration as the start-up log shows it, with no secret in it.

        Secrets become `"<redacted>"` (or `"<unset>"`), the public key a size,
        a password in `broker_url` `"<redacted>"`; sets and tuples become lists so
        that the result serialises as JSON.
        """
        shown: dict[str, object] = {}
        for item in fields(self):
            value: object = getattr(self, item.name)
            if item.name in ("jwt_secret", "publish_api_key", "admin_api_key"):
                value = UNSET if value is None else REDACTED
            elif item.name == "jwt_public_key" and isinstance(value, str):
                value = f"<PEM, {len(value.encode())} bytes>"
            elif item.name == "broker_url" and isinstance(value, str):
                value = redact_url(value)
            elif isinstance(value, frozenset):
                value = sorted(value)
            elif isinstance(value, tuple):
                value = list(value)
            shown[item.name] = value
        return shown


def load_settings(
    environ: Mapping[str, str],
    *,
    dev: bool = False,
    workers: int = 1,
    dotenv_path: Path | None = Path(".env"),
) -> Settings:
    """Read and validate every setting of `VARIABLES`.

    Args:
        environ: The process environment; the only source besides the `.env` file.
        dev: `pm-server --dev`: no JWT settings needed (a random HS256 secret is
            made), the bind host is forced to 127.0.0.1, and publish and admin API
            keys are generated when unset so that both APIs work out of the box.
        workers: `pm-server --workers`; more than one needs a shared broker.
        dotenv_path: A `.env` file read when it exists; `environ` wins over it.
            `${VAR}` references in it are not expanded. `None` reads no file.

    Raises:
        ConfigError: For the first invalid, missing or conflicting setting. Empty
            values count as unset; all values are stripped of surrounding spaces.
    """
    values = _Values(_merge(environ, dotenv_path))
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            "--workers", f"expected a whole number from 1 to {MAX_WORKERS}, got {workers}"
        )
    jwt_secret, jwt_public_key = _jwt_keys(values, dev=dev)
    broker_url = _broker_url(values.get("BROKER_URL") or "memory://")
    if workers > 1 and broker_url.startswith("memory:"):
        raise ConfigError(
            "--workers",
            f"{workers} processes need a shared broker such as redis://host:6379/0 in "
            "BROKER_URL; memory:// lives inside one process",
        )
    bind_host, bind_port = _bind_addr(values.get("BIND_ADDR") or f"0.0.0.0:{DEFAULT_PORT}")
    publish_api_key = _api_key(values, "PUBLISH_API_KEY", dev=dev)
    admin_api_key = _api_key(values, "ADMIN_API_KEY", dev=dev)
    return Settings(
        jwt_secret=jwt_secret,
        jwt_public_key=jwt_public_key,
        jwt_issuer=values.get("JWT_ISSUER"),
        jwt_audience=values.get("JWT_AUDIENCE"),
        jwt_leeway_secs=values.seconds("JWT_LEEWAY_SECS", 30.0, high=3600, zero_ok=True),
        bind_host=DEV_HOST if dev else bind_host,
        bind_port=bind_port,
        max_connections_per_tenant=values.whole("MAX_CONNECTIONS_PER_TENANT", 1000, 1_000_000),
        max_connections=values.whole("MAX_CONNECTIONS", 10000, 1_000_000),
        rate_limit_max_requests=values.whole("RATE_LIMIT_MAX_REQUESTS", 100, _UINT32_MAX),
        rate_limit_window_secs=values.seconds("RATE_LIMIT_WINDOW_SECS", 60.0, high=86400),
        rate_limit_max_violations=values.whole("RATE_LIMIT_MAX_VIOLATIONS", 20, 1_000_000),
        send_queue_size=values.whole("SEND_QUEUE_SIZE", 1024, 1_000_000),
        max_message_bytes=values.whole("MAX_MESSAGE_BYTES", 65536, _MAX_MESSAGE_BYTES),
        max_subscriptions_per_connection=values.whole(
            "MAX_SUBSCRIPTIONS_PER_CONNECTION", 1000, 1_000_000
        ),
        heartbeat_interval_secs=values.seconds("HEARTBEAT_INTERVAL_SECS", 30.0, high=3600),
        heartbeat_timeout_secs=values.seconds("HEARTBEAT_TIMEOUT_SECS", 10.0, high=3600),
        shutdown_timeout_secs=values.seconds("SHUTDOWN_TIMEOUT_SECS", 30.0, high=3600),
        http_header_timeout_secs=values.seconds("HTTP_HEADER_TIMEOUT_SECS", 10.0, high=3600),
        max_pending_upgrades_per_ip=values.whole(
            "MAX_PENDING_UPGRADES_PER_IP", 0, 1_000_000, zero_ok=True
        ),
        max_auth_failures_per_ip=values.whole(
            "MAX_AUTH_FAILURES_PER_IP", 0, 1_000_000, zero_ok=True
        ),
        auth_failure_window_secs=values.seconds("AUTH_FAILURE_WINDOW_SECS", 60.0, high=86400),
        broker_url=broker_url,
        history_size=values.whole("HISTORY_SIZE", 1000, 1_000_000),
        history_ttl_secs=values.seconds("HISTORY_TTL_SECS", 300.0, high=7 * 86400),
        ws_allowed_origins=_ws_origins(values),
        cors_allowed_origins=_cors_origins(values),
        allowed_tenants=_tenants(values),
        publish_api_key=publish_api_key,
        admin_api_key=admin_api_key,
        log_level=values.choice("LOG_LEVEL", _LOG_LEVELS, "info"),
        log_format=values.choice("LOG_FORMAT", _LOG_FORMATS, "text"),
        log_colored=values.boolean("LOG_COLORED", None, auto_ok=True),
        metrics_tenant_labels=values.boolean("METRICS_TENANT_LABELS", False) is True,
        dev=dev,
        workers=workers,
    )


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


class _Values:
    """Typed reads of one merged, stripped environment, raising `ConfigError`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def whole(self, name: str, default: int, high: int, *, zero_ok: bool = False) -> int:
        text = self.get(name)
        if text is None:
            return default
        low = 0 if zero_ok else 1
        if text.isascii() and text.isdigit() and low <= int(text) <= high:
            return int(text)
        off = " (0 = off)" if zero_ok else ""
        raise ConfigError(name, f"expected a whole number from {low} to {high}{off}, got {text!r}")

    def seconds(self, name: str, default: float, *, high: float, zero_ok: bool = False) -> float:
        text = self.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value >= 0 if zero_ok else value > 0
        if math.isfinite(value) and low_ok and value <= high:
            return value
        bounds = f"from 0 to {high}" if zero_ok else f"greater than 0 and at most {high}"
        raise ConfigError(name, f"expected a number of seconds {bounds}, got {text!r}")

    def boolean(self, name: str, default: bool | None, *, auto_ok: bool = False) -> bool | None:
        text = self.get(name)
        if text is None:
            return default
        word = text.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        if auto_ok and word == "auto":
            return None
        accepted = f"{_BOOL_WORDS} or auto" if auto_ok else _BOOL_WORDS
        raise ConfigError(name, f"expected one of {accepted}, got {text!r}")

    def choice(self, name: str, choices: tuple[_Choice, ...], default: _Choice) -> _Choice:
        text = self.get(name)
        if text is None:
            return default
        for choice in choices:
            if text.lower() == choice:
                return choice
        raise ConfigError(name, f"expected one of {', '.join(choices)}, got {text!r}")

    def items(self, name: str, what: str) -> tuple[str, ...] | None:
        text = self.get(name)
        if text is None:
            return None
        entries = [entry.strip() for entry in text.split(",")]
        if "" in entries:
            raise ConfigError(
                name, f"expected comma-separated {what} with no empty entry, got {text!r}"
            )
        return tuple(dict.fromkeys(entries))


def _merge(environ: Mapping[str, str], dotenv_path: Path | None) -> Mapping[str, str]:
    if dotenv_path is None or not dotenv_path.is_file():
        return environ
    try:
        from_file = dotenv_values(dotenv_path, interpolate=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(".env", f"cannot read {str(dotenv_path)!r}: {error}") from None
    merged = {name: value for name, value in from_file.items() if value is not None}
    merged.update(environ)
    return merged


def _jwt_keys(values: _Values, *, dev: bool) -> tuple[str | None, str | None]:
    secret = values.get("JWT_SECRET")
    public_key = values.get("JWT_PUBLIC_KEY")
    key_file = values.get("JWT_PUBLIC_KEY_FILE")
    if public_key is not None and key_file is not None:
        raise ConfigError(
            "JWT_PUBLIC_KEY_FILE", "set either JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both"
        )
    key_variable = "JWT_PUBLIC_KEY" if key_file is None else "JWT_PUBLIC_KEY_FILE"
    if secret is not None and (public_key is not None or key_file is not None):
        raise ConfigError(
            "JWT_SECRET",
            f"set either JWT_SECRET (HS256) or {key_variable} (RS256), not both",
        )
    if key_file is not None:
        public_key = _read_key_file(key_file)
    if public_key is not None:
        if dev:
            raise ConfigError(
                key_variable,
                "--dev signs its own tokens with an HS256 secret; unset "
                f"{key_variable} (or run without --dev)",
            )
        return None, _rsa_public_key(key_variable, public_key)
    if secret is not None:
        return _hs256_secret(secret), None
    if dev:
        return secrets.token_urlsafe(48), None
    raise ConfigError(
        "JWT_SECRET",
        f"required: set JWT_SECRET (HS256, at least {MIN_HS256_SECRET_BYTES} bytes) or "
        "JWT_PUBLIC_KEY / JWT_PUBLIC_KEY_FILE (RS256 PEM); "
        "for local use run pm-server --dev",
    )


def _hs256_secret(secret: str) -> str:
    size = len(secret.encode())
    if size < MIN_HS256_SECRET_BYTES:
        raise ConfigError(
            "JWT_SECRET",
            f"expected at least {MIN_HS256_SECRET_BYTES} bytes, got {size}; make one with "
            f"{_KEYGEN_COMMAND}, or run pm-server --dev for local use",
        )
    try:
        JwtValidator.hs256(secret)
    except InvalidKey as error:  # its message never quotes the key
        raise ConfigError("JWT_SECRET", str(error)) from None
    return secret


def _read_key_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError("JWT_PUBLIC_KEY_FILE", f"cannot read {path!r}: {reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            "JWT_PUBLIC_KEY_FILE", f"expected a PEM text file, {path!r} is not UTF-8 text"
        ) from None


def _rsa_public_key(variable: str, pem: str) -> str:
    if "\n" not in pem and "\\n" in pem:
        # One-line env values often carry the PEM's line breaks as literal \n.
        pem = pem.replace("\\n", "\n")
    try:
        JwtValidator.rs256(pem)
    except InvalidKey as error:  # its message never quotes the key
        raise ConfigError(variable, str(error)) from None
    return pem


def _bind_addr(text: str) -> tuple[str, int]:
    accepted = "expected host:port with a port from 1 to 65535, e.g. 0.0.0.0:3000 or [::1]:3000"
    if text.startswith("["):
        host, close, port = text[1:].partition("]:")
        host_ok = bool(close) and _is_ip(host, version=6)
    else:
        host, colon, port = text.rpartition(":")
        host_ok = bool(colon) and (
            _is_ip(host, version=4)
            or (_HOSTNAME.fullmatch(host) is not None and not _DOTTED_DIGITS.fullmatch(host))
        )
        if ":" in host:
            accepted += " (an IPv6 address goes in brackets)"
    if host_ok and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:
        return host, int(port)
    raise ConfigError("BIND_ADDR", f"{accepted}, got {text!r}")


def _is_ip(text: str, *, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _broker_url(url: str) -> str:
    accepted = "expected memory://, redis://[:password@]host[:port][/db] or rediss://..."
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("BROKER_URL", f"{accepted}, got {shown!r}") from None
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
    raise ConfigError("BROKER_URL", f"{accepted}, got {shown!r}")


def _api_key(values: _Values, name: str, *, dev: bool) -> str | None:
    key = values.get(name)
    if key is None:
        return secrets.token_urlsafe(32) if dev else None
    # Visible ASCII only: a key must travel in an `Authorization: Bearer` header.
    if len(key) < MIN_API_KEY_CHARS or not all("!" <= c <= "~" for c in key):
        raise ConfigError(
            name,
            f"expected at least {MIN_API_KEY_CHARS} visible ASCII characters, no spaces "
            f"(e.g. {_KEYGEN_COMMAND}), or unset to turn the endpoint off",
        )
    return key


def _ws_origins(values: _Values) -> tuple[str, ...] | None:
    entries = values.items("WS_ALLOWED_ORIGINS", "origins")
    if entries is None or entries == ("*",):
        return None
    return tuple(dict.fromkeys(_origin("WS_ALLOWED_ORIGINS", entry) for entry in entries))


def _cors_origins(values: _Values) -> tuple[str, ...]:
    entries = values.items("CORS_ALLOWED_ORIGINS", "origins")
    if entries is None:
        return ()
    if entries == ("*",):
        return entries
    return tuple(dict.fromkeys(_origin("CORS_ALLOWED_ORIGINS", entry) for entry in entries))


def _origin(name: str, text: str) -> str:
    """`text` as browsers send it in `Origin`: lower-case, no default port, no path."""
    default_ports = {"http": 80, "https": 443}
    try:
        parts = urlsplit(text)
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
        raise ConfigError(
            name,
            "expected * or comma-separated origins like https://app.example.com "
            f"(scheme://host[:port], no path), got {text!r}",
        )
    scheme = parts.scheme.lower()
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None or default_ports.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _tenants(values: _Values) -> frozenset[str] | None:
    entries = values.items("ALLOWED_TENANTS", "tenant ids")
    if entries is None:
        return None
    for entry in entries:
        if len(entry) > _MAX_ID_CHARS or _CONTROL.search(entry):
            raise ConfigError(
                "ALLOWED_TENANTS",
                f"expected tenant ids of 1 to {_MAX_ID_CHARS} characters without control "
                f"characters, got {entry!r}",
            )
    return frozenset(entries)
