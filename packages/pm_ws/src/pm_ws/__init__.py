"""pm_ws: the pm-realtime engine as a library.

Hand it a JWT validator, a broker and a metrics registry, mount
`Gateway.handle` on an aiohttp GET route, and it serves WebSocket clients the
pm.v1 protocol: authenticated, limited, filtered, ordered, resumable.
"""

from pm_ws import close_codes
from pm_ws.admission import Admitted, Refusal
from pm_ws.broadcaster import Broadcaster
from pm_ws.brokers import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL_SECS,
    Broker,
    BrokerHealth,
    BrokerSink,
    DisconnectRequest,
    HistoryRead,
    MemoryBroker,
    PublishResult,
    RedisBroker,
    open_broker,
)
from pm_ws.client_messages import check_id, decode_client_message
from pm_ws.close_codes import CloseReason
from pm_ws.commands import CommandContext, CommandHandler, CommandRouter
from pm_ws.events import (
    ConnectionId,
    Event,
    EventDraft,
    Scope,
    StreamPosition,
    TenantId,
    UserId,
)
from pm_ws.exceptions import (
    BrokerError,
    BrokerUnavailable,
    LimitExceeded,
    PmWsError,
    ProtocolError,
    PublishOutcomeUnknown,
    UnsupportedBrokerUrl,
)
from pm_ws.gateway import Gateway, GatewayOptions, TenantCheck
from pm_ws.limits import GatewayLimits
from pm_ws.log_context import ConnectionLogContext, connection_log_context
from pm_ws.metrics import GatewayMetrics
from pm_ws.registry import ConnectionInfo, ConnectionRegistry
from pm_ws.session import Session, SessionState
from pm_ws.shutdown import ShutdownCoordinator, ShutdownState

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_HISTORY_TTL_SECS",
    "Admitted",
    "Broadcaster",
    "Broker",
    "BrokerError",
    "BrokerHealth",
    "BrokerSink",
    "BrokerUnavailable",
    "CloseReason",
    "CommandContext",
    "CommandHandler",
    "CommandRouter",
    "ConnectionId",
    "ConnectionInfo",
    "ConnectionLogContext",
    "ConnectionRegistry",
    "DisconnectRequest",
    "Event",
    "EventDraft",
    "Gateway",
    "GatewayLimits",
    "GatewayMetrics",
    "GatewayOptions",
    "HistoryRead",
    "LimitExceeded",
    "MemoryBroker",
    "PmWsError",
    "ProtocolError",
    "PublishOutcomeUnknown",
    "PublishResult",
    "RedisBroker",
    "Refusal",
    "Scope",
    "Session",
    "SessionState",
    "ShutdownCoordinator",
    "ShutdownState",
    "StreamPosition",
    "TenantCheck",
    "TenantId",
    "UnsupportedBrokerUrl",
    "UserId",
    "check_id",
    "close_codes",
    "connection_log_context",
    "decode_client_message",
    "open_broker",
]
