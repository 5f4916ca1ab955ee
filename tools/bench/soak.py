"""Soak: pm-server holding thousands of churning connections under steady publishing.

    uv run python tools/bench/soak.py [--duration 600] [--broker memory|redis] [--out DIR]
    uv run python tools/bench/run.py soak [...]          # the same

A real `pm-server` process (memory broker, or `--broker redis` with its own
`redis-server`) holds `--connections` WebSocket connections, spread over
`--client-processes` worker processes (`soakworker.py`). Part of them churn: each lives a
random while, is fenced (a `Ping` whose `Pong` proves that every earlier event has
arrived), closed (half with the closing handshake, half with a TCP reset) and replaced by
a new connection, `--churn` a second in all. Tokens have mixed lifetimes (`--token-mix`):
short ones expire during the run, the server must close them with 4001, and the slot
reconnects with a new token and resumes where it was. Long ones on churned connections
are the case of issue 10's leak (a closed connection held until its token's expiry).
Meanwhile events are published at `--publish-rate` round-robin over `--projects` projects
of `--tenants` tenants, and every connection checks that it gets each event of its project
from its subscribe to its fence, in seq order, once.

Every `--sample-every` seconds the server's RSS and open file descriptors are read from
/proc. The report has the RSS at start, after warm-up and at the end, its least-squares
slope per hour after warm-up, fds, churn, events published, delivered and lost, and the
ERROR/CRITICAL and traceback lines of the server's log. The exit status is 1 when any
check fails (`checks` in the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import platform
import random
import resource
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import pm_proto as pb
from host import command_output, cpu_model, raise_fd_limit, write_result
from pm_testkit import Credentials, stop_process
from servers import CPUS, ProcSample, machine_ticks
from soakcheck import Ledger, Stream, Window
from soakreport import Observed, Sample, checks, figures, markdown, notes, scan_log
from soakserver import (
    HOST,
    after_close,
    cpu_wait_secs,
    fd_count,
    pm_server,
    redis_server,
    rss_mib,
    server_view,
    shut_down,
    sockets_on,
)
from soakworker import LATENCY_BUCKETS, LOST_GRACE_SECS, SENT_AT

_WORKER: Final = Path(__file__).with_name("soakworker.py")
_REPLY_SECS: Final = 10.0
_START_SECS: Final = 30.0
_MAX_PUBLISHES_WAITING: Final = 512


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """How big and how long a soak is; the defaults are issue 10's."""

    duration_secs: float = 600.0
    connections: int = 2000
    churn_per_sec: float = 50.0
    churning_share: float = 0.5
    publishes_per_sec: float = 200.0
    tenants: int = 4
    projects: int = 20
    token_mix: tuple[tuple[int, float], ...] = ((60, 0.2), (3600, 0.4), (86400, 0.4))
    broker: Literal["memory", "redis"] = "memory"
    leeway_secs: float | None = None
    sample_every_secs: float = 5.0
    warmup_secs: float | None = None
    max_slope_mib_per_hour: float = 16.0
    min_slope_window_secs: float = 120.0
    client_processes: int = 2
    connect_concurrency: int = 50
    publish_concurrency: int = 16
    payload_bytes: int = 64
    seed: int = 1

    @property
    def warmup(self) -> float:
        """Seconds of load left out of the slope: given, or 20 % (≥ 2 min, ≤ half the run)."""
        if self.warmup_secs is not None:
            return self.warmup_secs
        return min(max(0.2 * self.duration_secs, 120.0), 0.5 * self.duration_secs)

    @property
    def churning_slots(self) -> int:
        """Slots whose connections the client closes and replaces (none without churn)."""
        return round(self.connections * self.churning_share) if self.churn_per_sec > 0 else 0

    @property
    def mean_life_secs(self) -> float:
        """Mean life of a churned connection, so that `churn_per_sec` close each second."""
        return self.churning_slots / self.churn_per_sec if self.churn_per_sec > 0 else 0.0

    @property
    def server_leeway(self) -> float:
        """The JWT leeway the server applies (its default is 30 s)."""
        return 30.0 if self.leeway_secs is None else self.leeway_secs

    def streams(self) -> list[Stream]:
        """Every (tenant, project), in the order the publisher goes round."""
        per_tenant = self.projects // self.tenants
        return [
            (f"soak-t{k % self.tenants}", f"p{(k // self.tenants) % per_tenant}")
            for k in range(self.projects)
        ]


