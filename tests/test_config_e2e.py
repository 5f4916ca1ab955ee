"""Bad settings stop `pm-server` before it listens: exit 2 and one line naming the variable."""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

import pytest

GOOD_SECRET = "a-perfectly-good-hs256-secret-of-48-characters!!"

PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u
+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh
kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ
0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg
cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc
mwIDAQAB
-----END PUBLIC KEY-----"""


def assert_one_line_error(result: subprocess.CompletedProcess[str], variable: str) -> str:
    """Exit 2, nothing on stdout, one stderr line naming `variable`, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert variable in line
    return line


def test_a_short_jwt_secret_exits_2_naming_it_and_pointing_to_dev_mode(servers: Any) -> None:
    result = servers.run({"JWT_SECRET": "test", "BIND_ADDR": "127.0.0.1:1"})

    line = assert_one_line_error(result, "JWT_SECRET")
    assert "--dev" in line
    assert "token_urlsafe" in line  # how to make a good one


def test_the_error_about_a_short_secret_never_echoes_it(servers: Any) -> None:
    result = servers.run({"JWT_SECRET": "Sh0rt-S3cr3t-Value"})

    line = assert_one_line_error(result, "JWT_SECRET")
    assert "Sh0rt-S3cr3t-Value" not in line


def test_no_jwt_setting_at_all_exits_2_pointing_to_dev_mode(servers: Any) -> None:
    line = assert_one_line_error(servers.run({}), "JWT_SECRET")

    assert "--dev" in line


def test_both_jwt_secret_and_jwt_public_key_exit_2(servers: Any) -> None:
    result = servers.run({"JWT_SECRET": GOOD_SECRET, "JWT_PUBLIC_KEY": PUBLIC_KEY})

    line = assert_one_line_error(result, "JWT_SECRET")
    assert "JWT_PUBLIC_KEY" in line
    assert GOOD_SECRET not in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BIND_ADDR", "localhost"),
        ("BIND_ADDR", "127.0.0.1:99999"),
        ("MAX_CONNECTIONS", "-5"),
        ("MAX_CONNECTIONS_PER_TENANT", "0"),
        ("SHUTDOWN_TIMEOUT_SECS", "-1"),
        ("LOG_LEVEL", "loud"),
        ("BROKER_URL", "http://example.com"),
        ("WS_ALLOWED_ORIGINS", "board.example.com/path"),
        ("PUBLISH_API_KEY", "short"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_variable(
    servers: Any, variable: str, value: str
) -> None:
    result = servers.run({"JWT_SECRET": GOOD_SECRET, variable: value})

    line = assert_one_line_error(result, variable)
    assert line.startswith("pm-server: ")


def test_a_bad_api_key_is_not_echoed(servers: Any) -> None:
    result = servers.run({"JWT_SECRET": GOOD_SECRET, "ADMIN_API_KEY": "has spaces in the key"})

    line = assert_one_line_error(result, "ADMIN_API_KEY")
    assert "has spaces in the key" not in line


def test_several_workers_need_a_shared_broker(servers: Any) -> None:
    result = servers.run({"JWT_SECRET": GOOD_SECRET}, args=["--workers", "2"])

    line = assert_one_line_error(result, "--workers")
    assert "redis://" in line


def test_a_port_already_taken_exits_1_with_one_log_line_and_no_traceback(servers: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = servers.run(
            {"JWT_SECRET": GOOD_SECRET, "BIND_ADDR": f"127.0.0.1:{port}", "LOG_FORMAT": "json"}
        )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    [error] = [line["message"] for line in lines if line["level"] == "ERROR"]
    assert error.startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in error
