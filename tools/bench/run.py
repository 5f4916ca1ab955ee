"""Run every bench scenario against pm-server and the baseline hub; write JSON and Markdown.

    uv run python tools/bench/run.py [--quick | --smoke] [--repeat 3] [--out tools/bench/results]
    uv run python tools/bench/run.py soak [--duration 600 ...]    # soak.py: pm-server alone, long

Each (repeat, scenario, server) gets a fresh server process on a free loopback port and fresh
Node load clients. Servers alternate which goes first from one repeat to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from host import command_output, cpu_model, raise_fd_limit, write_result
from loadgen import node_available
from pm_testkit import Credentials
from report import evaluate_targets, markdown, scenario_summary
from scenarios import PRESETS, BenchContext, run_one, scenarios, sizes_dict
from servers import SERVER_KINDS, ServerKind, ServerLimits


def _meta(
    preset: str, repeat: int, fd_limit: int, started_at: str, ws_client: str
) -> dict[str, Any]:
    import aiohttp
    from google.protobuf.internal import api_implementation

    return {
        "started_at": started_at,
        "preset": preset,
        "repeat": repeat,
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "protobuf": api_implementation.Type(),
        "node": command_output("node", "--version"),
        "commit": command_output("git", "rev-parse", "--short", "HEAD"),
        "dirty": bool(command_output("git", "status", "--porcelain", "--untracked-files=no")),
        "fd_limit": fd_limit,
        "ws_client": ws_client,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (~2 min)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes (tests: < 30 s)")
    parser.add_argument("--repeat", type=int, help="runs per scenario and server (default 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument(
        "--only", action="append", default=[], metavar="SCENARIO",
        help="run only scenarios whose name starts with this (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--client-processes", type=int, default=1,
        help="Node subscriber processes to spread connections over (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--ws-client", choices=("raw", "ws"), default="raw",
        help="load client's WebSocket code: its own frame parser (raw) or the ws package",
    )  # fmt: skip
    parser.add_argument(
        "--quiet-wait", type=float, default=20.0, metavar="SECS",
        help="before each run, wait up to this long for the machine to be < 25%% busy",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="record each server with py-spy into DIR (figures are then perturbed)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-format", choices=("raw", "flamegraph", "speedscope"), default="raw",
        help="py-spy output: collapsed stacks (raw, read by pyspy_top.py), SVG or speedscope",
    )  # fmt: skip
    parser.add_argument(
        "--source-ips", type=int, default=4,
        help="spread connections over 127.0.0.1..N as source addresses (default 4)",
    )  # fmt: skip
    return parser


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected scenarios `repeat` times against both servers; the whole result."""
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    repeat = args.repeat or (3 if preset == "full" else 1)
    sizes = PRESETS[preset]
    started_at = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    fd_limit = raise_fd_limit()
    log_dir = Path(tempfile.mkdtemp(prefix=f"pm-bench-{started_at}-"))
    ctx = BenchContext(
        credentials=Credentials.generate(),
        sizes=sizes,
        log_dir=log_dir,
        client_processes=args.client_processes,
        local_addresses=tuple(f"127.0.0.{i}" for i in range(1, args.source_ips + 1)),
        limits=ServerLimits(),
        ws_client=args.ws_client,
        quiet_wait_secs=args.quiet_wait,
        profile_dir=args.profile,
        profile_format=args.profile_format,
    )
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    selected = [
        s for s in scenarios(sizes) if not args.only or any(s.name.startswith(o) for o in args.only)
    ]
    runs: dict[str, dict[ServerKind, list[dict[str, Any]]]] = {}
    began = time.monotonic()
    for index in range(repeat):
        order = SERVER_KINDS if index % 2 == 0 else tuple(reversed(SERVER_KINDS))
        for scenario in selected:
            for kind in order:
                t0 = time.monotonic()
                produced = await run_one(ctx, scenario, kind)
                for name, figures in produced.items():
                    runs.setdefault(name, {k: [] for k in SERVER_KINDS})[kind].append(figures)
                status = "; ".join(
                    f"{n}: {f['error']}" for n, f in produced.items() if "error" in f
                )
                print(
                    f"[{time.monotonic() - began:6.1f}s] repeat {index + 1}/{repeat} "
                    f"{scenario.name:<22} {kind:<9} {time.monotonic() - t0:5.1f}s"
                    f"{'  ERROR ' + status if status else ''}",
                    file=sys.stderr,
                    flush=True,
                )
    results = []
    for scenario in selected:
        for name in scenario.produces:
            per_server = runs.get(name, {})
            clean: dict[str, list[dict[str, Any]]] = {
                kind: [r for r in per_server.get(kind, []) if "error" not in r]
                for kind in SERVER_KINDS
            }
            results.append(
                {
                    "name": name,
                    "params": scenario.params,
                    "runs": per_server,
                    "summary": scenario_summary(clean),
                }
            )
    return {
        "meta": _meta(preset, repeat, fd_limit, started_at, args.ws_client)
        | {"elapsed_s": round(time.monotonic() - began, 1), "logs": str(log_dir)},
        "sizes": sizes_dict(sizes),
        "scenarios": results,
        "targets": evaluate_targets(results),
        "notes": _notes(results),
    }


def _notes(results: list[dict[str, Any]]) -> list[str]:
    notes = []
    for scenario in results:
        for kind, runs in scenario["runs"].items():
            for number, run in enumerate(runs, 1):
                where = f"{scenario['name']} {kind} run {number}"
                if "error" in run:
                    notes.append(f"{where} failed: {run['error']}")
                    continue
                client_util = run.get("client_cpu_util")
                if client_util is not None and client_util >= 0.9:
                    notes.append(
                        f"{where}: the load client used {client_util:.2f} of a core: "
                        "it may have limited this run"
                    )
                server_us = run.get("server_cpu_us_per_delivery")
                client_us = run.get("client_cpu_us_per_delivery")
                burst = scenario["name"].startswith("saturation")
                if burst and server_us and client_us and client_us >= server_us:
                    notes.append(
                        f"{where}: the load client spent {client_us:.2f} µs per delivery, "
                        f"not less than the server's {server_us:.2f}"
                    )
                for key in ("loss", "foreign", "miscounted", "publish_failures", "failed"):
                    if run.get(key):
                        notes.append(f"{where}: {key} = {run[key]:g}")
                if run.get("_unexpected_closes"):
                    notes.append(f"{where}: {run['_unexpected_closes']:g} connections dropped")
    return notes


def main() -> None:
    """Parse arguments, run the bench, write `bench-<timestamp>.json` and `.md` to `--out`."""
    if sys.argv[1:2] == ["soak"]:
        from soak import main as soak

        soak(sys.argv[2:])
    args = _parser().parse_args()
    reason = node_available()
    if reason is not None:
        sys.exit(f"bench: {reason}")
    result = asyncio.run(bench(args))
    write_result(result, args.out / f"bench-{result['meta']['started_at']}", markdown)


if __name__ == "__main__":
    main()
