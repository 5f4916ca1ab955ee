"""The bench runs every scenario at tiny size against both servers, so its code can't rot.

Nothing here asserts a timing: only that every figure is produced and that deliveries are
counted exactly. Needs Node.js and `npm ci` in tools/bench/node; skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench"
SERVERS = ("pm-server", "hub")
# Machine-wide figures come from /proc/stat jiffies (10 ms): a tiny run may see none pass.
TICK_BASED = frozenset({"machine_busy", "other_cpu"})
FANOUT_SCENARIOS = (
    "saturation-5x10",
    "saturation-10x5",
    "latency-100",
    "latency-200",
    "filtered",
    "filtered-one-project",
    "filtered-control",
)


def _missing_node() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (BENCH / "node" / "node_modules" / "ws").is_dir():
        return "tools/bench/node/node_modules is missing: run `npm ci --prefix tools/bench/node`"
    return None


pytestmark = pytest.mark.skipif(_missing_node() is not None, reason=_missing_node() or "")


def _run_bench(out: Path, *extra: str) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "run.py"), "--smoke", "--quiet-wait", "0"]
    subprocess.run(
        [*command, "--out", str(out), *extra],
        check=True,
        timeout=100,
        capture_output=True,
    )
    (result,) = out.glob("bench-*.json")
    document: dict[str, Any] = json.loads(result.read_text())
    return document


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_bench(tmp_path_factory.mktemp("bench"))


def _runs(bench: dict[str, Any], name: str, server: str) -> list[dict[str, Any]]:
    (scenario,) = [s for s in bench["scenarios"] if s["name"] == name]
    runs: list[dict[str, Any]] = scenario["runs"][server]
    return runs


def test_every_scenario_produces_figures_for_both_servers(bench: dict[str, Any]) -> None:
    names = [s["name"] for s in bench["scenarios"]]
    assert names == ["idle", *FANOUT_SCENARIOS]
    for scenario in bench["scenarios"]:
        for server in SERVERS:
            (run,) = scenario["runs"][server]
            assert "error" not in run, run
        for key, row in scenario["summary"].items():
            if key in TICK_BASED:
                continue
            assert row["pm-server"] is not None, key
            assert row["hub"] is not None, key


def test_idle_connections_all_open_and_memory_is_read(bench: dict[str, Any]) -> None:
    for server in SERVERS:
        (run,) = _runs(bench, "idle", server)
        assert run["failed"] == 0
        assert run["handshakes_per_s"] > 0
        assert run["_rss_after_mib"] > 0


@pytest.mark.parametrize("name", FANOUT_SCENARIOS)
def test_every_subscriber_counts_each_of_its_events_once(bench: dict[str, Any], name: str) -> None:
    for server in SERVERS:
        (run,) = _runs(bench, name, server)
        assert run["_received"] == run["_expected"] > 0
        assert run["loss"] == 0
        assert run["miscounted"] == 0
        assert run["publish_failures"] == 0
        assert run["_unexpected_closes"] == 0
        assert run["p99_ms"] is not None
        assert run["server_cpu_us_per_delivery"] is not None


def test_filtered_events_reach_only_connections_watching_their_project(
    bench: dict[str, Any],
) -> None:
    sizes = bench["sizes"]
    per_event = sizes["filtered_connections"] // sizes["filtered_projects"]
    for server in SERVERS:
        (spread,) = _runs(bench, "filtered", server)
        assert spread["foreign"] == 0
        assert spread["_received"] == sizes["filtered_events"] * per_event
        assert spread["empty_publish_us"] is not None
        (one_project,) = _runs(bench, "filtered-one-project", server)
        (control,) = _runs(bench, "filtered-control", server)
        assert one_project["foreign"] == control["foreign"] == 0
        assert one_project["_received"] == control["_received"]


def test_markdown_table_lists_every_scenario_and_target(bench: dict[str, Any]) -> None:
    table = Path(bench["meta"]["out"]).with_suffix(".md").read_text()
    for scenario in bench["scenarios"]:
        assert f"| {scenario['name']} |" in table
    for target in bench["targets"]:
        assert target["name"] in table


def test_the_ws_package_client_counts_the_same(tmp_path: Path) -> None:
    result = _run_bench(tmp_path, "--ws-client", "ws", "--only", "saturation-5x")
    (scenario,) = result["scenarios"]
    for server in SERVERS:
        (run,) = scenario["runs"][server]
        assert run["_received"] == run["_expected"] > 0
