import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from pm_server.config import VARIABLES, ConfigError, Settings, load_settings
from pm_server.logs import redact_url
from pm_ws import GatewayLimits, GatewayOptions

SECRET = "s" * 32
BASE = {"JWT_SECRET": SECRET}


def load(env: Mapping[str, str], *, dev: bool = False, workers: int = 1) -> Settings:
    return load_settings(env, dev=dev, workers=workers, dotenv_path=None)


def error_for(env: Mapping[str, str], *, dev: bool = False, workers: int = 1) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(env, dev=dev, workers=workers)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{caught.value.variable}: ")
    return caught.value


@pytest.fixture(scope="module")
def public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class RecordingEnviron(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        self._data = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_defaults_are_the_documented_ones() -> None:
    settings = load(BASE)

    assert (settings.bind_host, settings.bind_port) == ("0.0.0.0", 3000)
    assert settings.max_connections_per_tenant == 1000
    assert settings.max_connections == 10000
    assert (settings.rate_limit_max_requests, settings.rate_limit_window_secs) == (100, 60.0)
    assert settings.send_queue_size == 1024
    assert settings.max_message_bytes == 65536
    assert settings.max_subscriptions_per_connection == 1000
    assert settings.heartbeat_interval_secs == 30.0
    assert settings.heartbeat_timeout_secs == 10.0
    assert settings.shutdown_timeout_secs == 30.0
    assert settings.broker_url == "memory://"
    assert (settings.history_size, settings.history_ttl_secs) == (1000, 300.0)
    assert settings.ws_allowed_origins is None
    assert settings.cors_allowed_origins == ()
    assert settings.allowed_tenants is None
    assert settings.publish_api_key is None
    assert settings.admin_api_key is None
    assert (settings.log_level, settings.log_format, settings.log_colored) == ("info", "text", None)
    assert settings.metrics_tenant_labels is False
    assert settings.jwt_leeway_secs == 30.0
    assert (settings.dev, settings.workers) == (False, 1)
    assert settings.rate_limit_max_violations == 20
    assert settings.http_header_timeout_secs == 10.0
    assert settings.max_pending_upgrades_per_ip == 0
    assert (settings.max_auth_failures_per_ip, settings.auth_failure_window_secs) == (0, 60.0)


def test_numeric_defaults_in_variables_match_the_loaded_settings() -> None:
    loaded = load(BASE)
    for variable in VARIABLES:
        if variable.shown_default.isdigit():
            value = getattr(loaded, variable.name.lower())
            assert value == float(variable.shown_default), variable.name


def test_every_setting_is_declared_by_one_variable_and_defaults_to_its_default() -> None:
    defaults = Settings(jwt_secret=SECRET)
    by_variable = {v.settings_field for v in VARIABLES if not v.combined}
    read_together = {"jwt_secret", "jwt_public_key", "bind_host", "bind_port"}
    command_line = {"dev", "workers"}

    assert len({v.name for v in VARIABLES}) == len(VARIABLES)
    assert {f.name for f in dataclasses.fields(Settings)} == (
        by_variable | read_together | command_line
    )
    for variable in VARIABLES:
        if not variable.combined:
            assert getattr(defaults, variable.settings_field) == variable.default, variable.name
    assert (defaults.bind_host, defaults.bind_port) == ("0.0.0.0", 3000)


def test_the_engine_defaults_are_read_from_the_engine_not_restated() -> None:
    settings = load(BASE)

    assert settings.gateway_limits() == GatewayLimits()
    assert settings.shutdown_timeout_secs == GatewayOptions().shutdown_timeout_secs


def test_gateway_limits_carry_every_configured_limit() -> None:
    settings = load(
        {
            **BASE,
            "MAX_CONNECTIONS_PER_TENANT": "5",
            "MAX_CONNECTIONS": "50",
            "RATE_LIMIT_MAX_REQUESTS": "10",
            "RATE_LIMIT_WINDOW_SECS": "1.5",
            "RATE_LIMIT_MAX_VIOLATIONS": "5",
            "SEND_QUEUE_SIZE": "16",
            "MAX_MESSAGE_BYTES": "1024",
            "MAX_SUBSCRIPTIONS_PER_CONNECTION": "20",
            "HEARTBEAT_INTERVAL_SECS": "0.5",
            "HEARTBEAT_TIMEOUT_SECS": "0.25",
        }
    )

    assert settings.gateway_limits() == GatewayLimits(
        max_connections=50,
        max_connections_per_tenant=5,
        max_subscriptions=20,
        max_message_bytes=1024,
        send_queue_size=16,
        rate_limit_max_requests=10,
        rate_limit_window_secs=1.5,
        heartbeat_interval_secs=0.5,
        heartbeat_timeout_secs=0.25,
        max_consecutive_rate_limited=5,
    )


def test_variables_lists_exactly_what_load_settings_reads() -> None:
    environ = RecordingEnviron(BASE)

    load(environ)

    assert environ.read == {variable.name for variable in VARIABLES}


def test_every_setting_is_read_stripped_from_the_environment() -> None:
    settings = load(
        {
            **BASE,
            "JWT_ISSUER": " https://issuer.example ",
            "JWT_AUDIENCE": "pm",
            "JWT_LEEWAY_SECS": "0",
            "BIND_ADDR": " 127.0.0.1:8080 ",
            "MAX_CONNECTIONS_PER_TENANT": "5",
            "MAX_CONNECTIONS": "50",
            "RATE_LIMIT_MAX_REQUESTS": "10",
            "RATE_LIMIT_WINDOW_SECS": "1.5",
            "RATE_LIMIT_MAX_VIOLATIONS": " 5 ",
            "HTTP_HEADER_TIMEOUT_SECS": "2.5",
            "MAX_PENDING_UPGRADES_PER_IP": "8",
            "MAX_AUTH_FAILURES_PER_IP": "30",
            "AUTH_FAILURE_WINDOW_SECS": "120",
            "SEND_QUEUE_SIZE": "16",
            "MAX_MESSAGE_BYTES": "1024",
            "MAX_SUBSCRIPTIONS_PER_CONNECTION": "20",
            "HEARTBEAT_INTERVAL_SECS": "0.5",
            "HEARTBEAT_TIMEOUT_SECS": "0.25",
            "SHUTDOWN_TIMEOUT_SECS": "2",
            "BROKER_URL": "redis://localhost:6379/0",
            "HISTORY_SIZE": "7",
            "HISTORY_TTL_SECS": "60",
            "WS_ALLOWED_ORIGINS": "https://app.example.com",
            "CORS_ALLOWED_ORIGINS": "https://app.example.com",
            "ALLOWED_TENANTS": "t1, t2",
            "PUBLISH_API_KEY": "p" * 16,
            "ADMIN_API_KEY": "a" * 16,
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "Json",
            "LOG_COLORED": "no",
            "METRICS_TENANT_LABELS": "yes",
        },
        workers=3,
    )

    assert settings == dataclasses.replace(
        Settings(jwt_secret=SECRET),
        jwt_issuer="https://issuer.example",
        jwt_audience="pm",
        jwt_leeway_secs=0.0,
        bind_host="127.0.0.1",
        bind_port=8080,
        max_connections_per_tenant=5,
        max_connections=50,
        rate_limit_max_requests=10,
        rate_limit_window_secs=1.5,
        rate_limit_max_violations=5,
        http_header_timeout_secs=2.5,
        max_pending_upgrades_per_ip=8,
        max_auth_failures_per_ip=30,
        auth_failure_window_secs=120.0,
        send_queue_size=16,
        max_message_bytes=1024,
        max_subscriptions_per_connection=20,
        heartbeat_interval_secs=0.5,
        heartbeat_timeout_secs=0.25,
        shutdown_timeout_secs=2.0,
        broker_url="redis://localhost:6379/0",
        history_size=7,
        history_ttl_secs=60.0,
        ws_allowed_origins=("https://app.example.com",),
        cors_allowed_origins=("https://app.example.com",),
        allowed_tenants=frozenset({"t1", "t2"}),
        publish_api_key="p" * 16,
        admin_api_key="a" * 16,
        log_level="debug",
        log_format="json",
        log_colored=False,
        metrics_tenant_labels=True,
        workers=3,
    )


def test_empty_values_count_as_unset() -> None:
    settings = load({**BASE, "MAX_CONNECTIONS": "", "LOG_LEVEL": "  ", "PUBLISH_API_KEY": ""})

    assert settings.max_connections == 10000
    assert settings.log_level == "info"
    assert settings.publish_api_key is None


# Authentication


def test_missing_jwt_settings_name_both_choices_and_dev_mode() -> None:
    error = error_for({})

    assert error.variable == "JWT_SECRET"
    assert "JWT_PUBLIC_KEY" in str(error)
    assert "--dev" in str(error)


def test_short_secret_says_how_to_make_one_without_printing_it() -> None:
    error = error_for({"JWT_SECRET": "test-secret-value"})

    assert error.variable == "JWT_SECRET"
    assert "32 bytes" in str(error)
    assert "secrets.token_urlsafe(48)" in str(error)
    assert "--dev" in str(error)
    assert "test-secret-value" not in str(error)


def test_secret_length_counts_utf8_bytes() -> None:
    assert load({"JWT_SECRET": "é" * 16}).jwt_secret == "é" * 16
    assert error_for({"JWT_SECRET": "é" * 15}).variable == "JWT_SECRET"


def test_secret_that_is_a_public_key_is_refused(public_pem: str) -> None:
    error = error_for({"JWT_SECRET": public_pem})

    assert error.variable == "JWT_SECRET"
    assert "BEGIN" not in str(error)


@pytest.mark.parametrize("key_variable", ["JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY_FILE"])
def test_secret_and_public_key_together_are_refused(
    key_variable: str, public_pem: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(public_pem)
    value = public_pem if key_variable == "JWT_PUBLIC_KEY" else str(key_file)

    error = error_for({**BASE, key_variable: value})

    assert error.variable == "JWT_SECRET"
    assert key_variable in str(error)
    assert "not both" in str(error)


def test_public_key_and_key_file_together_are_refused(public_pem: str) -> None:
    error = error_for({"JWT_PUBLIC_KEY": public_pem, "JWT_PUBLIC_KEY_FILE": "/x.pem"})

    assert error.variable == "JWT_PUBLIC_KEY_FILE"


def test_public_key_is_read_from_text(public_pem: str) -> None:
    settings = load({"JWT_PUBLIC_KEY": public_pem})

    assert settings.jwt_public_key == public_pem.strip()
    assert settings.jwt_secret is None


def test_public_key_with_escaped_line_breaks_is_accepted(public_pem: str) -> None:
    one_line = public_pem.strip().replace("\n", "\\n")

    assert load({"JWT_PUBLIC_KEY": one_line}).jwt_public_key == public_pem.strip()


def test_public_key_is_read_from_a_file(public_pem: str, tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(public_pem)

    assert load({"JWT_PUBLIC_KEY_FILE": str(key_file)}).jwt_public_key == public_pem.strip()


def test_unreadable_key_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"

    error = error_for({"JWT_PUBLIC_KEY_FILE": str(missing)})

    assert error.variable == "JWT_PUBLIC_KEY_FILE"
    assert str(missing) in str(error)


def test_key_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "key.der"
    key_file.write_bytes(b"\xff\xfe\x00binary")

    assert error_for({"JWT_PUBLIC_KEY_FILE": str(key_file)}).variable == "JWT_PUBLIC_KEY_FILE"


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        "ec",
        "private",
    ],
)
def test_unusable_public_key_is_refused_without_echoing_it(pem: str) -> None:
    if pem == "ec":
        pem = _pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    elif pem == "private":
        pem = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )

    error = error_for({"JWT_PUBLIC_KEY": pem})

    assert error.variable == "JWT_PUBLIC_KEY"
    assert "AAAA" not in str(error)
    assert "MII" not in str(error)


