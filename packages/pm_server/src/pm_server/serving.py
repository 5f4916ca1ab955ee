"""How `pm-server` runs: one process serving, or a supervisor of `--workers` processes."""

from __future__ import annotations

import asyncio

from pm_server.app import serve
from pm_server.config import Settings
from pm_server.workers import supervise


def run(settings: Settings) -> int:
    """Serve until stopped and return the exit code (see `app.serve` and `workers.supervise`).

    With `settings.workers` 1 the server runs in this process; with more, this
    process supervises that many workers sharing the port and serves nothing
    itself.
    """
    if settings.workers > 1:
        return supervise(settings)
    return asyncio.run(serve(settings))
