"""pm_client: a Python client for pm-realtime that reconnects, resumes and refreshes its token.

```python
async with PmClient(url, token_provider) as client:
    await client.subscribe(projects=["p1"])
    async for item in client.events():
        ...  # Event, or NotRecovered: refetch state
```
"""

from pm_client.client import AuthMode, PmClient
from pm_client.exceptions import (
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    PmClientError,
    RequestFailed,
)
from pm_client.lifecycle import ClientState, Disconnected
from pm_client.reconnect import (
    TERMINAL_CLOSE_CODES,
    Backoff,
    Disposition,
    close_disposition,
    reconnect_delay,
    refusal_disposition,
)
from pm_client.stream import Event, NotRecovered, Position, Scope, StreamCursor, StreamItem
from pm_client.subscriptions import SubscriptionIds
from pm_client.tokens import TokenProvider, mint_token, refresh_delay, token_expiry

__all__ = [
    "TERMINAL_CLOSE_CODES",
    "AuthMode",
    "Backoff",
    "ClientClosed",
    "ClientState",
    "ConnectFailed",
    "ConnectionLost",
    "Disconnected",
    "Disposition",
    "Event",
    "NotRecovered",
    "PmClient",
    "PmClientError",
    "Position",
    "RequestFailed",
    "Scope",
    "StreamCursor",
    "StreamItem",
    "SubscriptionIds",
    "TokenProvider",
    "close_disposition",
    "mint_token",
    "reconnect_delay",
    "refresh_delay",
    "refusal_disposition",
    "token_expiry",
]
