"""Brokers: per-tenant event streams shared by the processes of one deployment."""

from pm_ws.brokers.broker import (
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
