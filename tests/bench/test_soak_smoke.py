"""The soak runs for seconds at tiny scale, so its code can't rot; its loss count is checked too.

The smoke run asserts the report's shape and that nothing was lost, duplicated or logged as
an error; it asserts no memory figure (a few seconds say nothing about a slope). The
`soakcheck` tests show that the loss count would see a loss.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench"

# 50 connections over 5 projects, half churning at 5/s, 20 publishes/s for 5 s. Half the
# tokens live 2 s and the server's leeway is 1 s, so connections are closed 4001 and resume.
SMOKE = (
    "--connections", "50", "--churn", "5", "--publish-rate", "20", "--duration", "5",
    "--projects", "5", "--tenants", "1", "--token-mix", "2:0.5,86400:0.5", "--leeway", "1",
    "--sample-every", "1",
)  # fmt: skip


def _load_soakcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_soakcheck", BENCH / "soakcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


soakcheck = _load_soakcheck()


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak")
    command = [sys.executable, str(BENCH / "soak.py"), *SMOKE, "--out", str(out), "--name", "s"]
    finished = subprocess.run(command, timeout=60, capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    document: dict[str, Any] = json.loads((out / "s.json").read_text())
    document["markdown"] = (out / "s.md").read_text()
    return document


def test_every_event_reaches_every_subscriber_once_in_order(soak: dict[str, Any]) -> None:
    f = soak["figures"]
    assert f["published"] > 0
    assert f["delivered"] == f["expected"] > 0
    assert f["lost"] == f["duplicates"] == f["out_of_order"] == f["foreign"] == 0
    assert f["unaccounted"] == f["stale"] == 0
    assert f["delivery_p99_ms"] is not None


def test_connections_churn_expire_with_4001_and_resume(soak: dict[str, Any]) -> None:
    f = soak["figures"]
    assert f["ramped"] == 50
    assert f["churned"] > 0
    assert f["expired_closes"] > 0
    assert f["expired_early"] == f["expiry_overdue"] == 0
    assert f["resumes"] == f["expired_closes"]
    assert f["resumes_unrecovered"] == f["unexpected_closes"] == f["connect_failures"] == 0


def test_server_is_sampled_and_its_log_has_no_error(soak: dict[str, Any]) -> None:
    f = soak["figures"]
    assert len(soak["samples"]) >= 3
    assert all(s["rss_mib"] > 0 and s["fds"] > 0 for s in soak["samples"])
    for key in ("rss_start_mib", "rss_warm_mib", "rss_end_mib", "rss_after_close_mib"):
        assert f[key] > 0, key
    assert f["fds_max"] >= 50
    assert f["error_lines"] == f["traceback_lines"] == 0
    assert f["server_left_connections"] == 0
    assert f["server_exit_code"] == 0


def test_report_judges_every_check_and_renders_a_table(soak: dict[str, Any]) -> None:
    checks = {c["name"]: c["ok"] for c in soak["checks"]}
    assert checks["rss_slope_mib_per_h"] is None  # five seconds can't judge a slope
    assert all(ok is not False for ok in checks.values()), soak["checks"]
    assert soak["ok"] is True
    for label in ("| lost events", "| RSS slope after warm-up", "| open fds max", "**PASS**"):
        assert label in soak["markdown"]


def _window(start: int, *received: int, end_at: float = 100.0, grace: float = 0.0) -> Any:
    window = soakcheck.Window(("t", "p"), "e", start)
    for seq in received:
        window.receive("e", seq, True)
    window.end(end_at, grace)
    return window


def _ledger(*published: tuple[int, float]) -> Any:
    ledger = soakcheck.Ledger()
    for seq, answered_at in published:
        ledger.published(("t", "p"), seq, answered_at)
    return ledger


def test_a_gap_inside_a_window_is_a_loss() -> None:
    ledger = _ledger((3, 1.0), (5, 2.0), (8, 3.0))
    loss = ledger.evaluate([_window(2, 3, 8)])
    assert (loss.expected, loss.received, loss.lost, loss.lost_windows) == (3, 2, 1, 1)


def test_an_event_answered_before_the_fence_but_never_received_is_a_loss() -> None:
    ledger = _ledger((3, 1.0), (5, 99.0), (8, 101.0))
    assert ledger.evaluate([_window(2, 3, end_at=100.0)]).lost == 1
    assert ledger.evaluate([_window(2, 3, end_at=100.0, grace=2.0)]).lost == 0


def test_events_before_the_subscribe_are_not_expected() -> None:
    ledger = _ledger((1, 1.0), (2, 2.0), (3, 3.0))
    loss = ledger.evaluate([_window(2, 3)])
    assert (loss.expected, loss.lost) == (1, 0)


def test_repeated_and_reordered_seqs_are_told_apart() -> None:
    window = _window(0, 1, 2, 4, 4, 3)
    assert (window.received, window.duplicates, window.out_of_order) == (3, 1, 1)


def test_slope_is_least_squares_per_hour() -> None:
    points = [(float(t), 100.0 + t / 60) for t in range(0, 600, 5)]
    assert soakcheck.slope_per_hour(points) == pytest.approx(60.0)
    assert soakcheck.slope_per_hour(points[:2]) is None