def test_small_rsa_key_is_refused() -> None:
    pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())  # noqa: S505

    assert "2048" in str(error_for({"JWT_PUBLIC_KEY": pem}))


def test_settings_cannot_be_built_without_authentication() -> None:
    with pytest.raises(ConfigError):
        Settings()
    with pytest.raises(ConfigError):
        Settings(jwt_secret=SECRET, jwt_public_key="pem")


# Development mode


def test_dev_mode_needs_no_jwt_settings_and_makes_a_fresh_secret() -> None:
    first = load({}, dev=True)
    second = load({}, dev=True)

    assert first.jwt_secret is not None
    assert len(first.jwt_secret.encode()) >= 32
    assert first.jwt_secret != second.jwt_secret
    assert first.dev is True


def test_dev_mode_keeps_a_given_secret() -> None:
    assert load(BASE, dev=True).jwt_secret == SECRET


def test_dev_mode_binds_loopback_on_the_configured_port() -> None:
    assert (load({}, dev=True).bind_host, load({}, dev=True).bind_port) == ("127.0.0.1", 3000)
    settings = load({"BIND_ADDR": "0.0.0.0:4000"}, dev=True)
    assert (settings.bind_host, settings.bind_port) == ("127.0.0.1", 4000)


def test_dev_mode_turns_on_publish_and_admin_apis_with_random_keys() -> None:
    settings = load({}, dev=True)

    assert settings.publish_api_key is not None
    assert settings.admin_api_key is not None
    assert settings.publish_api_key != settings.admin_api_key
    assert load({"PUBLISH_API_KEY": "k" * 20}, dev=True).publish_api_key == "k" * 20


