"""Brokers: per-tenant event streams shared by the processes of one deployment.

An interface, then its implementations side by side (Centrifuge's layout):

- `broker.py`: the `Broker` and `BrokerSink` protocols and the values they pass.
- `memory_broker.py`: `MemoryBroker` (`memory://`), one process, the default.
- `redis_broker.py`: `RedisBroker` (`redis://`), many processes and hosts. Its
  parts: `_redis_link.py` (command client, scripts, pub/sub connections),
  `_redis_listener.py` (the process's one pub/sub connection, channels
  dispatched to handlers), `_redis_feed.py` (one listened tenant: seq order,
  gaps filled from history), `_redis_lua.py` (the atomic scripts) and
  `_redis_codec.py` (key names and message envelopes).
- `url.py`: `open_broker`, the backend a URL scheme names.

A broker delivers to one sink (the broadcaster, `Broker.attach`) and knows
only which tenants it listens to; which connections are in a tenant is the
broadcaster's business.

Where the next shared state goes: presence (SPEC §8), the tenant publish
budget (§10) and revocations (§11) each get a small Protocol of their own in
this package (`presence.py`, `budget.py`, `revocations.py`), beside `Broker`
rather than in it, with memory and Redis implementations side by side
(`memory_presence.py`, `redis_presence.py`, ...). The Redis ones share the
process's one `RedisLink` (their scripts through `RedisLink.script`) and its
one `PubSubListener` (each registers its own channels with a
`ChannelHandler`). Today `RedisBroker` builds both from its URL; the first
such store moves that into `open_broker`, which then hands both to every
store.
"""

from pm_ws.brokers.broker import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL_SECS,
    Broker,
    BrokerHealth,
    BrokerSink,
    DisconnectRequest,
    HistoryRead,
    PublishResult,
)
from pm_ws.brokers.memory_broker import MemoryBroker
from pm_ws.brokers.redis_broker import RedisBroker
from pm_ws.brokers.url import open_broker

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_HISTORY_TTL_SECS",
    "Broker",
    "BrokerHealth",
    "BrokerSink",
    "DisconnectRequest",
    "HistoryRead",
    "MemoryBroker",
    "PublishResult",
    "RedisBroker",
    "open_broker",
]
