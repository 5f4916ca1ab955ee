"""The process's file descriptors: the open-files limit, and running out of it quietly.

Every connection costs one descriptor. Distributions start processes with a soft
limit of 1,024 and a far higher hard limit; a gateway at the soft limit cannot
accept, and asyncio logs every failed `accept()` with a traceback (on Python
3.11 once per queued connection, every second), which once wrote 21 MB of log
in seconds. POSIX only, like the server's signal handling.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, Final

from pm_server.logs import ThrottledLog

logger = logging.getLogger(__name__)

ACCEPT_OUT_OF_RESOURCES: Final = "socket.accept() out of system resource"
"""The message asyncio's accept loop reports EMFILE, ENFILE, ENOBUFS and ENOMEM with."""

RESERVED_DESCRIPTORS: Final = 64
"""Descriptors a server needs besides its connections: listener, loop, broker, log files."""

ACCEPT_ERROR_LOG_SECS: Final = 10.0
"""At most one log line per this many seconds while `accept()` keeps failing."""

# Where the soft limit goes when the hard limit is "unlimited" (macOS): the kernel
# refuses RLIM_INFINITY as a soft limit for descriptors.
_UNLIMITED_TARGET: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class OpenFilesLimit:
    """The open-files limit (RLIMIT_NOFILE) before and after `raise_open_files_limit`."""

    before: int
    soft: int
    hard: int

    def connections(self) -> int:
        """About how many connections the soft limit leaves room for."""
        return max(0, self.soft - RESERVED_DESCRIPTORS)


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise this process's soft open-files limit to its hard limit, and log the outcome.

    Needs no privilege (only the hard limit needs root). When the kernel refuses
    (a hard limit above `fs.nr_open`), the soft limit stays as it was and a
    warning says so; nothing raises.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            logger.warning(
                "could not raise the open files limit from %d to %d: %s", soft, target, error
            )
        else:
            logger.info("raised the open files limit from %d to %d", soft, target)
            return OpenFilesLimit(before=soft, soft=target, hard=hard)
    else:
        logger.info("open files limit is %d", soft)
    return OpenFilesLimit(before=soft, soft=soft, hard=hard)


def check_connection_budget(max_connections: int, limit: OpenFilesLimit) -> bool:
    """Warn when `MAX_CONNECTIONS` is more than the open-files limit can hold; True if it fits."""
    if max_connections <= limit.connections():
        return True
    logger.warning(
        "MAX_CONNECTIONS is %d but the open files limit (%d) leaves room for about %d "
        "connections: beyond that, accept() fails and clients time out; raise the limit "
        "(ulimit -n, LimitNOFILE= in systemd, nofile in Docker) or lower MAX_CONNECTIONS",
        max_connections,
        limit.soft,
        limit.connections(),
    )
    return False


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, log: ThrottledLog | None = None) -> None:
    """Log `accept()` running out of descriptors at most once per interval, without traceback.

    Installs an exception handler on `loop`; every other error goes to the
    handler that was there before (or the loop's default). asyncio already
    pauses accepting for a second after such a failure; the server recovers on
    its own once descriptors are free again (connections closing, the header
    timeout cutting idle ones).
    """
    throttle = log or ThrottledLog(logger, logging.WARNING, ACCEPT_ERROR_LOG_SECS)
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_OUT_OF_RESOURCES:
            error = context.get("exception")
            reason = error.strerror if isinstance(error, OSError) else None
            throttle.log(
                "%s (%s): new connections wait until descriptors are free",
                ACCEPT_OUT_OF_RESOURCES,
                reason or "unknown error",
            )
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