def test_dev_mode_refuses_a_public_key_it_cannot_sign_with(public_pem: str) -> None:
    error = error_for({"JWT_PUBLIC_KEY": public_pem}, dev=True)

    assert error.variable == "JWT_PUBLIC_KEY"
    assert "--dev" in str(error)


# Addresses, numbers and words


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("0.0.0.0:3000", "0.0.0.0", 3000),
        ("localhost:1", "localhost", 1),
        ("[::1]:3000", "::1", 3000),
        ("[::]:65535", "::", 65535),
        ("gateway.internal:80", "gateway.internal", 80),
    ],
)
def test_bind_addr_accepts_host_and_port(text: str, host: str, port: int) -> None:
    settings = load({**BASE, "BIND_ADDR": text})

    assert (settings.bind_host, settings.bind_port) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "3000",
        ":3000",
        "0.0.0.0",
        "0.0.0.0:",
        "0.0.0.0:0",
        "0.0.0.0:65536",
        "0.0.0.0:http",
        "::1:3000",
        "[::1]",
        "[127.0.0.1]:3000",
        "300.1.1.1:3000",
        "bad host:3000",
    ],
)
def test_bind_addr_refuses_anything_else(text: str) -> None:
    error = error_for({**BASE, "BIND_ADDR": text})

    assert error.variable == "BIND_ADDR"
    assert "host:port" in str(error)


