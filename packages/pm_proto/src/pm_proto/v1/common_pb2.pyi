from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CloseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOSE_CODE_UNSPECIFIED: _ClassVar[CloseCode]
    CLOSE_CODE_NORMAL: _ClassVar[CloseCode]
    CLOSE_CODE_SERVER_SHUTDOWN: _ClassVar[CloseCode]
    CLOSE_CODE_PROTOCOL_ERROR: _ClassVar[CloseCode]
    CLOSE_CODE_POLICY_VIOLATION: _ClassVar[CloseCode]
    CLOSE_CODE_MESSAGE_TOO_BIG: _ClassVar[CloseCode]
    CLOSE_CODE_INTERNAL_ERROR: _ClassVar[CloseCode]
    CLOSE_CODE_TOKEN_EXPIRED: _ClassVar[CloseCode]
    CLOSE_CODE_IDENTITY_CHANGED: _ClassVar[CloseCode]
    CLOSE_CODE_SLOW_CLIENT: _ClassVar[CloseCode]
    CLOSE_CODE_HEARTBEAT_TIMEOUT: _ClassVar[CloseCode]
    CLOSE_CODE_DISCONNECTED_BY_OPERATOR: _ClassVar[CloseCode]
    CLOSE_CODE_BROADCAST_LAGGED: _ClassVar[CloseCode]
CLOSE_CODE_UNSPECIFIED: CloseCode
CLOSE_CODE_NORMAL: CloseCode
CLOSE_CODE_SERVER_SHUTDOWN: CloseCode
CLOSE_CODE_PROTOCOL_ERROR: CloseCode
CLOSE_CODE_POLICY_VIOLATION: CloseCode
CLOSE_CODE_MESSAGE_TOO_BIG: CloseCode
CLOSE_CODE_INTERNAL_ERROR: CloseCode
CLOSE_CODE_TOKEN_EXPIRED: CloseCode
CLOSE_CODE_IDENTITY_CHANGED: CloseCode
CLOSE_CODE_SLOW_CLIENT: CloseCode
CLOSE_CODE_HEARTBEAT_TIMEOUT: CloseCode
CLOSE_CODE_DISCONNECTED_BY_OPERATOR: CloseCode
CLOSE_CODE_BROADCAST_LAGGED: CloseCode

class Error(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("project_id", "sprint_id", "work_item_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SPRINT_ID_FIELD_NUMBER: _ClassVar[int]
    WORK_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    sprint_id: str
    work_item_id: str
    def __init__(self, project_id: _Optional[str] = ..., sprint_id: _Optional[str] = ..., work_item_id: _Optional[str] = ...) -> None: ...

class StreamPosition(_message.Message):
    __slots__ = ("epoch", "seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    seq: int
    def __init__(self, epoch: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...