class Publisher:
    """Publishes round-robin over the streams at a fixed rate (open loop) and keeps the ledger.

    Each publish is sent at its scheduled time whatever the answers before it did, with at
    most `publish_concurrency` HTTP requests on the wire; a server (or a client) that falls
    behind shows up as a lower rate and a longer answer time; past 512 publishes waiting,
    scheduled ones are skipped (counted as `publish_skipped`) rather than queued forever.
    """

    def __init__(self, config: SoakConfig, credentials: Credentials, url: str) -> None:
        self.config = config
        self.url = url
        self.ledger = Ledger()
        self.counts: Counter[str] = Counter()
        self.answer_secs: array[float] = array("d")
        self.epochs: dict[str, set[str]] = {}
        self._headers = {
            "Authorization": f"Bearer {credentials.publish_key}",
            "Content-Type": "application/x-protobuf",
        }
        self._streams = config.streams()
        self._padding = b"x" * max(0, config.payload_bytes - SENT_AT.size)

    async def run(self, duration: float) -> None:
        """Publish for `duration` seconds, then wait (≤ 30 s) for the answers still due."""
        config = self.config
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=config.publish_concurrency)
        timeout = aiohttp.ClientTimeout(total=_START_SECS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            start = loop.time()
            interval = 1.0 / config.publishes_per_sec
            k = 0
            while k * interval < duration:
                delay = start + k * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(pending) >= _MAX_PUBLISHES_WAITING:
                    self.counts["publish_skipped"] += 1
                else:
                    task = asyncio.create_task(self._one(http, k))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                k += 1
            if pending:
                await asyncio.wait(pending, timeout=_START_SECS)

    async def _one(self, http: aiohttp.ClientSession, k: int) -> None:
        loop = asyncio.get_running_loop()
        stream = self._streams[k % len(self._streams)]
        sent = loop.time()
        body = pb.PublishRequest(
            tenant_id=stream[0],
            type="soak.event",
            scope=pb.Scope(project_id=stream[1]),
            payload=SENT_AT.pack(sent) + self._padding,
        ).SerializeToString()
        try:
            async with http.post(self.url, data=body, headers=self._headers) as response:
                data = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.counts[f"publish_failed:{type(exc).__name__}"] += 1
            return
        if status != 200:
            self.counts[f"publish_failed:http_{status}"] += 1
            return
        answered = loop.time()
        position = pb.PublishResponse.FromString(data).position
        self.ledger.published(stream, position.seq, answered)
        self.epochs.setdefault(stream[0], set()).add(position.epoch)
        self.answer_secs.append(answered - sent)


class WorkerProcess:
    """A `soakworker.py` process and the latest status it reported."""

    def __init__(self, process: asyncio.subprocess.Process, result: Path) -> None:
        self.process = process
        self.result_path = result
        self.status: dict[str, int] = {}
        self.ramped = asyncio.Event()
        self.done = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, assignment: dict[str, Any], workdir: Path, number: int) -> WorkerProcess:
        """Start a worker on `assignment` (its result goes to a file in `workdir`)."""
        result = workdir / f"worker-{number}.json"
        with (workdir / f"worker-{number}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(_WORKER),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(json.dumps(assignment | {"result_path": str(result)}).encode() + b"\n")
        await process.stdin.drain()
        return cls(process, result)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            if "status" in message:
                self.status = message["status"]
            elif "ramped" in message:
                self.ramped.set()
            elif "done" in message:
                self.done.set()
        self.ramped.set()  # a worker that died is not waited for
        self.done.set()

    def cpu_secs(self) -> float:
        """CPU time the worker used so far (0 once it has exited)."""
        with contextlib.suppress(OSError):
            return ProcSample.read(self.process.pid).cpu_secs
        return 0.0

    async def finish(self) -> dict[str, Any]:
        """Tell the worker to stop; its result (empty counts if it died or hung)."""
        assert self.process.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.process.stdin.write(b"stop\n")
            await self.process.stdin.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), 6 * _REPLY_SECS)
        await stop_process(self.process)
        if not self.result_path.exists():
            return {"windows": [], "counts": {"worker_lost": 1}, "expiry_lateness": [],
                    "overdue": 0, "delivered": 0, "latency_ms": [0] * LATENCY_BUCKETS}  # fmt: skip
        result: dict[str, Any] = json.loads(self.result_path.read_text())
        return result


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """Reads the server (and Redis) from /proc every `sample_every_secs`; prints progress."""

    def __init__(
        self,
        config: SoakConfig,
        pid: int,
        redis_pid: int | None,
        workers: Sequence[WorkerProcess],
        publisher: Publisher,
    ) -> None:
        self.config = config
        self.pid = pid
        self.redis_pid = redis_pid
        self.workers = workers
        self.publisher = publisher
        self.samples: list[Sample] = []
        self.started = 0.0

    def client_cpu(self) -> float:
        """CPU seconds of this process and every worker so far."""
        return _own_cpu() + sum(w.cpu_secs() for w in self.workers)

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        every = self.config.sample_every_secs
        progress_every = max(every, min(30.0, self.config.duration_secs / 10))
        last_progress = -progress_every
        ticks = machine_ticks()
        self.started = loop.time()
        while True:
            now = loop.time()
            proc = ProcSample.read(self.pid)
            new_ticks = machine_ticks()
            total = new_ticks[1] - ticks[1]

            def summed(key: str) -> int:
                return sum(w.status.get(key, 0) for w in self.workers)

            sample = Sample(
                t=round(now - self.started, 3),
                rss_mib=proc.rss_bytes / 2**20,
                fds=fd_count(self.pid),
                server_cpu_s=proc.cpu_secs,
                server_wait_s=cpu_wait_secs(self.pid),
                client_cpu_s=self.client_cpu(),
                open_connections=summed("open"),
                churned=summed("churned"),
                expired=summed("expired"),
                published=self.publisher.ledger.count,
                delivered=summed("delivered"),
                machine_busy=(new_ticks[0] - ticks[0]) / total if total > 0 else None,
                redis_rss_mib=rss_mib(self.redis_pid) if self.redis_pid is not None else None,
            )
            ticks = new_ticks
            self.samples.append(sample)
            if sample.t - last_progress >= progress_every:
                last_progress = sample.t
                print(
                    f"[{sample.t:7.1f}s] rss {sample.rss_mib:7.1f} MiB  fds {sample.fds:5d}  "
                    f"open {sample.open_connections:5d}  churned {sample.churned:7d}  "
                    f"4001 {sample.expired:5d}  published {sample.published:8d}  "
                    f"delivered {sample.delivered:10d}",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(every - (loop.time() - now) % every)


def _assignments(config: SoakConfig, credentials: Credentials, port: int) -> list[dict[str, Any]]:
    streams = config.streams()
    rng = random.Random(config.seed)
    churning = set(rng.sample(range(config.connections), config.churning_slots))
    shared = {
        "port": port,
        "jwt_secret": credentials.jwt_secret,
        "token_mix": [list(pair) for pair in config.token_mix],
        "leeway_secs": config.server_leeway,
        "fence_grace_secs": 0.0 if config.broker == "memory" else LOST_GRACE_SECS,
        "mean_life_secs": config.mean_life_secs,
        "connect_concurrency": max(1, config.connect_concurrency // config.client_processes),
        "seed": config.seed,
    }
    return [
        shared
        | {
            "slots": [
                [i, *streams[i % len(streams)], i in churning]
                for i in range(n, config.connections, config.client_processes)
            ]
        }
        for n in range(config.client_processes)
    ]


async def run_soak(config: SoakConfig, workdir: Path) -> dict[str, Any]:
    """Run one soak; the whole result (figures, checks, samples) as JSON-ready data."""
    credentials = Credentials.generate()
    began = time.monotonic()
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        redis_pid: int | None = None
        broker_url = "memory://"
        if config.broker == "redis":
            redis = await stack.enter_async_context(redis_server(workdir))
            broker_url, redis_pid = redis.url, redis.pid
        server = await stack.enter_async_context(
            pm_server(credentials, broker_url, workdir, config.leeway_secs)
        )
        pid, port = server.pid, server.port
        await asyncio.sleep(1.0)  # let start-up allocations settle before the baseline
        idle = (rss_mib(pid), fd_count(pid))
        _, metrics_start = await server_view(port)
        print(
            f"soak: pm-server pid {pid} on port {port} ({broker_url}); "
            f"{config.connections} connections, {config.duration_secs:g} s; logs in {workdir}",
            file=sys.stderr,
            flush=True,
        )
        ramp_started = loop.time()
        workers = [
            await WorkerProcess.start(assignment, workdir, n)
            for n, assignment in enumerate(_assignments(config, credentials, port))
        ]
        with contextlib.suppress(TimeoutError):
            ramp_wait = asyncio.gather(*(w.ramped.wait() for w in workers))
            await asyncio.wait_for(ramp_wait, 60 + config.connections / 50)
        ramp_secs = loop.time() - ramp_started
        await asyncio.sleep(1.1)  # one status line from each worker after the ramp
        ramped = (
            rss_mib(pid), fd_count(pid), sum(w.status.get("ramped", 0) for w in workers),
            ramp_secs,
        )  # fmt: skip
        publisher = Publisher(config, credentials, f"http://{HOST}:{port}/api/v1/publish")
        sampler = Sampler(config, pid, redis_pid, workers, publisher)
        sampling = asyncio.create_task(sampler.run())
        cpu_start, client_cpu_start = ProcSample.read(pid), sampler.client_cpu()
        await asyncio.sleep(0)  # the sampler's first reading marks the start of the load
        await publisher.run(config.duration_secs)
        load_secs = loop.time() - sampler.started
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        end = ProcSample.read(pid)
        end_fds, client_cpu_end = fd_count(pid), sampler.client_cpu()
        end_sockets = sockets_on(pid, port)
        _, metrics_end = await server_view(port)
        if config.broker == "redis":
            await asyncio.sleep(LOST_GRACE_SECS)  # pub/sub trails the publish answers
        results = await asyncio.gather(*(w.finish() for w in workers))
        closed = await after_close(pid, port)
        returncode = await shut_down(server)
    counts: Counter[str] = Counter(publisher.counts)
    windows: list[Window] = []
    lateness: list[float] = []
    latency_ms = [0] * LATENCY_BUCKETS
    for result in results:
        latency_ms = [a + b for a, b in zip(latency_ms, result["latency_ms"], strict=True)]
        counts.update(result["counts"])
        windows += [Window.from_row(row) for row in result["windows"]]
        lateness += result["expiry_lateness"]
    scan = scan_log(server.stderr.path)
    seen = Observed(
        samples=sampler.samples,
        loss=publisher.ledger.evaluate(windows),
        log=scan,
        counts=counts,
        idle=idle,
        ramped=ramped,
        end=(end.rss_bytes / 2**20, end_fds, end_sockets),
        closed=closed,
        cpu=(end.cpu_since(cpu_start), client_cpu_end - client_cpu_start, load_secs),
        metrics_bytes=(metrics_start, metrics_end),
        published=publisher.ledger.count,
        publish_secs=publisher.answer_secs,
        epochs_per_tenant=max((len(e) for e in publisher.epochs.values()), default=0),
        delivered=sum(r["delivered"] for r in results),
        latency_ms=latency_ms,
        expiry_lateness=lateness,
        overdue=sum(r["overdue"] for r in results),
        returncode=returncode,
    )
    config_data = asdict(config) | {"warmup_secs": config.warmup}
    found = figures(config_data, seen)
    judged = checks(config_data, found)
    return {
        "meta": _meta(config, workdir, time.monotonic() - began),
        "config": config_data,
        "figures": found,
        "checks": judged,
        "ok": all(c["ok"] is not False for c in judged),
        "notes": notes(config_data, found),
        "counts": dict(sorted(counts.items())),
        "log_examples": scan["examples"],
        "samples": [asdict(s) for s in sampler.samples],
    }


def _meta(config: SoakConfig, workdir: Path, elapsed: float) -> dict[str, Any]:
    return {
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
        "machine": f"{CPUS} CPUs ({cpu_model()}), Linux {platform.release()}",
        "python": platform.python_version(),
        "commit": command_output("git", "rev-parse", "--short", "HEAD"),
        "dirty": bool(command_output("git", "status", "--porcelain", "--untracked-files=no")),
        "broker": config.broker,
        "logs": str(workdir),
        "elapsed_s": round(elapsed, 1),
    }


def _token_mix(text: str) -> tuple[tuple[int, float], ...]:
    try:
        mix = tuple(
            (int(ttl), float(share))
            for ttl, share in (part.split(":") for part in text.split(",") if part)
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SECS:SHARE,...: {exc}") from exc
    if not mix or any(ttl <= 0 or share < 0 for ttl, share in mix) or sum(s for _, s in mix) <= 0:
        raise argparse.ArgumentTypeError("expected SECS:SHARE,... with positive lifetimes")
    return mix


def _parser() -> argparse.ArgumentParser:
    d = SoakConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=d.duration_secs, help="seconds of load")
    p.add_argument("--connections", type=int, default=d.connections)
    p.add_argument(
        "--churn", type=float, default=d.churn_per_sec, help="closes (and connects) per s"
    )
    p.add_argument(
        "--churning-share",
        type=float,
        default=d.churning_share,
        help="share of the connections that churn; the rest stay (default 0.5)",
    )
    p.add_argument("--publish-rate", type=float, default=d.publishes_per_sec)
    p.add_argument("--tenants", type=int, default=d.tenants)
    p.add_argument(
        "--projects",
        type=int,
        default=d.projects,
        help="projects in all (a multiple of --tenants); each connection watches one",
    )
    p.add_argument(
        "--token-mix",
        type=_token_mix,
        default=d.token_mix,
        metavar="SECS:SHARE,...",
        help="token lifetimes and their shares (default 60:0.2,3600:0.4,86400:0.4)",
    )
    p.add_argument("--broker", choices=("memory", "redis"), default=d.broker)
    p.add_argument("--leeway", type=float, help="the server's JWT_LEEWAY_SECS (default: its 30)")
    p.add_argument("--sample-every", type=float, default=d.sample_every_secs)
    p.add_argument(
        "--warmup",
        type=float,
        help="seconds left out of the slope (default 20 %%, ≥ 120 s, ≤ half the run)",
    )
    p.add_argument(
        "--max-slope",
        type=float,
        default=d.max_slope_mib_per_hour,
        help="RSS slope after warm-up that fails the run (MiB/h)",
    )
    p.add_argument(
        "--min-slope-window",
        type=float,
        default=d.min_slope_window_secs,
        help="judge the slope only over at least this many seconds of samples",
    )
    p.add_argument(
        "--client-processes",
        type=int,
        default=d.client_processes,
        help="processes the connections are spread over (default 2; one more publishes)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    p.add_argument("--name", help="file name stem (default soak-<UTC timestamp>)")
    return p  # fmt: skip


def config_from(args: argparse.Namespace) -> SoakConfig:
    """The `SoakConfig` the command line asks for; exits 2 on a contradiction."""
    if args.projects % args.tenants or args.connections < args.projects:
        sys.exit("soak: --projects must be a multiple of --tenants and at most --connections")
    if not 0 <= args.churning_share <= 1 or args.churn < 0 or args.publish_rate <= 0:
        sys.exit("soak: --churning-share is 0..1, --churn ≥ 0 and --publish-rate > 0")
    if not 1 <= args.client_processes <= args.connections:
        sys.exit("soak: --client-processes must be 1..--connections")
    return SoakConfig(
        duration_secs=args.duration,
        connections=args.connections,
        churn_per_sec=args.churn,
        churning_share=args.churning_share,
        publishes_per_sec=args.publish_rate,
        tenants=args.tenants,
        projects=args.projects,
        token_mix=args.token_mix,
        broker=args.broker,
        leeway_secs=args.leeway,
        sample_every_secs=args.sample_every,
        warmup_secs=args.warmup,
        max_slope_mib_per_hour=args.max_slope,
        min_slope_window_secs=args.min_slope_window,
        client_processes=args.client_processes,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run a soak; write `<name>.json` and `.md` to `--out`; exit 1 when a check fails."""
    args = _parser().parse_args(argv)
    config = config_from(args)
    fd_limit = raise_fd_limit()
    if fd_limit < config.connections + 256:
        sys.exit(f"soak: {config.connections} connections need more than {fd_limit} open files")
    workdir = Path(tempfile.mkdtemp(prefix="pm-soak-"))
    result = asyncio.run(run_soak(config, workdir))
    write_result(result, args.out / (args.name or f"soak-{result['meta']['started_at']}"), markdown)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