@pytest.mark.parametrize("value", ["-5", "0", "abc", "1.5", "1e3", "١٢", "+3"])
def test_limits_must_be_positive_whole_numbers(value: str) -> None:
    error = error_for({**BASE, "MAX_CONNECTIONS": value})

    assert str(error) == (
        f"MAX_CONNECTIONS: expected a whole number from 1 to 1000000, got {value!r}"
    )


def test_limits_have_upper_bounds() -> None:
    assert load({**BASE, "MAX_MESSAGE_BYTES": str(16 * 1024 * 1024)}).max_message_bytes == 2**24
    assert error_for({**BASE, "MAX_MESSAGE_BYTES": str(2**24 + 1)}).variable == "MAX_MESSAGE_BYTES"
    maximum = str(2**32 - 1)
    assert load({**BASE, "RATE_LIMIT_MAX_REQUESTS": maximum}).rate_limit_max_requests == 2**32 - 1
    assert error_for({**BASE, "RATE_LIMIT_MAX_REQUESTS": str(2**32)}).variable == (
        "RATE_LIMIT_MAX_REQUESTS"
    )


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "3601"])
def test_durations_must_be_positive_and_bounded(value: str) -> None:
    error = error_for({**BASE, "HEARTBEAT_TIMEOUT_SECS": value})

    assert error.variable == "HEARTBEAT_TIMEOUT_SECS"
    assert "greater than 0" in str(error)


@pytest.mark.parametrize("variable", ["MAX_PENDING_UPGRADES_PER_IP", "MAX_AUTH_FAILURES_PER_IP"])
def test_per_address_limits_are_off_at_zero_and_otherwise_whole_numbers(variable: str) -> None:
    field = variable.lower()
    assert getattr(load({**BASE, variable: "0"}), field) == 0
    assert getattr(load({**BASE, variable: "50"}), field) == 50

    for bad in ("-1", "abc", "2.5", "1000001"):
        assert str(error_for({**BASE, variable: bad})) == (
            f"{variable}: expected a whole number from 0 to 1000000 (0 = off), got {bad!r}"
        )


