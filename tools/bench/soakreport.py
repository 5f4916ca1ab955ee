"""A soak's figures, its pass/fail checks, and its Markdown table; the server log's tally."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from soakcheck import Loss, slope_per_hour

_LOG_LEVEL: Final = re.compile(r"^\S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_TRACEBACK: Final = "Traceback (most recent call last)"


@dataclass(slots=True)
class Sample:
    """One reading during the load; `t` is seconds since the load started."""

    t: float
    rss_mib: float
    fds: int
    server_cpu_s: float
    server_wait_s: float  # runnable, waiting for a CPU (/proc/<pid>/schedstat)
    client_cpu_s: float
    open_connections: int
    churned: int
    expired: int
    published: int
    delivered: int
    machine_busy: float | None = None
    redis_rss_mib: float | None = None


@dataclass(slots=True)
class Observed:
    """Everything a soak run measured, before it becomes figures."""

    samples: list[Sample]
    loss: Loss
    log: dict[str, Any]
    counts: Counter[str]
    idle: tuple[float, int]  # RSS MiB and fds before any connection
    ramped: tuple[float, int, int, float]  # RSS, fds, slots subscribed, seconds to ramp
    end: tuple[float, int, int]  # RSS, fds and client sockets when the load stopped
    closed: tuple[float, int, int | None, int]  # RSS, fds, server's count, sockets after close
    cpu: tuple[float, float, float]  # server and client CPU seconds over the load's seconds
    metrics_bytes: tuple[int | None, int | None]
    published: int
    publish_secs: Sequence[float]
    epochs_per_tenant: int
    delivered: int
    latency_ms: list[int]  # deliveries by whole ms from publish to arrival; last: ≥ the rest
    expiry_lateness: list[float]
    overdue: int
    returncode: int | None
    notes: list[str] = field(default_factory=list)


def scan_log(path: Path, examples: int = 5) -> dict[str, Any]:
    """Count the log's lines by level, its tracebacks, and lines in no known form."""
    levels: Counter[str] = Counter()
    tracebacks = other = 0
    shown: list[str] = []
    in_traceback = False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for raw in lines:
            line = raw.rstrip("\n")
            match = _LOG_LEVEL.match(line)
            if match is not None:
                levels[match.group(1)] += 1
                in_traceback = False
                if match.group(1) in ("ERROR", "CRITICAL") and len(shown) < examples:
                    shown.append(line[:400])
            elif _TRACEBACK in line:
                tracebacks += 1
                in_traceback = True
            elif not in_traceback and line.strip():
                other += 1
                if len(shown) < examples:
                    shown.append(line[:400])
    return {
        "error_lines": levels["ERROR"] + levels["CRITICAL"],
        "traceback_lines": tracebacks,
        "warning_lines": levels["WARNING"],
        "unformatted_lines": other,
        "examples": shown,
    }


