"""Driving the Node.js load client (`node/loadclient.mjs`) over JSON lines on stdin/stdout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shlex
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from pm_testkit import stop_process

NODE_DIR: Final = Path(__file__).with_name("node")
CLIENT_SCRIPT: Final = NODE_DIR / "loadclient.mjs"
_LINE_LIMIT: Final = 64 * 1024 * 1024

Reply = dict[str, Any]


class LoadClientError(RuntimeError):
    """The load client answered a command with an error, or died."""


def node_available() -> str | None:
    """Why the Node load client can't run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        return f"node_modules missing: run `npm ci` in {NODE_DIR}"
    return None


class NodeClient:
    """One Node load-client process; commands run one at a time, in order."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        """The Node process id."""
        return self.process.pid

    async def command(self, cmd: str, *, reply_secs: float = 300.0, **fields: Any) -> Reply:
        """Send one command and return its reply.

        Raises:
            LoadClientError: The client answered `ok: false` or closed its stdout.
            TimeoutError: No reply within `reply_secs` seconds.
        """
        async with self._lock:
            assert self.process.stdin is not None
            assert self.process.stdout is not None
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, "cmd": cmd, **fields}) + "\n"
            self.process.stdin.write(line.encode())
            await self.process.stdin.drain()
            while True:
                raw = await asyncio.wait_for(self.process.stdout.readline(), reply_secs)
                if not raw:
                    raise LoadClientError(f"{self.name}: load client exited during {cmd}")
                reply: Reply = json.loads(raw)
                if reply.get("id") == request_id:
                    break
            if not reply.get("ok"):
                raise LoadClientError(f"{self.name}: {cmd} failed: {reply.get('error')}")
            return reply


@contextlib.asynccontextmanager
async def start_client(name: str, log: Path) -> AsyncIterator[NodeClient]:
    """Start a Node load client (stderr to `log`); stop it on exit.

    `BENCH_NODE_ARGS` in the environment adds arguments to `node`, e.g.
    `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the load client itself.
    """
    reason = node_available()
    if reason is not None:
        raise LoadClientError(reason)
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            "node",
            *shlex.split(os.environ.get("BENCH_NODE_ARGS", "")),
            str(CLIENT_SCRIPT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
            limit=_LINE_LIMIT,
        )
    client = NodeClient(process, name)
    try:
        assert process.stdout is not None
        hello = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        if not hello.get("ready"):
            raise LoadClientError(f"{name}: unexpected greeting {hello}")
        yield client
    finally:
        if process.stdin is not None:
            process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5)
        await stop_process(process)


class SubscriberPool:
    """Subscribers spread over one or more Node processes, driven as one.

    Connection `i` (numbered across the pool) is user `user-<i>` and, once subscribed,
    watches project `p<i mod projects>`; replies are merged (sums, min/max, merged histograms).
    """

    def __init__(self, clients: list[NodeClient], local_addresses: list[str]) -> None:
        self.clients = clients
        self.local_addresses = local_addresses

    async def connect(
        self, url: str, count: int, *, secret: str, mode: str, concurrency: int, impl: str
    ) -> Reply:
        """Open `count` authenticated connections; ready means Welcome (pm) or open (hub).

        `impl` is the client's WebSocket implementation: `raw` (its own frame parser) or `ws`.
        """
        shares = _split(count, len(self.clients))
        offsets = [sum(shares[:i]) for i in range(len(shares))]
        per_client = max(1, concurrency // len(self.clients))
        replies = await asyncio.gather(
            *(
                client.command(
                    "connect",
                    url=url,
                    count=share,
                    offset=offset,
                    concurrency=per_client,
                    secret=secret,
                    mode=mode,
                    impl=impl,
                    localAddresses=self.local_addresses,
                )
                for client, share, offset in zip(self.clients, shares, offsets, strict=True)
                if share
            )
        )
        return {
            "opened": sum(r["opened"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "start_ns": min(r["startNs"] for r in replies),
            "end_ns": max(r["startNs"] + r["elapsedMs"] * 1e6 for r in replies),
            "connect_ms": [r["connectMs"] for r in replies],
            "errors": _merge_counts(r["errors"] for r in replies),
            "client_cpu_us": sum(r["cpu"]["totalUs"] for r in replies),
        }

    async def subscribe(self, projects: int) -> Reply:
        """Subscribe every connection to its project; waits for every Ack."""
        replies = await asyncio.gather(
            *(c.command("subscribe", projects=projects) for c in self.clients)
        )
        return {
            "subscribed": sum(r["subscribed"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
        }

    async def reset(self) -> None:
        """Zero the delivery counters, latency histograms and CPU baselines."""
        await asyncio.gather(*(c.command("reset") for c in self.clients))

    async def wait(self, per_project: dict[str, int], timeout_secs: float) -> Reply:
        """Wait until each connection has its project's count of events, or the timeout.

        `per_project` maps a project to how many events each of its watchers should get;
        connections watching a project not in it should get none.
        """
        replies = await asyncio.gather(
            *(
                client.command(
                    "wait",
                    perProject=per_project,
                    timeoutMs=int(timeout_secs * 1000),
                    reply_secs=timeout_secs + 30,
                )
                for client in self.clients
            )
        )
        first = [r["firstRecvNs"] for r in replies if r["firstRecvNs"] is not None]
        last = [r["lastRecvNs"] for r in replies if r["lastRecvNs"] is not None]
        return {
            "expected": sum(r["expected"] for r in replies),
            "received": sum(r["received"] for r in replies),
            "foreign": sum(r["foreign"] for r in replies),
            "connections": sum(r["connections"] for r in replies),
            "miscounted": sum(r["miscounted"] for r in replies),
            "first_recv_ns": min(first) if first else None,
            "last_recv_ns": max(last) if last else None,
            "latency": [r["latency"] for r in replies],
            "errors": _merge_counts(r["errors"] for r in replies),
            "unexpected_closes": sum(r["unexpectedCloses"] for r in replies),
            "client_cpu_us": sum(r["cpu"]["totalUs"] for r in replies),
            "client_user_us": sum(r["cpu"]["userUs"] for r in replies),
            "client_system_us": sum(r["cpu"]["systemUs"] for r in replies),
        }

    async def close(self) -> None:
        """Drop every connection (TCP close, no closing handshake)."""
        await asyncio.gather(*(c.command("close") for c in self.clients))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _merge_counts(dicts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for counts in dicts:
        for key, value in counts.items():
            merged[key] = merged.get(key, 0) + value
    return merged
