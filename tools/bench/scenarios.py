"""The bench scenarios: idle connections, saturation bursts, paced latency, filtered fanout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from loadgen import NodeClient, Reply, SubscriberPool, start_client
from pm_testkit import Credentials
from report import LatencyHistogram
from servers import (
    CPUS,
    RunningServer,
    ServerKind,
    ServerLimits,
    profiled,
    run_server,
    wait_for_quiet,
)

Figures = dict[str, float | None]

_EMPTY_PROJECT: Final = "nobody-watches"
_TENANT: Final = "bench"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is; see `PRESETS`."""

    idle_connections: int
    saturation: tuple[tuple[int, int], ...]  # (subscribers, events) pairs
    latency_subscribers: int
    latency_rates: tuple[int, ...]  # deliveries per second
    latency_secs: float
    filtered_connections: int
    filtered_projects: int
    filtered_events: int
    empty_publishes: int
    publish_concurrency: int = 16
    connect_concurrency: int = 100
    payload_bytes: int = 64


PRESETS: Final[dict[str, Sizes]] = {
    "full": Sizes(
        idle_connections=10_000,
        saturation=((1000, 1000), (5000, 200)),
        latency_subscribers=1000,
        latency_rates=(20_000, 100_000),
        latency_secs=10.0,
        filtered_connections=1000,
        filtered_projects=100,
        filtered_events=5000,
        empty_publishes=1000,
    ),
    "quick": Sizes(
        idle_connections=3000,
        saturation=((1000, 300), (5000, 60)),
        latency_subscribers=1000,
        latency_rates=(20_000, 100_000),
        latency_secs=3.0,
        filtered_connections=1000,
        filtered_projects=100,
        filtered_events=2000,
        empty_publishes=500,
    ),
    "smoke": Sizes(
        idle_connections=5,
        saturation=((5, 10), (10, 5)),
        latency_subscribers=5,
        latency_rates=(100, 200),
        latency_secs=0.5,
        filtered_connections=10,
        filtered_projects=5,
        filtered_events=10,
        empty_publishes=5,
        connect_concurrency=5,
    ),
}


