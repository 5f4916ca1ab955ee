from pm_proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientMessage(_message.Message):
    __slots__ = ("request_id", "subscribe", "unsubscribe", "ping", "refresh_token", "command")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    ping: Ping
    refresh_token: RefreshToken
    command: Command
    def __init__(self, request_id: _Optional[str] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., refresh_token: _Optional[_Union[RefreshToken, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("project_ids", "sprint_ids", "work_item_ids", "resume_from")
    PROJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    SPRINT_IDS_FIELD_NUMBER: _ClassVar[int]
    WORK_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    project_ids: _containers.RepeatedScalarFieldContainer[str]
    sprint_ids: _containers.RepeatedScalarFieldContainer[str]
    work_item_ids: _containers.RepeatedScalarFieldContainer[str]
    resume_from: _common_pb2.StreamPosition
    def __init__(self, project_ids: _Optional[_Iterable[str]] = ..., sprint_ids: _Optional[_Iterable[str]] = ..., work_item_ids: _Optional[_Iterable[str]] = ..., resume_from: _Optional[_Union[_common_pb2.StreamPosition, _Mapping]] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("project_ids", "sprint_ids", "work_item_ids")
    PROJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    SPRINT_IDS_FIELD_NUMBER: _ClassVar[int]
    WORK_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    project_ids: _containers.RepeatedScalarFieldContainer[str]
    sprint_ids: _containers.RepeatedScalarFieldContainer[str]
    work_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project_ids: _Optional[_Iterable[str]] = ..., sprint_ids: _Optional[_Iterable[str]] = ..., work_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("client_time_ms",)
    CLIENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    client_time_ms: int
    def __init__(self, client_time_ms: _Optional[int] = ...) -> None: ...

class RefreshToken(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("name", "body")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    name: str
    body: bytes
    def __init__(self, name: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...
