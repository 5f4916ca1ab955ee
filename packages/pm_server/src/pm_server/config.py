"""Server settings: every environment variable declared once, then read, validated and redacted."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

from dotenv import dotenv_values
from pm_auth import DEFAULT_LEEWAY_SECS, InvalidKey, JwtValidator
from pm_proto.contract import MIN_HS256_SECRET_BYTES
from pm_ws import DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL_SECS, GatewayLimits, GatewayOptions

from pm_server import _config_values as values
from pm_server._config_values import KEYGEN_COMMAND, Parser
from pm_server.edge import EdgePolicy
from pm_server.logs import REDACTED, redact_url

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
_T = TypeVar("_T")

DEV_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 3000
MAX_WORKERS: Final = 1024
UNSET: Final = "<unset>"

_ENGINE: Final = GatewayLimits()
_EDGE: Final = EdgePolicy()
_UINT32_MAX: Final = 2**32 - 1
_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
_LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
_JWT_REQUIRED: Final = "required, exactly one (except --dev)"


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


@dataclass(frozen=True, slots=True)
class Variable(Generic[_T]):
    """One environment variable of the server: the single declaration of its setting.

    `VARIABLES` lists them all. `load_settings` reads each through `read`; the
    `Settings` fields default to their `default`; `Settings.gateway_limits` fills
    the engine's limits from the variables with a `limit`; and the README's
    configuration table must show `name`, `shown_default` and `meaning`.

    Attributes:
        name: The environment variable.
        parse: How a value is read and bounded.
        default: The setting when the variable is unset or empty.
        meaning: What it does, exactly as the README's table says.
        shown: The default as the README shows it, when printing `default` is not it.
        limit: The `GatewayLimits` field this setting fills; its default is that
            field's default, read from the engine rather than restated.
        combined: Read together with other variables by `load_settings` (the JWT
            key variables, `BIND_ADDR`) instead of filling `settings_field` alone.
    """

    name: str
    parse: Parser[_T]
    default: _T
    meaning: str
    shown: str | None = None
    limit: str | None = None
    combined: bool = False

    @property
    def settings_field(self) -> str:
        """The `Settings` field the setting goes to: the variable's name in lower case."""
        return self.name.lower()

    @property
    def shown_default(self) -> str:
        """The default as documented: `shown`, or `default` printed (30.0 as 30, False as false)."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def read(self, environ: Mapping[str, str]) -> _T:
        """The setting in `environ`: `default` when unset or blank, else the parsed value.

        Raises:
            ConfigError: The value is not one the variable accepts.
        """
        text = environ.get(self.name, "").strip()
        if not text:
            return self.default
        try:
            return self.parse(text)
        except ValueError as error:  # what it accepts; the value only when not secret
            raise ConfigError(self.name, str(error)) from None


JWT_SECRET: Final = Variable(
    "JWT_SECRET",
    values.text,
    None,
    f"HS256 secret, at least {MIN_HS256_SECRET_BYTES} bytes (`{KEYGEN_COMMAND}`)",
    shown=_JWT_REQUIRED,
    combined=True,
)
JWT_PUBLIC_KEY: Final = Variable(
    "JWT_PUBLIC_KEY",
    values.text,
    None,
    "RS256 public key, PEM text",
    shown=_JWT_REQUIRED,
    combined=True,
)
JWT_PUBLIC_KEY_FILE: Final = Variable(
    "JWT_PUBLIC_KEY_FILE",
    values.text,
    None,
    "RS256 public key, path to a PEM file",
    shown=_JWT_REQUIRED,
    combined=True,
)
JWT_ISSUER: Final = Variable(
    "JWT_ISSUER", values.text, None, "required `iss` when set", shown="unset"
)
JWT_AUDIENCE: Final = Variable(
    "JWT_AUDIENCE", values.text, None, "required `aud` when set", shown="unset"
)
JWT_LEEWAY_SECS: Final = Variable(
    "JWT_LEEWAY_SECS",
    values.seconds(3600, zero_ok=True),
    DEFAULT_LEEWAY_SECS,
    "clock skew allowed on `exp`, `nbf`, `iat`",
)
BIND_ADDR: Final = Variable(
    "BIND_ADDR",
    values.bind_addr,
    ("0.0.0.0", DEFAULT_PORT),
    "`host:port` (`[::1]:3000` for IPv6)",
    shown=f"0.0.0.0:{DEFAULT_PORT}",
    combined=True,
)
MAX_CONNECTIONS_PER_TENANT: Final = Variable(
    "MAX_CONNECTIONS_PER_TENANT",
    values.whole(1_000_000),
    _ENGINE.max_connections_per_tenant,
    "per process; over it: 429",
    limit="max_connections_per_tenant",
)
MAX_CONNECTIONS: Final = Variable(
    "MAX_CONNECTIONS",
    values.whole(1_000_000),
    _ENGINE.max_connections,
    "per process; over it: 503",
    limit="max_connections",
)
RATE_LIMIT_MAX_REQUESTS: Final = Variable(
    "RATE_LIMIT_MAX_REQUESTS",
    values.whole(_UINT32_MAX),
    _ENGINE.rate_limit_max_requests,
    "token bucket per connection: burst size …",
    limit="rate_limit_max_requests",
)
RATE_LIMIT_WINDOW_SECS: Final = Variable(
    "RATE_LIMIT_WINDOW_SECS",
    values.seconds(86400),
    _ENGINE.rate_limit_window_secs,
    "… refilled over this many seconds",
    limit="rate_limit_window_secs",
)
RATE_LIMIT_MAX_VIOLATIONS: Final = Variable(
    "RATE_LIMIT_MAX_VIOLATIONS",
    values.whole(1_000_000),
    _ENGINE.max_consecutive_rate_limited,
    "a connection whose frames the rate limit refuses this many times in a row is closed "
    "(1008, after `Closing`)",
    limit="max_consecutive_rate_limited",
)
SEND_QUEUE_SIZE: Final = Variable(
    "SEND_QUEUE_SIZE",
    values.whole(1_000_000),
    _ENGINE.send_queue_size,
    "messages queued per connection before it is closed as slow (4008)",
    limit="send_queue_size",
)
MAX_MESSAGE_BYTES: Final = Variable(
    "MAX_MESSAGE_BYTES",
    values.whole(_MAX_MESSAGE_BYTES),
    _ENGINE.max_message_bytes,
    "largest client frame (larger: close 1009) and publish body (larger: 413)",
    limit="max_message_bytes",
)
MAX_SUBSCRIPTIONS_PER_CONNECTION: Final = Variable(
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    values.whole(1_000_000),
    _ENGINE.max_subscriptions,
    "project, sprint and work-item ids counted together",
    limit="max_subscriptions",
)
HEARTBEAT_INTERVAL_SECS: Final = Variable(
    "HEARTBEAT_INTERVAL_SECS",
    values.seconds(3600),
    _ENGINE.heartbeat_interval_secs,
    "WebSocket ping interval",
    limit="heartbeat_interval_secs",
)
HEARTBEAT_TIMEOUT_SECS: Final = Variable(
    "HEARTBEAT_TIMEOUT_SECS",
    values.seconds(3600),
    _ENGINE.heartbeat_timeout_secs,
    "no pong within this: close 4009",
    limit="heartbeat_timeout_secs",
)
SHUTDOWN_TIMEOUT_SECS: Final = Variable(
    "SHUTDOWN_TIMEOUT_SECS",
    values.seconds(3600),
    GatewayOptions().shutdown_timeout_secs,
    "drain deadline; connections still open are cut",
)
HTTP_HEADER_TIMEOUT_SECS: Final = Variable(
    "HTTP_HEADER_TIMEOUT_SECS",
    values.seconds(3600),
    _EDGE.header_timeout_secs,
    "time to send a complete request head, from accept (or from the first byte of a later "
    "request on a kept-alive connection); slower: closed",
)
MAX_PENDING_UPGRADES_PER_IP: Final = Variable(
    "MAX_PENDING_UPGRADES_PER_IP",
    values.whole(1_000_000, zero_ok=True),
    _EDGE.max_pending_per_address,
    "0 = off (the default: behind a proxy every client has the proxy's address). Connections "
    "one address (an IPv6 /64) may hold that have not yet sent a request; one more gets 429 "
    "`TOO_MANY_PENDING` at accept",
)
MAX_AUTH_FAILURES_PER_IP: Final = Variable(
    "MAX_AUTH_FAILURES_PER_IP",
    values.whole(1_000_000, zero_ok=True),
    0,
    "0 = off. Failed authentications (401 on `/ws` and the API routes) an address (an IPv6 "
    "/64) may burst; then 429 `RATE_LIMIT_EXCEEDED` with `Retry-After` on those routes, "
    "before any token is checked",
)
AUTH_FAILURE_WINDOW_SECS: Final = Variable(
    "AUTH_FAILURE_WINDOW_SECS",
    values.seconds(86400),
    60.0,
    "… that failure bucket refills over this many seconds",
)
BROKER_URL: Final = Variable(
    "BROKER_URL",
    values.broker_url,
    "memory://",
    "`memory://` (one process) or `redis://host:port/db` (`rediss://` for TLS)",
)
HISTORY_SIZE: Final = Variable(
    "HISTORY_SIZE",
    values.whole(1_000_000),
    DEFAULT_HISTORY_SIZE,
    "events kept per tenant for resume",
)
HISTORY_TTL_SECS: Final = Variable(
    "HISTORY_TTL_SECS",
    values.seconds(7 * 86400),
    DEFAULT_HISTORY_TTL_SECS,
    "how long events stay resumable (and publishes idempotent)",
)
WS_ALLOWED_ORIGINS: Final = Variable(
    "WS_ALLOWED_ORIGINS",
    values.ws_origins,
    None,
    "comma-separated origins allowed to open `/ws` (403 otherwise)",
    shown="any",
)
CORS_ALLOWED_ORIGINS: Final[Variable[tuple[str, ...]]] = Variable(
    "CORS_ALLOWED_ORIGINS",
    values.cors_origins,
    (),
    "comma-separated origins allowed to call the HTTP routes",
    shown="none",
)
ALLOWED_TENANTS: Final = Variable(
    "ALLOWED_TENANTS",
    values.tenants,
    None,
    "comma-separated tenants allowed to connect (403 otherwise)",
    shown="any",
)
PUBLISH_API_KEY: Final = Variable(
    "PUBLISH_API_KEY",
    values.api_key,
    None,
    "bearer key of `POST /api/v1/publish`; unset: 404",
    shown="unset",
)
ADMIN_API_KEY: Final = Variable(
    "ADMIN_API_KEY",
    values.api_key,
    None,
    "bearer key of the admin routes; unset: 404",
    shown="unset",
)
LOG_LEVEL: Final[Variable[LogLevel]] = Variable(
    "LOG_LEVEL",
    values.choice(_LOG_LEVELS),
    "info",
    "`debug`, `info`, `warning`, `error`, `critical`",
)
LOG_FORMAT: Final[Variable[LogFormat]] = Variable(
    "LOG_FORMAT",
    values.choice(_LOG_FORMATS),
    "text",
    "`text` or `json` (one object per line, aiohttp's lines included)",
)
LOG_COLORED: Final = Variable(
    "LOG_COLORED",
    values.boolean_or_auto,
    None,
    "colored text; auto = when stderr is a terminal",
    shown="auto",
)
METRICS_TENANT_LABELS: Final = Variable(
    "METRICS_TENANT_LABELS",
    values.boolean,
    False,
    "per-tenant metric labels (opt-in: cardinality)",
)

VARIABLES: Final[tuple[Variable[Any], ...]] = (
    JWT_SECRET,
    JWT_PUBLIC_KEY,
    JWT_PUBLIC_KEY_FILE,
    JWT_ISSUER,
    JWT_AUDIENCE,
    JWT_LEEWAY_SECS,
    BIND_ADDR,
    MAX_CONNECTIONS_PER_TENANT,
    MAX_CONNECTIONS,
    RATE_LIMIT_MAX_REQUESTS,
    RATE_LIMIT_WINDOW_SECS,
    RATE_LIMIT_MAX_VIOLATIONS,
    SEND_QUEUE_SIZE,
    MAX_MESSAGE_BYTES,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    HEARTBEAT_INTERVAL_SECS,
    HEARTBEAT_TIMEOUT_SECS,
    SHUTDOWN_TIMEOUT_SECS,
    HTTP_HEADER_TIMEOUT_SECS,
    MAX_PENDING_UPGRADES_PER_IP,
    MAX_AUTH_FAILURES_PER_IP,
    AUTH_FAILURE_WINDOW_SECS,
    BROKER_URL,
    HISTORY_SIZE,
    HISTORY_TTL_SECS,
    WS_ALLOWED_ORIGINS,
    CORS_ALLOWED_ORIGINS,
    ALLOWED_TENANTS,
    PUBLISH_API_KEY,
    ADMIN_API_KEY,
    LOG_LEVEL,
    LOG_FORMAT,
    LOG_COLORED,
    METRICS_TENANT_LABELS,
)
"""Every variable `load_settings` reads, in the order the README documents them."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's whole configuration, parsed and validated.

    Build it with `load_settings`; construct it directly only in tests. Field
    defaults are the `VARIABLES`' defaults. Exactly one of `jwt_secret` (HS256)
    and `jwt_public_key` (RS256 PEM text) is set: there is no setting that turns
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
    jwt_issuer: str | None = JWT_ISSUER.default
    jwt_audience: str | None = JWT_AUDIENCE.default
    jwt_leeway_secs: float = JWT_LEEWAY_SECS.default
    bind_host: str = BIND_ADDR.default[0]
    bind_port: int = BIND_ADDR.default[1]
    max_connections_per_tenant: int = MAX_CONNECTIONS_PER_TENANT.default
    max_connections: int = MAX_CONNECTIONS.default
    rate_limit_max_requests: int = RATE_LIMIT_MAX_REQUESTS.default
    rate_limit_window_secs: float = RATE_LIMIT_WINDOW_SECS.default
    rate_limit_max_violations: int = RATE_LIMIT_MAX_VIOLATIONS.default
    send_queue_size: int = SEND_QUEUE_SIZE.default
    max_message_bytes: int = MAX_MESSAGE_BYTES.default
    max_subscriptions_per_connection: int = MAX_SUBSCRIPTIONS_PER_CONNECTION.default
    heartbeat_interval_secs: float = HEARTBEAT_INTERVAL_SECS.default
    heartbeat_timeout_secs: float = HEARTBEAT_TIMEOUT_SECS.default
    shutdown_timeout_secs: float = SHUTDOWN_TIMEOUT_SECS.default
    http_header_timeout_secs: float = HTTP_HEADER_TIMEOUT_SECS.default
    max_pending_upgrades_per_ip: int = MAX_PENDING_UPGRADES_PER_IP.default
    max_auth_failures_per_ip: int = MAX_AUTH_FAILURES_PER_IP.default
    auth_failure_window_secs: float = AUTH_FAILURE_WINDOW_SECS.default
    broker_url: str = BROKER_URL.default
    history_size: int = HISTORY_SIZE.default
    history_ttl_secs: float = HISTORY_TTL_SECS.default
    ws_allowed_origins: tuple[str, ...] | None = WS_ALLOWED_ORIGINS.default
    cors_allowed_origins: tuple[str, ...] = CORS_ALLOWED_ORIGINS.default
    allowed_tenants: frozenset[str] | None = ALLOWED_TENANTS.default
    publish_api_key: str | None = field(default=PUBLISH_API_KEY.default, repr=False)
    admin_api_key: str | None = field(default=ADMIN_API_KEY.default, repr=False)
    log_level: LogLevel = LOG_LEVEL.default
    log_format: LogFormat = LOG_FORMAT.default
    log_colored: bool | None = LOG_COLORED.default
    metrics_tenant_labels: bool = METRICS_TENANT_LABELS.default
    dev: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        if (self.jwt_secret is None) == (self.jwt_public_key is None):
            raise ConfigError("JWT_SECRET", "exactly one of jwt_secret and jwt_public_key is set")

    def gateway_limits(self) -> GatewayLimits:
        """The engine's limits as configured: the settings of the variables with a `limit`.

        The app builds this once; everything in pm_server that enforces a limit
        (the gateway, the HTTP body size, the publish API) reads that one object.
        """
        return GatewayLimits(
            **{
                variable.limit: getattr(self, variable.settings_field)
                for variable in VARIABLES
                if variable.limit is not None
            }
        )

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
    """Read and validate every variable of `VARIABLES`.

    Args:
        environ: The process environment; the only source besides the `.env` file.
        dev: `pm-server --dev`: no JWT settings needed (a random HS256 secret is
            made), the bind host is forced to 127.0.0.1, and publish and admin API
            keys are generated when unset so that both APIs work out of the box.
        workers: `pm-server --workers`; more than one needs a shared broker.
        dotenv_path: A `.env` file read when it exists; `environ` wins over it.
            `${VAR}` references in it are not expanded. `None` reads no file.

    Raises:
        ConfigError: For the first invalid, missing or conflicting setting, in the
            order of `VARIABLES`. Empty values count as unset; all values are
            stripped of surrounding spaces.
    """
    merged = _merge(environ, dotenv_path)
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            "--workers", f"expected a whole number from 1 to {MAX_WORKERS}, got {workers}"
        )
    jwt_secret, jwt_public_key = _jwt_keys(
        JWT_SECRET.read(merged),
        JWT_PUBLIC_KEY.read(merged),
        JWT_PUBLIC_KEY_FILE.read(merged),
        dev=dev,
    )
    bind_host, bind_port = BIND_ADDR.read(merged)
    read: dict[str, Any] = {
        variable.settings_field: variable.read(merged)
        for variable in VARIABLES
        if not variable.combined
    }
    if workers > 1 and read["broker_url"] == "memory://":
        raise ConfigError(
            "--workers",
            f"{workers} processes need a shared broker such as redis://host:6379/0 in "
            "BROKER_URL; memory:// lives inside one process",
        )
    if dev:
        for key in ("publish_api_key", "admin_api_key"):
            read[key] = read[key] or secrets.token_urlsafe(32)
    return Settings(
        jwt_secret=jwt_secret,
        jwt_public_key=jwt_public_key,
        bind_host=DEV_HOST if dev else bind_host,
        bind_port=bind_port,
        dev=dev,
        workers=workers,
        **read,
    )


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


def _jwt_keys(
    secret: str | None, public_key: str | None, key_file: str | None, *, dev: bool
) -> tuple[str | None, str | None]:
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
            f"{KEYGEN_COMMAND}, or run pm-server --dev for local use",
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
