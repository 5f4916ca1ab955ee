import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from pm_server import cli
from pm_server.cli import main
from pm_server.config import VARIABLES, Settings

SECRET = "c" * 40
RUN_MAIN = "from pm_server.cli import main; main()"


def pm_server(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run the command line as a separate process with only the given variables set."""
    base = {name: os.environ[name] for name in ("PATH", "SYSTEMROOT") if name in os.environ}
    return subprocess.run(
        [sys.executable, "-c", RUN_MAIN, *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], variable: str) -> str:
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"pm-server: {variable}: ")
    assert "Traceback" not in result.stderr
    return line


# The command line as a process


def test_short_secret_exits_2_with_one_line_naming_it_and_dev_mode(tmp_path: Path) -> None:
    result = pm_server(env={"JWT_SECRET": "test"}, cwd=tmp_path)

    line = assert_config_error(result, "JWT_SECRET")
    assert "--dev" in line
    assert "secrets.token_urlsafe" in line


def test_missing_authentication_exits_2(tmp_path: Path) -> None:
    line = assert_config_error(pm_server(cwd=tmp_path), "JWT_SECRET")

    assert "--dev" in line


def test_both_jwt_settings_exit_2(tmp_path: Path) -> None:
    result = pm_server(env={"JWT_SECRET": SECRET, "JWT_PUBLIC_KEY_FILE": "key.pem"}, cwd=tmp_path)

    assert "not both" in assert_config_error(result, "JWT_SECRET")


def test_bad_bind_addr_exits_2(tmp_path: Path) -> None:
    result = pm_server(env={"JWT_SECRET": SECRET, "BIND_ADDR": "localhost"}, cwd=tmp_path)

    assert "host:port" in assert_config_error(result, "BIND_ADDR")


def test_several_workers_with_the_memory_broker_exit_2(tmp_path: Path) -> None:
    result = pm_server("--workers", "2", env={"JWT_SECRET": SECRET}, cwd=tmp_path)

    assert "redis://" in assert_config_error(result, "--workers")


def test_dotenv_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("JWT_SECRET=too-short\n")

    assert_config_error(pm_server(cwd=tmp_path), "JWT_SECRET")


def test_non_positive_worker_count_is_a_usage_error(tmp_path: Path) -> None:
    result = pm_server("--workers", "0", env={"JWT_SECRET": SECRET}, cwd=tmp_path)

    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_is_printed(tmp_path: Path) -> None:
    result = pm_server("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.startswith("pm-server ")


# main() in this process, with the server replaced


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Settings]]:
    """Settings that main() handed to pm_server.serving.run, which here returns 3 at once."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
    monkeypatch.chdir(tmp_path)
    runs: list[Settings] = []

    def run(settings: Settings) -> int:
        runs.append(settings)
        return 3

    monkeypatch.setattr(cli, "run", run)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield runs
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_main_runs_the_server_and_exits_with_its_code(
    started: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("MAX_CONNECTIONS", "77")

    with pytest.raises(SystemExit) as exited:
        main([])

    assert exited.value.code == 3
    [settings] = started
    assert settings.max_connections == 77
    assert settings.dev is False
    assert capsys.readouterr().out == ""


def test_main_logs_the_effective_configuration_as_json_without_secrets(
    started: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("ADMIN_API_KEY", "admin-key-0123456789")
    monkeypatch.setenv("LOG_FORMAT", "json")

    with pytest.raises(SystemExit):
        main([])

    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    [config] = [line for line in lines if line["message"] == "Effective configuration"]
    assert config["jwt_secret"] == "<redacted>"
    assert config["admin_api_key"] == "<redacted>"
    assert config["max_connections"] == 10000
    assert SECRET not in err
    assert "admin-key-0123456789" not in err


def test_dev_mode_prints_a_token_the_server_accepts(
    started: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--dev"])

    assert exited.value.code == 3
    [settings] = started
    assert settings.dev is True
    assert settings.bind_host == "127.0.0.1"
    assert settings.jwt_secret is not None
    out, err = capsys.readouterr()
    assert "ws://127.0.0.1:3000/ws" in out
    [token] = re.findall(r"^ +Token +(eyJ\S+)$", out, re.MULTILINE)
    claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"])
    assert claims["tenant_id"] == "dev-tenant"
    assert token not in err
    assert settings.jwt_secret not in err
