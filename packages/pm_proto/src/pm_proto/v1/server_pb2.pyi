from pm_proto.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServerMessage(_message.Message):
    __slots__ = ("request_id", "welcome", "ack", "error", "event", "pong", "closing", "command_result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    CLOSING_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    welcome: Welcome
    ack: Ack
    error: _common_pb2.Error
    event: Event
    pong: Pong
    closing: Closing
    command_result: CommandResult
    def __init__(self, request_id: _Optional[str] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., closing: _Optional[_Union[Closing, _Mapping]] = ..., command_result: _Optional[_Union[CommandResult, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "rate_limit_max_requests", "rate_limit_window_secs", "max_subscriptions")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_WINDOW_SECS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    rate_limit_max_requests: int
    rate_limit_window_secs: int
    max_subscriptions: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., rate_limit_max_requests: _Optional[int] = ..., rate_limit_window_secs: _Optional[int] = ..., max_subscriptions: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("connection_id", "tenant_id", "user_id", "server_time_ms", "heartbeat_interval_secs", "token_expires_at_ms", "position", "limits")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    tenant_id: str
    user_id: str
    server_time_ms: int
    heartbeat_interval_secs: int
    token_expires_at_ms: int
    position: _common_pb2.StreamPosition
    limits: Limits
    def __init__(self, connection_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., server_time_ms: _Optional[int] = ..., heartbeat_interval_secs: _Optional[int] = ..., token_expires_at_ms: _Optional[int] = ..., position: _Optional[_Union[_common_pb2.StreamPosition, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("recovered", "position", "replayed")
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    recovered: bool
    position: _common_pb2.StreamPosition
    replayed: int
    def __init__(self, recovered: _Optional[bool] = ..., position: _Optional[_Union[_common_pb2.StreamPosition, _Mapping]] = ..., replayed: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "type", "scope", "position", "occurred_at_ms", "actor_user_id", "payload")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    scope: _common_pb2.Scope
    position: _common_pb2.StreamPosition
    occurred_at_ms: int
    actor_user_id: str
    payload: bytes
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., scope: _Optional[_Union[_common_pb2.Scope, _Mapping]] = ..., position: _Optional[_Union[_common_pb2.StreamPosition, _Mapping]] = ..., occurred_at_ms: _Optional[int] = ..., actor_user_id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("client_time_ms", "server_time_ms")
    CLIENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    client_time_ms: int
    server_time_ms: int
    def __init__(self, client_time_ms: _Optional[int] = ..., server_time_ms: _Optional[int] = ...) -> None: ...

class Closing(_message.Message):
    __slots__ = ("code", "message", "reconnect_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    reconnect_after_ms: int
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., reconnect_after_ms: _Optional[int] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...