@dataclass(frozen=True, slots=True)
class BenchContext:
    """What every scenario run shares: secrets, sizes, where logs go, how to reach servers."""

    credentials: Credentials
    sizes: Sizes
    log_dir: Path
    client_processes: int
    local_addresses: tuple[str, ...]
    limits: ServerLimits
    ws_client: str = "raw"
    quiet_wait_secs: float = 20.0
    profile_dir: Path | None = None
    profile_format: str = "raw"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named measurement; `run` yields one `Figures` per sub-scenario name."""

    name: str
    params: dict[str, Any]
    run: Callable[[BenchContext, RunningServer], Awaitable[dict[str, Figures]]]
    produces: tuple[str, ...]


def _mode(server: RunningServer) -> str:
    return "pm" if server.kind == "pm-server" else "hub"


@contextlib.asynccontextmanager
async def _clients(
    ctx: BenchContext, label: str
) -> AsyncIterator[tuple[SubscriberPool, NodeClient]]:
    async with contextlib.AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(
                start_client(f"subscribers-{i}", ctx.log_dir / f"{label}-subscribers-{i}.log")
            )
            for i in range(ctx.client_processes)
        ]
        publisher = await stack.enter_async_context(
            start_client("publisher", ctx.log_dir / f"{label}-publisher.log")
        )
        yield SubscriberPool(subscribers, list(ctx.local_addresses)), publisher


async def _connect(ctx: BenchContext, server: RunningServer, pool: SubscriberPool, n: int) -> Reply:
    reply = await pool.connect(
        server.ws_url,
        n,
        secret=ctx.credentials.jwt_secret,
        mode=_mode(server),
        concurrency=ctx.sizes.connect_concurrency,
        impl=ctx.ws_client,
    )
    if reply["opened"] != n:
        raise RuntimeError(f"opened {reply['opened']} of {n} connections: {reply['errors']}")
    return reply


async def _subscribe(pool: SubscriberPool, projects: int) -> None:
    reply = await pool.subscribe(projects)
    if reply["failed"]:
        raise RuntimeError(f"{reply['failed']} subscriptions failed")


async def _publish(
    ctx: BenchContext,
    server: RunningServer,
    publisher: NodeClient,
    count: int,
    *,
    rate: float = 0,
    projects: int = 1,
    prefix: str = "p",
) -> Reply:
    return await publisher.command(
        "publish",
        url=server.publish_url,
        key=ctx.credentials.publish_key,
        target=_mode(server),
        count=count,
        rate=rate,
        projects=projects,
        prefix=prefix,
        tenant=_TENANT,
        concurrency=ctx.sizes.publish_concurrency,
        payloadBytes=ctx.sizes.payload_bytes,
        reply_secs=600,
    )


async def _measure_fanout(
    ctx: BenchContext,
    server: RunningServer,
    pool: SubscriberPool,
    publisher: NodeClient,
    *,
    events: int,
    per_project: dict[str, int],
    rate: float = 0,
    projects: int = 1,
    timeout_secs: float,
) -> Figures:
    """Publish `events` round-robin over `projects` while the pool counts deliveries.

    `per_project` is how many events each watcher of a project should get. Server CPU is
    sampled just before publishing starts and just after the last delivery (or the timeout).
    """
    await pool.reset()
    before = server.sample()
    waited, published = await asyncio.gather(
        pool.wait(per_project, timeout_secs),
        _publish(ctx, server, publisher, events, rate=rate, projects=projects),
    )
    after = server.sample()
    received = waited["received"]
    expected = waited["expected"]
    window_ns = None
    if waited["last_recv_ns"] is not None and published["firstSendNs"] is not None:
        window_ns = waited["last_recv_ns"] - published["firstSendNs"]
    window_s = window_ns / 1e9 if window_ns else None
    sampled_s = after.at - before.at
    server_cpu = after.cpu_since(before)
    client_cpu = waited["client_cpu_us"] / 1e6
    publisher_cpu = published["cpu"]["totalUs"] / 1e6
    machine_busy = after.machine_busy_since(before)
    other = None
    if machine_busy is not None:
        other = machine_busy * CPUS - (server_cpu + client_cpu + publisher_cpu) / sampled_s
    latency = LatencyHistogram(waited["latency"])
    return {
        "deliveries_per_s": received / window_s if window_s else None,
        "server_cpu_us_per_delivery": server_cpu * 1e6 / received if received else None,
        "client_cpu_us_per_delivery": client_cpu * 1e6 / received if received else None,
        "server_cpu_util": server_cpu / sampled_s,
        "client_cpu_util": client_cpu / sampled_s,
        "machine_busy": machine_busy,
        "other_cpu": other,
        "p50_ms": latency.percentile_ms(0.50),
        "p99_ms": latency.percentile_ms(0.99),
        "p999_ms": latency.percentile_ms(0.999),
        "max_ms": latency.percentile_ms(1.0),
        "loss": float(expected - received),
        "foreign": float(waited["foreign"]),
        "publish_failures": float(published["sent"] - published["accepted"]),
        "miscounted": float(waited["miscounted"]),
        "_received": float(received),
        "_expected": float(expected),
        "_server_cpu_s": server_cpu,
        "_window_s": window_s,
        "_unexpected_closes": float(waited["unexpected_closes"]),
        "_client_user_s": waited["client_user_us"] / 1e6,
        "_client_system_s": waited["client_system_us"] / 1e6,
        "_publisher_cpu_s": publisher_cpu,
        "_sampled_s": sampled_s,
    }


async def _empty_publish_cost(
    ctx: BenchContext, server: RunningServer, publisher: NodeClient
) -> float | None:
    """Server CPU µs per publish to a project nobody subscribes to (all connections still open)."""
    count = ctx.sizes.empty_publishes
    before = server.sample()
    reply = await _publish(ctx, server, publisher, count, prefix=_EMPTY_PROJECT)
    after = server.sample()
    if reply["accepted"] != count:
        raise RuntimeError(f"empty publishes: {reply['statuses']}")
    return after.cpu_since(before) * 1e6 / count


def _with_marginal(figures: Figures, events: int, empty_publish_us: float | None) -> Figures:
    figures["empty_publish_us"] = empty_publish_us
    received = figures["_received"]
    server_cpu = figures["_server_cpu_s"]
    if empty_publish_us is not None and received and server_cpu is not None:
        figures["marginal_us_per_delivery"] = (
            server_cpu * 1e6 - events * empty_publish_us
        ) / received
    return figures


async def idle(ctx: BenchContext, server: RunningServer) -> dict[str, Figures]:
    """Open N authenticated connections: handshakes/s, connect times, RSS per connection."""
    n = ctx.sizes.idle_connections
    async with _clients(ctx, f"idle-{server.kind}") as (pool, _publisher):
        before = server.sample()
        reply = await _connect(ctx, server, pool, n)
        await asyncio.sleep(0.2)  # let the server finish what follows each Welcome
        after = server.sample()
        elapsed_s = (reply["end_ns"] - reply["start_ns"]) / 1e9
        connect_ms = [part for part in reply["connect_ms"] if part["n"]]
        figures: Figures = {
            "handshakes_per_s": n / elapsed_s,
            "connect_total_s": elapsed_s,
            "connect_p50_ms": max(p["p50"] for p in connect_ms),
            "connect_p99_ms": max(p["p99"] for p in connect_ms),
            "rss_per_conn_kib": (after.rss_bytes - before.rss_bytes) / n / 1024,
            "server_cpu_us_per_handshake": after.cpu_since(before) * 1e6 / n,
            "client_cpu_us_per_handshake": reply["client_cpu_us"] / n,
            "failed": float(reply["failed"]),
            "_rss_before_mib": before.rss_bytes / 2**20,
            "_rss_after_mib": after.rss_bytes / 2**20,
        }
        await pool.close()
    return {"idle": figures}


def saturation(subscribers: int, events: int) -> Scenario:
    """Every subscriber on one project; a burst of `events` as fast as the publisher can."""

    async def run(ctx: BenchContext, server: RunningServer) -> dict[str, Figures]:
        async with _clients(ctx, f"sat-{server.kind}") as (pool, publisher):
            await _connect(ctx, server, pool, subscribers)
            await _subscribe(pool, 1)
            timeout = 20 + subscribers * events / 10_000
            figures = await _measure_fanout(
                ctx, server, pool, publisher,
                events=events, per_project={"p0": events}, timeout_secs=timeout,
            )  # fmt: skip
            empty = await _empty_publish_cost(ctx, server, publisher)
            await pool.close()
        return {name: _with_marginal(figures, events, empty)}

    name = f"saturation-{subscribers}x{events}"
    params = {"subscribers": subscribers, "events": events}
    return Scenario(name, params, run, (name,))


def latency(subscribers: int, rates: tuple[int, ...], secs: float) -> Scenario:
    """Paced (open-loop) publishing at each rate of deliveries/s for `secs`: latency and loss."""
    names = tuple(f"latency-{_rate_name(rate)}" for rate in rates)

    async def run(ctx: BenchContext, server: RunningServer) -> dict[str, Figures]:
        results: dict[str, Figures] = {}
        async with _clients(ctx, f"lat-{server.kind}") as (pool, publisher):
            await _connect(ctx, server, pool, subscribers)
            await _subscribe(pool, 1)
            for name, rate in zip(names, rates, strict=True):
                publish_rate = rate / subscribers
                events = max(1, round(publish_rate * secs))
                results[name] = await _measure_fanout(
                    ctx, server, pool, publisher,
                    events=events, per_project={"p0": events}, rate=publish_rate,
                    timeout_secs=secs + 10,
                )  # fmt: skip
                results[name]["_target_deliveries_per_s"] = float(rate)
            await pool.close()
        return results

    params = {"subscribers": subscribers, "deliveries_per_s": list(rates), "secs": secs}
    return Scenario("latency", params, run, names)


def filtered(connections: int, projects: int, events: int) -> Scenario:
    """Connections spread over projects; only a project's watchers may get its events.

    `filtered`: events round-robin over every project. `filtered-one-project`: the same
    number of events, all to project p0, with every connection still open; compare it with
    `filtered_control`, where only p0's watchers are connected, to see whether a publish
    touches connections that don't watch its project.
    """
    if events % projects or connections % projects:
        raise ValueError("filtered: events and connections must be multiples of projects")
    share = {f"p{i}": events // projects for i in range(projects)}
    timeout = 20 + events * connections / projects / 10_000

    async def run(ctx: BenchContext, server: RunningServer) -> dict[str, Figures]:
        async with _clients(ctx, f"filt-{server.kind}") as (pool, publisher):
            await _connect(ctx, server, pool, connections)
            await _subscribe(pool, projects)
            spread = await _measure_fanout(
                ctx, server, pool, publisher,
                events=events, per_project=share, projects=projects, timeout_secs=timeout,
            )  # fmt: skip
            empty = await _empty_publish_cost(ctx, server, publisher)
            one = await _measure_fanout(
                ctx, server, pool, publisher,
                events=events, per_project={"p0": events}, timeout_secs=timeout,
            )  # fmt: skip
            await pool.close()
        return {"filtered": _with_marginal(spread, events, empty), "filtered-one-project": one}

    params = {"connections": connections, "projects": projects, "events": events}
    return Scenario("filtered", params, run, ("filtered", "filtered-one-project"))


def filtered_control(watchers: int, events: int) -> Scenario:
    """Only one project's watchers connected; the same events as `filtered-one-project`."""

    async def run(ctx: BenchContext, server: RunningServer) -> dict[str, Figures]:
        async with _clients(ctx, f"ctrl-{server.kind}") as (pool, publisher):
            await _connect(ctx, server, pool, watchers)
            await _subscribe(pool, 1)
            figures = await _measure_fanout(
                ctx, server, pool, publisher,
                events=events, per_project={"p0": events}, timeout_secs=20 + events / 1000,
            )  # fmt: skip
            await pool.close()
        return {"filtered-control": figures}

    params = {"connections": watchers, "events": events}
    return Scenario("filtered-control", params, run, ("filtered-control",))


