"""Figures from repeated runs: medians and ranges, ratios against the hub, the issue's targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Better = Literal["higher", "lower", "info"]
RunFigures = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class Metric:
    """How a figure is named, shown and judged."""

    label: str
    unit: str
    better: Better
    digits: int = 1


METRICS: Final[dict[str, Metric]] = {
    "handshakes_per_s": Metric("handshakes/s", "1/s", "higher", 0),
    "connect_p50_ms": Metric("connect time p50", "ms", "lower", 2),
    "connect_p99_ms": Metric("connect time p99", "ms", "lower", 2),
    "connect_total_s": Metric("time to connect all", "s", "lower", 2),
    "rss_per_conn_kib": Metric("RSS per idle connection", "KiB", "lower", 2),
    "server_cpu_us_per_handshake": Metric("server CPU per handshake", "µs", "lower", 0),
    "client_cpu_us_per_handshake": Metric("load-client CPU per handshake", "µs", "info", 0),
    "failed": Metric("failed connections", "", "lower", 0),
    "deliveries_per_s": Metric("deliveries/s", "1/s", "higher", 0),
    "server_cpu_us_per_delivery": Metric("server CPU per delivery", "µs", "lower", 2),
    "client_cpu_us_per_delivery": Metric("load-client CPU per delivery", "µs", "info", 2),
    "server_cpu_util": Metric("server CPU (1.0 = one core)", "", "info", 2),
    "client_cpu_util": Metric("load-client CPU (1.0 = one core)", "", "info", 2),
    "machine_busy": Metric("machine busy (1.0 = all cores)", "", "info", 2),
    "other_cpu": Metric("other CPU: kernel softirq, other processes (cores)", "", "info", 2),
    "p50_ms": Metric("publish→receive p50", "ms", "lower", 2),
    "p99_ms": Metric("publish→receive p99", "ms", "lower", 2),
    "p999_ms": Metric("publish→receive p99.9", "ms", "lower", 2),
    "max_ms": Metric("publish→receive max", "ms", "lower", 2),
    "loss": Metric("lost deliveries", "", "lower", 0),
    "foreign": Metric("deliveries to uninterested connections", "", "lower", 0),
    "publish_failures": Metric("publishes not accepted", "", "lower", 0),
    "miscounted": Metric("connections that got a wrong count", "", "lower", 0),
    "empty_publish_us": Metric("server CPU per publish nobody watches", "µs", "lower", 0),
    "marginal_us_per_delivery": Metric(
        "server CPU per delivery, publish cost removed", "µs", "lower", 2
    ),
}


class LatencyHistogram:
    """Merged log-bucket histograms from the load clients (bucket i covers up to growth**i µs)."""

    def __init__(self, parts: Iterable[Mapping[str, Any]]) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.min_us: float | None = None
        self.max_us: float | None = None
        self.growth = 1.01
        for part in parts:
            self.growth = float(part["growth"])
            for index, count in part["buckets"]:
                self.counts[int(index)] = self.counts.get(int(index), 0) + int(count)
            self.n += int(part["n"])
            if part["minUs"] is not None:
                low = float(part["minUs"])
                self.min_us = low if self.min_us is None else min(self.min_us, low)
            if part["maxUs"] is not None:
                high = float(part["maxUs"])
                self.max_us = high if self.max_us is None else max(self.max_us, high)

    def percentile_ms(self, q: float) -> float | None:
        """The q-quantile in ms (1 % resolution, clamped to the exact min and max)."""
        if self.n == 0 or self.max_us is None or self.min_us is None:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                value = min(self.max_us, max(self.min_us, self.growth**index))
                return value / 1000
        return self.max_us / 1000


def summarize(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that exist; None when none does."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def paired_ratios(pm: Sequence[RunFigures], hub: Sequence[RunFigures], key: str) -> list[float]:
    """pm-server ÷ hub for `key`, repeat by repeat (each pair ran in the same invocation)."""
    ratios = []
    for ours, theirs in zip(pm, hub, strict=False):
        a, b = ours.get(key), theirs.get(key)
        if a is not None and b is not None and b != 0:
            ratios.append(a / b)
    return ratios


def scenario_summary(runs: Mapping[str, Sequence[RunFigures]]) -> dict[str, dict[str, Any]]:
    """Per metric: each server's median [min–max] and the pm-server ÷ hub ratios."""
    pm, hub = runs.get("pm-server", []), runs.get("hub", [])
    keys = [k for k in METRICS if any(k in r for r in (*pm, *hub))]
    summary: dict[str, dict[str, Any]] = {}
    for key in keys:
        pm_summary = summarize([r.get(key) for r in pm])
        hub_summary = summarize([r.get(key) for r in hub])
        ratio = summarize(list(paired_ratios(pm, hub, key)))
        if ratio is None and pm_summary and hub_summary and hub_summary["median"]:
            ratio = {"median": pm_summary["median"] / hub_summary["median"]}
        summary[key] = {"pm-server": pm_summary, "hub": hub_summary, "ratio": ratio}
    return summary


