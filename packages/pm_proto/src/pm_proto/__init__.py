"""The pm.v1 wire protocol as Python classes, generated from proto/pm/v1."""

from pm_proto.v1.client_pb2 import (
    ClientMessage,
    Command,
    Ping,
    RefreshToken,
    Subscribe,
    Unsubscribe,
)
from pm_proto.v1.common_pb2 import CloseCode, Error, Scope, StreamPosition
from pm_proto.v1.publish_pb2 import PublishRequest, PublishResponse
from pm_proto.v1.server_pb2 import (
    Ack,
    Closing,
    CommandResult,
    Event,
    Limits,
    Pong,
    ServerMessage,
    Welcome,
)

__all__ = [
    "Ack",
    "ClientMessage",
    "CloseCode",
    "Closing",
    "Command",
    "CommandResult",
    "Error",
    "Event",
    "Limits",
    "Ping",
    "Pong",
    "PublishRequest",
    "PublishResponse",
    "RefreshToken",
    "Scope",
    "ServerMessage",
    "StreamPosition",
    "Subscribe",
    "Unsubscribe",
    "Welcome",
]