@pytest.mark.parametrize("variable", ["HTTP_HEADER_TIMEOUT_SECS", "AUTH_FAILURE_WINDOW_SECS"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", "86401"])
def test_edge_durations_must_be_positive_and_bounded(variable: str, value: str) -> None:
    error = error_for({**BASE, variable: value})

    assert error.variable == variable
    assert "greater than 0" in str(error)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_rate_limit_max_violations_is_at_least_one(value: str) -> None:
    assert str(error_for({**BASE, "RATE_LIMIT_MAX_VIOLATIONS": value})) == (
        f"RATE_LIMIT_MAX_VIOLATIONS: expected a whole number from 1 to 1000000, got {value!r}"
    )


def test_leeway_may_be_zero_but_not_negative() -> None:
    assert load({**BASE, "JWT_LEEWAY_SECS": "0"}).jwt_leeway_secs == 0.0
    assert error_for({**BASE, "JWT_LEEWAY_SECS": "-1"}).variable == "JWT_LEEWAY_SECS"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LOG_LEVEL", "verbose"), ("LOG_LEVEL", "warn"), ("LOG_FORMAT", "xml")],
)
def test_log_words_are_checked(variable: str, value: str) -> None:
    error = error_for({**BASE, variable: value})

    assert error.variable == variable
    assert "expected one of" in str(error)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
    ],
)
def test_booleans_accept_the_usual_words(text: str, value: bool) -> None:
    assert load({**BASE, "METRICS_TENANT_LABELS": text}).metrics_tenant_labels is value
    assert load({**BASE, "LOG_COLORED": text}).log_colored is value


def test_log_colored_auto_means_decide_by_terminal() -> None:
    assert load({**BASE, "LOG_COLORED": "auto"}).log_colored is None


def test_bad_boolean_lists_what_is_accepted() -> None:
    error = error_for({**BASE, "METRICS_TENANT_LABELS": "maybe"})

    assert str(error) == (
        "METRICS_TENANT_LABELS: expected one of true/false/1/0/yes/no/on/off, got 'maybe'"
    )
    assert error_for({**BASE, "LOG_COLORED": "auto-ish"}).variable == "LOG_COLORED"


# Broker


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://localhost",
        "redis://localhost:6379/0",
        "rediss://:pw@redis.internal:6380/2",
        "redis://user:pw@[::1]:6379",
    ],
)
def test_broker_url_accepts_memory_and_redis(url: str) -> None:
    assert load({**BASE, "BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(
    "url",
    [
        "kafka://localhost",
        "memory",
        "memory://x",
        "redis://",
        "redis://:hunter2@host:99999",
        "redis://host/zero",
        "localhost:6379",
    ],
)
def test_broker_url_refuses_unknown_forms_without_showing_passwords(url: str) -> None:
    error = error_for({**BASE, "BROKER_URL": url})

    assert error.variable == "BROKER_URL"
    assert "redis://" in str(error)
    assert "hunter2" not in str(error)


def test_several_workers_need_a_shared_broker() -> None:
    error = error_for(BASE, workers=2)

    assert error.variable == "--workers"
    assert "redis://" in str(error)
    assert load({**BASE, "BROKER_URL": "redis://localhost"}, workers=2).workers == 2


def test_worker_count_must_be_positive() -> None:
    assert error_for(BASE, workers=0).variable == "--workers"


# Lists


def test_ws_origins_are_normalised_as_browsers_send_them() -> None:
    settings = load(
        {
            **BASE,
            "WS_ALLOWED_ORIGINS": "HTTPS://App.Example.com:443/, http://localhost:5173,"
            " https://app.example.com, http://[::1]:8080",
        }
    )

    assert settings.ws_allowed_origins == (
        "https://app.example.com",
        "http://localhost:5173",
        "http://[::1]:8080",
    )


def test_star_means_any_origin() -> None:
    assert load({**BASE, "WS_ALLOWED_ORIGINS": "*"}).ws_allowed_origins is None
    assert load({**BASE, "CORS_ALLOWED_ORIGINS": "*"}).cors_allowed_origins == ("*",)


@pytest.mark.parametrize(
    "value",
    [
        "https://a.example,,https://b.example",
        "https://a.example,",
        "app.example.com",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "*,https://a.example",
    ],
)
def test_bad_origin_lists_are_refused(value: str) -> None:
    for variable in ("WS_ALLOWED_ORIGINS", "CORS_ALLOWED_ORIGINS"):
        assert error_for({**BASE, variable: value}).variable == variable


def test_allowed_tenants_is_a_set_of_ids() -> None:
    settings = load({**BASE, "ALLOWED_TENANTS": "acme, globex,acme"})

    assert settings.allowed_tenants == frozenset({"acme", "globex"})


@pytest.mark.parametrize("value", ["acme,,globex", "x" * 129, "bad\x01id", "bad\x7fid"])
def test_bad_tenant_lists_are_refused(value: str) -> None:
    assert error_for({**BASE, "ALLOWED_TENANTS": value}).variable == "ALLOWED_TENANTS"


@pytest.mark.parametrize("control", ["\x80", "\x85", "\x9f"])
def test_tenant_ids_with_a_c1_control_character_are_refused_as_the_engine_refuses_them(
    control: str,
) -> None:
    error = error_for({**BASE, "ALLOWED_TENANTS": f"acme,glo{control}bex"})

    assert str(error) == (
        "ALLOWED_TENANTS: expected tenant ids of 1 to 128 characters without control "
        f"characters, got {f'glo{control}bex'!r}"
    )


def test_an_undecodable_byte_in_a_tenant_id_is_refused() -> None:
    # os.environ turns a byte that isn't UTF-8 into a lone surrogate (surrogateescape).
    assert error_for({**BASE, "ALLOWED_TENANTS": "acme\udcff"}).variable == "ALLOWED_TENANTS"


# API keys


@pytest.mark.parametrize("variable", ["PUBLISH_API_KEY", "ADMIN_API_KEY"])
@pytest.mark.parametrize(
    "key",
    ["short-key", "has a space inside it", "ключ-не-ascii-0123456789", "tab\there-0123456789"],
)
def test_weak_api_keys_are_refused_without_echoing_them(variable: str, key: str) -> None:
    error = error_for({**BASE, variable: key})

    assert error.variable == variable
    assert key not in str(error)


# .env


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"JWT_SECRET={SECRET}\nMAX_CONNECTIONS=7\nSEND_QUEUE_SIZE=8\nJWT_ISSUER=${{HOME}}\n"
    )

    settings = load_settings({"SEND_QUEUE_SIZE": "9"}, dotenv_path=dotenv)

    assert settings.jwt_secret == SECRET
    assert settings.max_connections == 7
    assert settings.send_queue_size == 9
    assert settings.jwt_issuer == "${HOME}"


