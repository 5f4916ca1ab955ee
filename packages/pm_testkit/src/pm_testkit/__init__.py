"""pm-realtime's test kit: real servers, Redis and clients for tests and the bench.

One server-process helper (`ServerProcess`, started by a `ServerLauncher`),
one pm.v1 WebSocket client (`Client`), one `RedisServer` and one `TcpProxy`,
tokens (`make_token`, `Credentials`), ports (`free_port`) and bounded waits
(`wait_until`, `block_until`, `Changes`). The pytest plugin (`pm_testkit.plugin`)
turns them into fixtures. Dev-only: never a dependency of a shipped package.
"""

from pm_testkit.client import (
    Client,
    HttpAnswer,
    OpenClients,
    connect,
    event_ids,
    open_client,
    refused,
    seqs,
)
from pm_testkit.ports import free_port
from pm_testkit.process import ProcessOutput, child_pids, stop_process, terminate
from pm_testkit.proxy import TcpProxy
from pm_testkit.redis import REDIS_SERVER, RedisServer, RedisUser
from pm_testkit.server import (
    PM_SERVER,
    Published,
    ServerLauncher,
    ServerPair,
    ServerProcess,
    server_environment,
    subscribers,
)
from pm_testkit.tokens import Credentials, make_token, new_tenant
from pm_testkit.waiting import (
    POLL_SECS,
    WAIT_SECS,
    Changes,
    WaitTimeout,
    block_until,
    wait_until,
)

__all__ = [
    "PM_SERVER",
    "POLL_SECS",
    "REDIS_SERVER",
    "WAIT_SECS",
    "Changes",
    "Client",
    "Credentials",
    "HttpAnswer",
    "OpenClients",
    "ProcessOutput",
    "Published",
    "RedisServer",
    "RedisUser",
    "ServerLauncher",
    "ServerPair",
    "ServerProcess",
    "TcpProxy",
    "WaitTimeout",
    "block_until",
    "child_pids",
    "connect",
    "event_ids",
    "free_port",
    "make_token",
    "new_tenant",
    "open_client",
    "refused",
    "seqs",
    "server_environment",
    "stop_process",
    "subscribers",
    "terminate",
    "wait_until",
]
