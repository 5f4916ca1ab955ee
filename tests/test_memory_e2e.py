"""A server's memory comes back after its connections close, whatever their tokens' lifetimes.

The regression this guards: every connection's expiry deadline used to hold the
whole session until the token's `exp`, so a client reconnecting in a loop with a
day-long token grew the server by ~14 KiB per cycle. Here waves of connections
open and close with one-day tokens, and the server's resident memory, read from
`/proc`, must level off rather than climb wave after wave.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pm_testkit import ServerLauncher, ServerProcess

WAVES = 8
PER_WAVE = 400
AT_ONCE = 50
# A leak of the old kind costs ~14 KiB × 400 = 5.5 MB a wave: 27 MB over the last
# five waves. Without one, the allocator's noise stays well under this.
PLATEAU_SLACK_KIB = 6 * 1024


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


async def connect_and_close(server: ServerProcess, token: str) -> None:
    client = await server.open_ws(token, track=False)
    try:
        assert (await client.recv()).WhichOneof("payload") == "welcome"
    finally:
        await client.close()


async def wave(server: ServerProcess, token: str) -> None:
    for start in range(0, PER_WAVE, AT_ONCE):
        batch = min(AT_ONCE, PER_WAVE - start)
        await asyncio.gather(*(connect_and_close(server, token) for _ in range(batch)))
    await server.wait_connections(0)


@pytest.mark.timeout(240)
async def test_memory_levels_off_across_waves_of_connections_with_day_long_tokens(
    servers: ServerLauncher, tenant: str
) -> None:
    server = servers.start()
    token = server.token(tenant, "looping-user", expires_in=24 * 3600)

    samples: list[int] = []
    for _ in range(WAVES):
        await wave(server, token)
        samples.append(resident_kib(server.proc.pid))

    settled = samples[2]
    growth = samples[-1] - settled
    assert growth < PLATEAU_SLACK_KIB, f"RSS per wave (KiB): {samples}"
