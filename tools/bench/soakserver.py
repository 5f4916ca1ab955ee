"""The soak's server and Redis processes, and what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
from pm_testkit import (
    REDIS_SERVER,
    Credentials,
    RedisServer,
    ServerProcess,
    free_port,
    server_environment,
)

HOST: Final = "127.0.0.1"
_REPLY_SECS: Final = 10.0
_START_SECS: Final = 30.0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockets_on(pid: int, port: int) -> int:
    """Open TCP sockets of `pid` on local `port` other than the listener: its clients.

    Unlike the fd count, this leaves out the broker's connection pool (Redis).
    """
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows, None)
            for row in rows:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" and inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def cpu_wait_secs(pid: int) -> float:
    """Seconds the process's main thread has spent runnable but waiting for a CPU."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[RedisServer]:
    """A throwaway `redis-server` of the test kit on a free port (no persistence)."""
    if REDIS_SERVER is None:
        raise RuntimeError("--broker redis needs redis-server on PATH")
    redis = await asyncio.to_thread(RedisServer(workdir).start)
    try:
        yield redis
    finally:
        await asyncio.to_thread(redis.stop)


@contextlib.asynccontextmanager
async def pm_server(
    credentials: Credentials, broker_url: str, workdir: Path, leeway_secs: float | None = None
) -> AsyncIterator[ServerProcess]:
    """`python -m pm_server` (a process of the test kit) on a free port, ready.

    Defaults but for what the soak must set; with `leeway_secs`, sets `JWT_LEEWAY_SECS`.
    Logs at WARNING in text form, so each ERROR and CRITICAL line can be counted. Runs in
    `workdir` (no `.env` read). SIGTERM on exit (see `shut_down`).
    """
    port = free_port()
    settings = {
        "JWT_SECRET": credentials.jwt_secret,
        "PUBLISH_API_KEY": credentials.publish_key,
        "BIND_ADDR": f"{HOST}:{port}",
        "BROKER_URL": broker_url,
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "text",
        "LOG_COLORED": "false",
    }
    if leeway_secs is not None:
        settings["JWT_LEEWAY_SECS"] = f"{leeway_secs:g}"
    server = ServerProcess(workdir, env=server_environment(settings), port=port).start()
    try:
        await server.wait_ready(within=_START_SECS)
        yield server
    finally:
        await shut_down(server)


async def server_view(port: int) -> tuple[int | None, int | None]:
    """(connections the server's /health counts, bytes of /metrics); None when unreadable."""
    connections = metrics = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_REPLY_SECS)) as http:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(f"http://{HOST}:{port}/health") as response:
                connections = int((await response.json())["connections"]["total"])
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"http://{HOST}:{port}/metrics") as response:
                metrics = len(await response.read())
    return connections, metrics


async def after_close(pid: int, port: int) -> tuple[float, int, int | None, int]:
    """Wait (≤ 15 s) until the server counts no connection and holds no client socket.

    Returns RSS (MiB), fds, the server's connection count and its client sockets then.
    """
    deadline = time.monotonic() + 15.0
    while True:
        left, _ = await server_view(port)
        sockets = sockets_on(pid, port)
        if (left == 0 and sockets == 0) or time.monotonic() > deadline:
            await asyncio.sleep(1.0)  # a second for the allocator to hand memory back
            return rss_mib(pid), fd_count(pid), left, sockets_on(pid, port)
        await asyncio.sleep(0.25)


async def shut_down(server: ServerProcess) -> int | None:
    """SIGTERM the server (30 s to drain, then SIGKILL); its exit code (None when killed)."""
    return await asyncio.to_thread(server.close, grace=30.0)