def _quantile(values: Sequence[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def _bucket_quantile(counts: Sequence[int], q: float) -> int | None:
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for ms, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return ms
    return len(counts) - 1


def _rate(samples: Sequence[Sample], key: str) -> float | None:
    if len(samples) < 2 or samples[-1].t <= samples[0].t:
        return None
    return (getattr(samples[-1], key) - getattr(samples[0], key)) / (samples[-1].t - samples[0].t)


def figures(config: Mapping[str, Any], seen: Observed) -> dict[str, Any]:
    """The report's figures (JSON-ready), from the run's configuration and observations."""
    counts = seen.counts
    samples = seen.samples
    warm = [s for s in samples if s.t >= config["warmup_secs"]]
    server_cpu, client_cpu, load_secs = seen.cpu
    lateness = sorted(seen.expiry_lateness)
    publish_ms = sorted(x * 1000 for x in seen.publish_secs)
    busy = [s.machine_busy for s in samples if s.machine_busy is not None]
    loss = seen.loss

    def by_prefix(prefix: str) -> dict[str, int]:
        return {k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix)}

    unexpected = by_prefix("unexpected_close:")
    connect_failed = by_prefix("connect_failed:")
    publish_failed = by_prefix("publish_failed:")
    return {
        "rss_start_mib": seen.idle[0],
        "rss_ramped_mib": seen.ramped[0],
        "rss_warm_mib": warm[0].rss_mib if warm else None,
        "rss_end_mib": seen.end[0],
        "rss_max_mib": max((s.rss_mib for s in samples), default=None),
        "rss_after_close_mib": seen.closed[0],
        "rss_slope_mib_per_h": slope_per_hour([(s.t, s.rss_mib) for s in warm]),
        "rss_slope_all_mib_per_h": slope_per_hour([(s.t, s.rss_mib) for s in samples]),
        "slope_window_s": warm[-1].t - warm[0].t if len(warm) > 1 else 0.0,
        "warmup_s": config["warmup_secs"],
        "redis_rss_end_mib": samples[-1].redis_rss_mib if samples else None,
        "fds_start": seen.idle[1],
        "fds_ramped": seen.ramped[1],
        "fds_end": seen.end[1],
        "fds_max": max((s.fds for s in samples), default=None),
        "fds_after_close": seen.closed[1],
        "sockets_end": seen.end[2],
        "sockets_after_close": seen.closed[3],
        "fds_slope_per_h": slope_per_hour([(s.t, float(s.fds)) for s in warm]),
        "connections": config["connections"],
        "ramped": seen.ramped[2],
        "ramp_s": seen.ramped[3],
        "open_connections_min": min((s.open_connections for s in samples), default=None),
        "connects": counts["connects"],
        "churned": counts["churned"],
        "churn_per_s": _rate(samples, "churned"),
        "churned_reset": counts["churned_reset"],
        "expired_closes": counts["expired_closes"],
        "expiry_lateness_p50_s": _quantile(lateness, 0.5),
        "expiry_lateness_max_s": lateness[-1] if lateness else None,
        "expired_early": counts["expired_early"],
        "expiry_overdue": seen.overdue,
        "resumes": counts["resumes"],
        "resumes_unrecovered": counts["resumes_unrecovered"],
        "replayed": counts["replayed"],
        "unexpected_closes": sum(unexpected.values()),
        "unexpected_close_codes": unexpected,
        "connect_failures": sum(connect_failed.values()),
        "connect_failure_reasons": connect_failed,
        "fence_failures": counts["fence_failed"],
        "server_errors_sent": by_prefix("server_error:"),
        "slot_failures": (
            sum(by_prefix("slot_crashed:").values()) + counts["slot_stuck"] + counts["worker_lost"]
        ),
        "published": seen.published,
        "publish_per_s": seen.published / load_secs if load_secs else None,
        "publish_failures": sum(publish_failed.values()),
        "publish_skipped": counts["publish_skipped"],
        "publish_failure_reasons": publish_failed,
        "publish_p50_ms": _quantile(publish_ms, 0.5),
        "publish_p99_ms": _quantile(publish_ms, 0.99),
        "epochs_per_tenant_max": seen.epochs_per_tenant,
        "delivered": seen.delivered,
        "deliveries_per_s": seen.delivered / load_secs if load_secs else None,
        "delivery_p50_ms": _bucket_quantile(seen.latency_ms, 0.5),
        "delivery_p99_ms": _bucket_quantile(seen.latency_ms, 0.99),
        "delivery_p999_ms": _bucket_quantile(seen.latency_ms, 0.999),
        "delivery_max_ms": _bucket_quantile(seen.latency_ms, 1.0),
        "expected": loss.expected,
        "lost": loss.lost,
        "lost_windows": loss.lost_windows,
        "windows": loss.windows,
        "duplicates": loss.duplicates,
        "out_of_order": loss.out_of_order,
        "foreign": loss.foreign,
        "stale": loss.stale,
        "unaccounted": loss.unaccounted,
        "epoch_changes": loss.epoch_changes,
        "error_lines": seen.log["error_lines"],
        "traceback_lines": seen.log["traceback_lines"],
        "warning_lines": seen.log["warning_lines"],
        "unformatted_lines": seen.log["unformatted_lines"],
        "server_left_connections": seen.closed[2],
        "server_exit_code": seen.returncode,
        "server_cpu_util": server_cpu / load_secs if load_secs else None,
        "server_cpu_wait": _rate(samples, "server_wait_s"),
        "client_cpu_util": client_cpu / load_secs if load_secs else None,
        "machine_busy": statistics.fmean(busy) if busy else None,
        "metrics_bytes_start": seen.metrics_bytes[0],
        "metrics_bytes_end": seen.metrics_bytes[1],
        "load_s": load_secs,
    }


_ZERO: Final = (
    "lost", "duplicates", "out_of_order", "foreign", "unaccounted", "epoch_changes",
    "error_lines", "traceback_lines", "unexpected_closes", "connect_failures", "fence_failures",
    "resumes_unrecovered", "expired_early", "expiry_overdue", "publish_failures",
    "slot_failures",
)  # fmt: skip


def checks(config: Mapping[str, Any], f: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each pass/fail condition: its value, its limit, and `ok` (None: not judged)."""

    def check(name: str, value: Any, limit: float, ok: bool | None) -> dict[str, Any]:
        return {"name": name, "value": value, "limit": limit, "ok": ok}

    result = [check(name, f[name], 0, f[name] == 0) for name in _ZERO]
    slope, most = f["rss_slope_mib_per_h"], config["max_slope_mib_per_hour"]
    judged = slope is not None and f["slope_window_s"] >= config["min_slope_window_secs"]
    result.append(check("rss_slope_mib_per_h", slope, most, slope <= most if judged else None))
    connections = config["connections"]
    result.append(check("ramped", f["ramped"], connections, f["ramped"] == connections))
    left = f["server_left_connections"]
    result.append(check("server_left_connections", left, 0, left == 0))
    sockets = f["sockets_after_close"]
    result.append(check("sockets_after_close", sockets, 0, sockets == 0))
    code = f["server_exit_code"]
    result.append(check("server_exit_code", code, 0, code == 0))
    return result


def notes(config: Mapping[str, Any], f: Mapping[str, Any]) -> list[str]:
    """What limited the run rather than failed the server."""
    said = []
    rate = f["publish_per_s"]
    if rate is not None and rate < 0.9 * config["publishes_per_sec"]:
        said.append(
            f"published {rate:.0f}/s of the {config['publishes_per_sec']:g}/s asked "
            f"({f['publish_skipped']:,} skipped, answers p99 {f['publish_p99_ms'] or 0:,.0f} ms): "
            "the server, or the machine it shares, did not keep up (see machine_busy)"
        )
    churn = f["churn_per_s"]
    if churn is not None and churn < 0.8 * config["churn_per_sec"]:
        said.append(f"churned {churn:.1f}/s of the {config['churn_per_sec']:g}/s asked")
    wait = f["server_cpu_wait"]
    if wait is not None and wait > 0.1:
        said.append(
            f"the server was runnable but waiting for a CPU {wait:.0%} of the time: "
            "the machine was short of cores"
        )
    if f["client_cpu_util"] is not None and f["client_cpu_util"] > 0.9:
        said.append(f"the soak client used {f['client_cpu_util']:.2f} of a core")
    return said


_ROWS: Final[tuple[tuple[str, str, int], ...]] = (
    ("rss_start_mib", "server RSS before connections (MiB)", 1),
    ("rss_ramped_mib", "RSS with every connection open (MiB)", 1),
    ("rss_warm_mib", "RSS after warm-up (MiB)", 1),
    ("rss_end_mib", "RSS at the end of the load (MiB)", 1),
    ("rss_max_mib", "RSS max (MiB)", 1),
    ("rss_after_close_mib", "RSS after every connection closed (MiB)", 1),
    ("rss_slope_mib_per_h", "RSS slope after warm-up (MiB/h, least squares)", 2),
    ("rss_slope_all_mib_per_h", "RSS slope over the whole load (MiB/h)", 2),
    ("slope_window_s", "seconds of samples in the slope", 0),
    ("fds_start", "open fds before connections", 0),
    ("fds_end", "open fds at the end of the load", 0),
    ("fds_max", "open fds max", 0),
    ("fds_after_close", "open fds after every connection closed", 0),
    ("sockets_after_close", "client sockets the server still held after closing", 0),
    ("connects", "connections opened", 0),
    ("churned", "connections churned (fenced, closed by the client)", 0),
    ("churn_per_s", "churn/s during the load", 1),
    ("expired_closes", "closed 4001 at token expiry (then resumed)", 0),
    ("expiry_lateness_max_s", "latest 4001 after exp + leeway (s)", 2),
    ("resumes", "resumes (after 4001 or a drop)", 0),
    ("replayed", "events replayed by resumes", 0),
    ("unexpected_closes", "closes the client did not ask for, other than 4001", 0),
    ("connect_failures", "failed connects", 0),
    ("published", "events published (200)", 0),
    ("publish_per_s", "publishes/s", 1),
    ("publish_p99_ms", "publish answer p99 (ms)", 1),
    ("delivered", "events delivered", 0),
    ("deliveries_per_s", "deliveries/s", 0),
    ("delivery_p50_ms", "publish → delivery p50 (ms, whole ms)", 0),
    ("delivery_p99_ms", "publish → delivery p99 (ms)", 0),
    ("delivery_max_ms", "publish → delivery max (ms; 10,000 = 10 s or more)", 0),
    ("expected", "deliveries expected in fenced windows", 0),
    ("lost", "lost events (gaps and tails of windows)", 0),
    ("duplicates", "duplicates", 0),
    ("out_of_order", "out of seq order", 0),
    ("error_lines", "server log ERROR/CRITICAL lines", 0),
    ("traceback_lines", "server log tracebacks", 0),
    ("warning_lines", "server log WARNING lines", 0),
    ("metrics_bytes_end", "/metrics size at the end (bytes)", 0),
    ("server_cpu_util", "server CPU (1.0 = one core)", 2),
    ("server_cpu_wait", "server waiting for a CPU (s per s)", 2),
    ("client_cpu_util", "soak client CPU, all its processes (1.0 = one core)", 2),
    ("machine_busy", "machine busy (1.0 = all cores)", 2),
)


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(result: Mapping[str, Any]) -> str:
    """The figures and checks as Markdown tables."""
    meta, config, f = result["meta"], result["config"], result["figures"]
    mix = ", ".join(f"{ttl:g} s ×{share:g}" for ttl, share in config["token_mix"])
    lines = [
        f"# pm-server soak — {meta['started_at']}",
        "",
        f"{config['connections']:,} connections ({config['churning_share']:.0%} churning at "
        f"{config['churn_per_sec']:g}/s), {config['publishes_per_sec']:g} publishes/s over "
        f"{config['projects']} projects of {config['tenants']} tenants, token lifetimes {mix}; "
        f"{config['broker']} broker; {f['load_s']:.0f} s of load, warm-up "
        f"{config['warmup_secs']:.0f} s; {meta['machine']}; commit {meta['commit']}"
        f"{' (dirty)' if meta['dirty'] else ''}.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {_fmt(f.get(key), digits)} |" for key, label, digits in _ROWS]
    samples = result["samples"]
    if samples:
        tenths = [samples[round(i * (len(samples) - 1) / 10)] for i in range(11)]
        trace = ", ".join(f"{s['rss_mib']:.0f} ({s['t'] / 60:.1f})" for s in tenths)
        lines += ["", f"RSS in MiB (minute of the load): {trace}."]
    lines += ["", "| check | value | limit | ok |", "|---|---|---|---|"]
    for c in result["checks"]:
        ok = {True: "yes", False: "**no**", None: "not judged"}[c["ok"]]
        lines.append(f"| {c['name']} | {_fmt(c['value'], 2)} | {c['limit']:g} | {ok} |")
    lines += ["", f"**{'PASS' if result['ok'] else 'FAIL'}**"]
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in result["notes"]]
    if result["log_examples"]:
        lines += ["", "Server log lines:", ""] + [f"    {x}" for x in result["log_examples"]]
    return "\n".join(lines) + "\n"
