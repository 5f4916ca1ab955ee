"""The end-to-end suites' own fixture; the kit's plugin (pm_testkit.plugin) gives the rest.

Servers, Redis, proxies and tenants are the kit's fixtures (`server`, `servers`,
`module_servers`, `server_pair`, `redis_server`, `tenant`, `http`, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pm_testkit import OpenClients


@pytest.fixture(autouse=True)
async def _close_clients(open_clients: OpenClients) -> AsyncIterator[None]:
    """Close every WebSocket client the test opened through a server, whatever happened in it."""
    yield
    await open_clients.close_all()
