"""Run pm-server with one optimisation switched off, to measure what it is worth.

Usage (through the bench): `PM_BENCH_ABLATE=no-coalescing uv run python tools/bench/run.py ...`
makes `servers.py` start `python tools/bench/ablate.py no-coalescing` instead of
`python -m pm_server`. Bench-only: nothing here ships.

- `no-coalescing`: every frame queued to a connection is written at once, one socket
  write per delivery, as a plain `send_bytes` loop does; encode-once and everything
  else stay as they are.
"""

from __future__ import annotations

import sys

from pm_server.cli import main
from pm_ws.outbox import FlushScheduler, Outbox

ABLATIONS = ("no-coalescing",)


def _write_every_frame_at_once(self: FlushScheduler, outbox: Outbox) -> None:
    outbox.flush()


def run(ablation: str) -> None:
    """Patch the named optimisation out, then run the server as `pm-server` would."""
    if ablation == "no-coalescing":
        setattr(FlushScheduler, "schedule", _write_every_frame_at_once)  # noqa: B010
    else:
        raise SystemExit(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
    main([])


if __name__ == "__main__":
    run(sys.argv[1])