def test_a_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    assert load_settings(BASE, dotenv_path=tmp_path / ".env").jwt_secret == SECRET


def test_dotenv_values_are_validated_like_the_environment(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"JWT_SECRET={SECRET}\nMAX_CONNECTIONS=-1\n")

    with pytest.raises(ConfigError, match="MAX_CONNECTIONS"):
        load_settings({}, dotenv_path=dotenv)


# Redaction


def test_redacted_configuration_holds_no_secret(public_pem: str) -> None:
    settings = load(
        {
            "JWT_PUBLIC_KEY": public_pem,
            "PUBLISH_API_KEY": "publish-key-0123456789",
            "BROKER_URL": "redis://:hunter2@redis:6379/0",
            "ALLOWED_TENANTS": "b,a",
        }
    )

    shown = settings.redacted()
    text = json.dumps(shown)

    assert "publish-key-0123456789" not in text
    assert "hunter2" not in text
    assert "BEGIN" not in text
    assert shown["jwt_secret"] == "<unset>"
    assert shown["publish_api_key"] == "<redacted>"
    assert shown["admin_api_key"] == "<unset>"
    assert shown["jwt_public_key"] == f"<PEM, {len(public_pem.strip())} bytes>"
    assert shown["broker_url"] == "redis://:<redacted>@redis:6379/0"
    assert shown["allowed_tenants"] == ["a", "b"]
    assert shown["max_connections"] == 10000


def test_redacted_secret_and_repr_never_show_the_secret() -> None:
    settings = load({**BASE, "ADMIN_API_KEY": "admin-key-0123456789"})

    assert settings.redacted()["jwt_secret"] == "<redacted>"
    assert SECRET not in repr(settings)
    assert "admin-key-0123456789" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("memory://", "memory://"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user:pw@h:1/0", "redis://user:<redacted>@h:1/0"),
        ("redis://pw@h", "redis://<redacted>@h"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=<redacted>&db=1"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# Properties


NUMERIC_VARIABLES = [v.name for v in VARIABLES if v.shown_default.isdigit()]


@given(st.sampled_from(NUMERIC_VARIABLES), st.text(max_size=20))
def test_any_numeric_value_is_either_accepted_in_bounds_or_one_clear_line(
    variable: str, value: str
) -> None:
    outcome = load_or_error({**BASE, variable: value})

    if isinstance(outcome, ConfigError):
        assert outcome.variable == variable
        assert "\n" not in str(outcome)
        assert str(outcome).startswith(f"{variable}: expected ")
    else:
        loaded = getattr(outcome, variable.lower())
        assert isinstance(loaded, int | float)
        assert loaded >= 0


def load_or_error(env: Mapping[str, str]) -> Settings | ConfigError:
    try:
        return load(env)
    except ConfigError as error:
        return error


def _pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
