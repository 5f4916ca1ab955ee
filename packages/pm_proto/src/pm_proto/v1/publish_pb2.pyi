from pm_proto.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("tenant_id", "type", "scope", "payload", "actor_user_id", "event_id", "occurred_at_ms")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ACTOR_USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    type: str
    scope: _common_pb2.Scope
    payload: bytes
    actor_user_id: str
    event_id: str
    occurred_at_ms: int
    def __init__(self, tenant_id: _Optional[str] = ..., type: _Optional[str] = ..., scope: _Optional[_Union[_common_pb2.Scope, _Mapping]] = ..., payload: _Optional[bytes] = ..., actor_user_id: _Optional[str] = ..., event_id: _Optional[str] = ..., occurred_at_ms: _Optional[int] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("event_id", "position")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    position: _common_pb2.StreamPosition
    def __init__(self, event_id: _Optional[str] = ..., position: _Optional[_Union[_common_pb2.StreamPosition, _Mapping]] = ...) -> None: ...