def _fmt(value: float, digits: int) -> str:
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cell(stats: Mapping[str, float] | None, digits: int) -> str:
    if stats is None:
        return "–"
    if "min" not in stats:
        return _fmt(stats["median"], digits)
    if stats.get("n", 1) == 1 or stats["min"] == stats["max"]:
        return _fmt(stats["median"], digits)
    return (
        f"{_fmt(stats['median'], digits)} "
        f"[{_fmt(stats['min'], digits)}–{_fmt(stats['max'], digits)}]"
    )


def _ratio_cell(stats: Mapping[str, float] | None) -> str:
    if stats is None:
        return "–"
    if "min" not in stats or stats.get("n", 1) == 1 or stats["min"] == stats["max"]:
        return f"{stats['median']:.2f}×"
    return f"{stats['median']:.2f}× [{stats['min']:.2f}–{stats['max']:.2f}]"


def markdown(result: Mapping[str, Any]) -> str:
    """The results as Markdown: one table of every figure, then the targets."""
    meta = result["meta"]
    lines = [
        f"# pm-server vs aiohttp hub — {meta['started_at']}",
        "",
        f"{meta['preset']} preset, {meta['repeat']} repeat(s); {meta['machine']}. "
        f"Figures are median [min–max] over repeats; ratio = pm-server ÷ hub, "
        "paired repeat by repeat (< 1 is better for times and costs, > 1 for rates).",
        "",
        "| scenario | metric | pm-server | hub | ratio |",
        "|---|---|---|---|---|",
    ]
    for scenario in result["scenarios"]:
        for key, row in scenario["summary"].items():
            metric = METRICS[key]
            unit = f" ({metric.unit})" if metric.unit and metric.unit != "1/s" else ""
            lines.append(
                f"| {scenario['name']} | {metric.label}{unit} | "
                f"{_cell(row['pm-server'], metric.digits)} | {_cell(row['hub'], metric.digits)} | "
                f"{_ratio_cell(row['ratio'])} |"
            )
    lines += [
        "",
        "## Targets (issue 6)",
        "",
        "| target | value | goal | met |",
        "|---|---|---|---|",
    ]
    for target in result["targets"]:
        value = "–" if target["value"] is None else f"{target['value']:.2f}"
        met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
        lines.append(f"| {target['name']} | {value} | {target['goal']} | {met} |")
    notes = result.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Target:
    """One acceptance figure of issue 6, read from the summaries."""

    name: str
    scenario: str
    metric: str
    op: Literal["<=", ">="]
    goal: float
    of: Literal["ratio", "pm-server"] = "ratio"
    versus: tuple[str, str] | None = None  # (scenario, metric) whose pm-server median divides


TARGETS: Final[tuple[Target, ...]] = (
    Target("saturation 1000×1000: server CPU/delivery vs hub", "saturation-1000x1000",
           "server_cpu_us_per_delivery", "<=", 0.67),
    Target("saturation 1000×1000: deliveries/s vs hub", "saturation-1000x1000",
           "deliveries_per_s", ">=", 1.3),
    Target("saturation 5000×200: server CPU/delivery vs hub", "saturation-5000x200",
           "server_cpu_us_per_delivery", "<=", 0.67),
    Target("saturation 5000×200: deliveries/s vs hub", "saturation-5000x200",
           "deliveries_per_s", ">=", 1.3),
    Target("latency 20k/s: p99 vs hub", "latency-20k", "p99_ms", "<=", 1.0),
    Target("idle: RSS per connection vs hub", "idle", "rss_per_conn_kib", "<=", 1.3),
    Target("idle: handshakes/s vs hub", "idle", "handshakes_per_s", ">=", 0.75),
    Target("filtered (events over 100 projects) vs unfiltered 1000×1000: pm-server CPU/delivery",
           "filtered", "server_cpu_us_per_delivery", "<=", 1.0, of="pm-server",
           versus=("saturation-1000x1000", "server_cpu_us_per_delivery")),
    Target("one project's events, 1000 connections open vs only its watchers: pm-server "
           "CPU/delivery", "filtered-one-project", "server_cpu_us_per_delivery", "<=", 1.0,
           of="pm-server", versus=("filtered-control", "server_cpu_us_per_delivery")),
)  # fmt: skip


def evaluate_targets(scenarios: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each target's value (a median ratio) and whether it is met; None when not measured."""
    by_name = {s["name"]: s["summary"] for s in scenarios}

    def median(scenario: str, metric: str, of: str) -> float | None:
        stats = by_name.get(scenario, {}).get(metric, {}).get(of)
        return None if stats is None else float(stats["median"])

    evaluated = []
    for target in TARGETS:
        value = median(target.scenario, target.metric, target.of)
        if target.versus is not None and value is not None:
            base = median(*target.versus, "pm-server")
            value = value / base if base else None
        met = None
        if value is not None:
            met = value <= target.goal if target.op == "<=" else value >= target.goal
        evaluated.append(
            {"name": target.name, "value": value, "goal": f"{target.op} {target.goal}", "met": met}
        )
    return evaluated
