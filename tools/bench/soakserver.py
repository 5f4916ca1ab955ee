"""The soak's server and Redis processes, and what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
from servers import Credentials, free_port, stop_process

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
async def redis_server(workdir: Path) -> AsyncIterator[tuple[str, int]]:
    """A throwaway `redis-server` on a free port (no persistence); yields (URL, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("--broker redis needs redis-server on PATH")
    port = free_port()
    with (workdir / f"redis-{port}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(workdir),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + _START_SECS
        while True:
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {workdir}")
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.write(b"PING\r\n")
            answer = await reader.readline()
            writer.close()
            await writer.wait_closed()
            if answer.startswith(b"+PONG"):
                break
            await asyncio.sleep(0.05)
        yield f"redis://{HOST}:{port}/0", process.pid
    finally:
        await stop_process(process)


@contextlib.asynccontextmanager
async def pm_server(
    credentials: Credentials, broker_url: str, workdir: Path, leeway_secs: float | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path]]:
    """`python -m pm_server` on a free port, with defaults but for what the soak must set.

    With `leeway_secs`, sets `JWT_LEEWAY_SECS`. Logs at WARNING in text form, so each ERROR
    and CRITICAL line can be counted. Runs in `workdir` (no `.env` read). Yields (process,
    port, log path); SIGTERM on exit.
    """
    port = free_port()
    log = workdir / f"pm-server-{port}.log"
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH", "TMPDIR")
    }
    env.update(
        JWT_SECRET=credentials.jwt_secret,
        PUBLISH_API_KEY=credentials.publish_key,
        BIND_ADDR=f"{HOST}:{port}",
        BROKER_URL=broker_url,
        LOG_LEVEL="warning",
        LOG_FORMAT="text",
        LOG_COLORED="false",
    )
    if leeway_secs is not None:
        env["JWT_LEEWAY_SECS"] = f"{leeway_secs:g}"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pm_server",
            cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + _START_SECS
        async with aiohttp.ClientSession() as http:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"pm-server exited with {process.returncode}; see {log}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pm-server was not ready within {_START_SECS} s")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://{HOST}:{port}/ready") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield process, port, log
    finally:
        await stop_process(process)


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


async def shut_down(process: asyncio.subprocess.Process) -> int | None:
    """SIGTERM the server; its exit code (None when it had to be killed)."""
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