def _rate_name(rate: int) -> str:
    return f"{rate // 1000}k" if rate % 1000 == 0 and rate >= 1000 else str(rate)


def scenarios(sizes: Sizes) -> list[Scenario]:
    """Every scenario, in the order the bench runs them."""
    return [
        Scenario("idle", {"connections": sizes.idle_connections}, idle, ("idle",)),
        *(saturation(s, e) for s, e in sizes.saturation),
        latency(sizes.latency_subscribers, sizes.latency_rates, sizes.latency_secs),
        filtered(sizes.filtered_connections, sizes.filtered_projects, sizes.filtered_events),
        filtered_control(
            sizes.filtered_connections // sizes.filtered_projects, sizes.filtered_events
        ),
    ]


RunResult = dict[str, Any]
"""A run's figures by metric key, or `{"error": message}` when the run broke."""


async def run_one(ctx: BenchContext, scenario: Scenario, kind: ServerKind) -> dict[str, RunResult]:
    """Run `scenario` against a fresh `kind` server; a failure becomes `{"error": ...}`.

    First waits (up to `ctx.quiet_wait_secs`) for the machine to be quiet, and records how
    busy it still was in each figure set as `_background_busy`.
    """
    background = await wait_for_quiet(ctx.quiet_wait_secs)
    try:
        async with run_server(kind, ctx.credentials, ctx.log_dir, ctx.limits) as server:
            if ctx.profile_dir is None:
                produced: dict[str, RunResult] = dict(await scenario.run(ctx, server))
            else:
                suffix = {"raw": "txt", "flamegraph": "svg", "speedscope": "json"}
                output = ctx.profile_dir / (
                    f"{scenario.name}-{kind}-{server.port}.{suffix[ctx.profile_format]}"
                )
                async with profiled(server.pid, output, ctx.profile_format):
                    produced = dict(await scenario.run(ctx, server))
        for figures in produced.values():
            figures["_background_busy"] = background
        return produced
    except Exception as exc:  # a broken run is reported, the rest of the bench goes on
        message = f"{type(exc).__name__}: {exc}"
        return {name: {"error": message} for name in scenario.produces}


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    """`sizes` as JSON-ready data."""
    return asdict(sizes)
