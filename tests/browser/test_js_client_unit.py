"""The browser client's own checks (`npm test`, `npm run check` in clients/js) under pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js"
NPM_TIMEOUT_SECS = 300


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Node 20+ with npm runs the client's tests)")
    if not (CLIENT / "node_modules").is_dir():
        pytest.skip("clients/js/node_modules is missing: run `npm ci` in clients/js")
    return subprocess.run(
        [npm, *args],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_SECS,
        check=False,
    )


def test_js_client_unit_tests_pass() -> None:
    result = _npm("test")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "# fail 0" in output, output


def test_committed_generated_code_and_demo_bundle_are_fresh() -> None:
    result = _npm("run", "check")
    assert result.returncode == 0, result.stdout + result.stderr
