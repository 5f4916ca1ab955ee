"""`pm-server --workers N`: N serving processes on one port, supervised by the first."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from types import FrameType

from pm_server.config import Settings
from pm_server.logs import configure_logging

logger = logging.getLogger(__name__)


def supervise(settings: Settings) -> int:
    """Run `settings.workers` server processes sharing the port (SO_REUSEPORT) until stopped.

    The kernel spreads new connections across the workers; they share nothing
    but the broker, which is why configuration refuses N > 1 with `memory://`.
    SIGTERM or SIGINT is passed on to every worker, which drains as a single
    server does; a second signal kills them at once. Returns 0 when every worker
    exited 0, else 1. A worker that dies is not restarted: the process manager
    above (systemd, Kubernetes) owns restarts, and the supervisor exits when
    any worker is gone so that it notices.
    """
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings, index), name=f"pm-server-{index}")
        for index in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    signalled = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        if signalled.is_set():
            for worker in workers:
                worker.kill()
            os._exit(128 + signum)
        signalled.set()
        logger.info("received %s: draining %d workers", signal.Signals(signum).name, len(workers))
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sentinels = {worker.sentinel: worker for worker in workers}
    while sentinels:
        for ready in multiprocessing.connection.wait(list(sentinels)):
            assert isinstance(ready, int)
            worker = sentinels.pop(ready)
            worker.join()
            if not signalled.is_set():
                logger.error(
                    "worker %s exited with %s; stopping the rest", worker.name, worker.exitcode
                )
                forward(signal.SIGTERM, None)
    codes = [worker.exitcode for worker in workers]
    logger.info("all workers stopped: exit codes %s", codes)
    return 0 if all(code == 0 for code in codes) else 1


def _worker(settings: Settings, index: int) -> None:
    # Own process group: a terminal's Ctrl-C reaches the workers only through the
    # supervisor, once, so it is not mistaken for a second signal.
    os.setpgrp()
    configure_logging(
        level=settings.log_level, fmt=settings.log_format, colored=settings.log_colored
    )
    from pm_server.app import serve

    raise SystemExit(asyncio.run(serve(settings, reuse_port=True)))
