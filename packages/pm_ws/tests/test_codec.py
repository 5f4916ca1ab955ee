import pm_proto as pb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pm_ws.codec import (
    encode,
    error_frame,
    event_bytes,
    event_frame,
    event_from_bytes,
    event_message,
    frame_binary,
    ping_frame,
)
from pm_ws.events import Event, EventDraft, Scope, StreamPosition, TenantId
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

# RFC 6455 §5.2: FIN=1, RSV=0, opcode 2 (binary); MASK=0 and the 7-bit length, then
# a 16-bit length after 126 or a 64-bit one after 127, all big-endian.
HEADERS = {
    0: b"\x82\x00",
    3: b"\x82\x03",
    125: b"\x82\x7d",
    126: b"\x82\x7e\x00\x7e",
    127: b"\x82\x7e\x00\x7f",
    65_535: b"\x82\x7e\xff\xff",
    65_536: b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
    70_000: b"\x82\x7f\x00\x00\x00\x00\x00\x01\x11\x70",
}


def parsed(data: bytes) -> Frame:
    """Parse one server-to-client frame with the websockets library, requiring nothing left."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    assert reader.at_eof() is not None
    assert not reader.buffer, "bytes left after the frame"
    frame: Frame = done.value.value
    return frame


def server_message_of_size(size: int) -> pb.ServerMessage:
    """A ServerMessage whose serialisation is exactly `size` bytes."""
    if size == 0:
        return pb.ServerMessage()
    for padding in range(8):
        for body in range(max(0, size - 12), size):
            message = pb.ServerMessage(
                request_id="r" * padding, command_result=pb.CommandResult(body=b"x" * body)
            )
            if message.ByteSize() == size:
                return message
    raise AssertionError(f"no message of {size} bytes")


@pytest.mark.parametrize(("length", "header"), sorted(HEADERS.items()))
def test_frame_binary_header_is_the_rfc_6455_header_for_the_payload_length(
    length: int, header: bytes
) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)

    frame = frame_binary(payload)

    assert frame[: len(header)] == header
    assert frame[len(header) :] == payload


@pytest.mark.parametrize(("length", "header"), sorted(HEADERS.items()))
def test_an_encoded_server_message_decodes_after_its_header(length: int, header: bytes) -> None:
    message = server_message_of_size(length)

    frame = encode(message)

    assert frame[: len(header)] == header
    assert len(frame) == len(header) + length
    assert pb.ServerMessage.FromString(frame[len(header) :]) == message


@pytest.mark.parametrize("length", sorted(HEADERS))
def test_a_websocket_client_reads_the_frame_as_one_final_binary_message(length: int) -> None:
    message = server_message_of_size(length)

    frame = parsed(encode(message))

    assert frame.opcode == Opcode.BINARY
    assert frame.fin
    assert not frame.rsv1
    assert not frame.rsv2
    assert not frame.rsv3
    assert pb.ServerMessage.FromString(bytes(frame.data)) == message


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 70_000), st.binary(min_size=1, max_size=1))
def test_frames_of_any_length_parse_back_to_their_payload(length: int, fill: bytes) -> None:
    payload = fill * length

    frame = parsed(frame_binary(payload))

    assert frame.opcode == Opcode.BINARY
    assert frame.data == payload


def test_the_same_payload_frames_to_the_same_bytes_for_every_recipient() -> None:
    assert frame_binary(b"event") == frame_binary(b"event")


def test_ping_frame_is_an_empty_final_ping() -> None:
    frame = parsed(ping_frame())

    assert frame.opcode == Opcode.PING
    assert frame.fin
    assert frame.data == b""


def test_error_frame_without_field_carries_code_message_and_request_id_and_no_field() -> None:
    frame = parsed(error_frame("r1", "DECODE_ERROR", "frame is not a pm.v1.ClientMessage"))

    message = pb.ServerMessage.FromString(bytes(frame.data))

    assert message.request_id == "r1"
    assert message.WhichOneof("payload") == "error"
    assert message.error.code == "DECODE_ERROR"
    assert message.error.message == "frame is not a pm.v1.ClientMessage"
    assert not message.error.HasField("field")


def test_error_frame_with_field_carries_the_field() -> None:
    frame = parsed(error_frame("r2", "INVALID_MESSAGE", "bad id", "project_ids"))

    message = pb.ServerMessage.FromString(bytes(frame.data))

    assert message.request_id == "r2"
    assert message.error.code == "INVALID_MESSAGE"
    assert message.error.HasField("field")
    assert message.error.field == "project_ids"


def test_event_frame_carries_every_public_field_of_the_event() -> None:
    event = Event(
        tenant_id=TenantId("t1"),
        event_id="ev-1",
        type="card.moved",
        scope=Scope("p1", "s1", ""),
        payload=b"\x00\x01",
        actor_user_id="u1",
        occurred_at_ms=1_700_000_000_123,
        position=StreamPosition("epoch-1", 7),
        published_at_ns=123,
    )

    message = pb.ServerMessage.FromString(bytes(parsed(event_frame(event)).data))

    assert message.request_id == ""
    assert message.event == pb.Event(
        event_id="ev-1",
        type="card.moved",
        scope=pb.Scope(project_id="p1", sprint_id="s1"),
        position=pb.StreamPosition(epoch="epoch-1", seq=7),
        occurred_at_ms=1_700_000_000_123,
        actor_user_id="u1",
        payload=b"\x00\x01",
    )


ids = st.text(max_size=40)
events = st.builds(
    Event,
    tenant_id=st.just(TenantId("t1")),
    event_id=ids,
    type=ids,
    scope=st.builds(Scope, ids, ids, ids),
    payload=st.binary(max_size=70_000) | st.binary(max_size=200),
    actor_user_id=ids,
    occurred_at_ms=st.integers(-(2**63), 2**63 - 1),
    position=st.builds(StreamPosition, st.text(min_size=1, max_size=40), st.integers(0, 2**64 - 1)),
    published_at_ns=st.integers(0, 2**63),
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_event_frame_is_protobufs_encoding_of_the_server_message(event: Event) -> None:
    assert event_frame(event) == encode(pb.ServerMessage(event=event_message(event)))


@settings(max_examples=100, deadline=None)
@given(events)
def test_an_event_read_from_its_bytes_keeps_them_and_frames_the_same(event: Event) -> None:
    data = event_bytes(event)

    read = event_from_bytes(event.tenant_id, data, event.published_at_ns)

    assert read == event
    assert read.encoded == data
    assert event_frame(read) == event_frame(event)


DRAFT = EventDraft(
    tenant_id=TenantId("t1"),
    event_id="ev-1",
    type="card.moved",
    scope=Scope("p1", "s1", ""),
    payload=b"\x00\x01",
    actor_user_id="u1",
    occurred_at_ms=1_700_000_000_123,
)
POSITION = StreamPosition("epoch-1", 7)


def position_field(position: StreamPosition) -> bytes:
    """`Event.position` alone, serialised: what the Redis publish script appends."""
    return pb.Event(
        position=pb.StreamPosition(epoch=position.epoch, seq=position.seq)
    ).SerializeToString()


def test_a_drafts_bytes_with_a_position_appended_read_as_the_numbered_event() -> None:
    data = event_bytes(DRAFT) + position_field(POSITION)

    read = event_from_bytes(DRAFT.tenant_id, data, 123)

    assert read == Event.from_draft(DRAFT, POSITION, 123)
    assert read.encoded == data


def test_an_event_holding_its_bytes_is_framed_from_them_without_encoding_again() -> None:
    # Position first: encoding the fields would put it fourth, so these bytes can
    # only come out of the frame if it was built from them as they are.
    stored = position_field(POSITION) + event_bytes(DRAFT)
    event = event_from_bytes(DRAFT.tenant_id, stored, 123)

    frame = parsed(event_frame(event))

    assert bytes(frame.data) == b"\x6a" + bytes([len(stored)]) + stored
    assert pb.ServerMessage.FromString(bytes(frame.data)).event == event_message(event)
    assert event_frame(event) != event_frame(Event.from_draft(DRAFT, POSITION, 123))


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x0a\x05ab", event_bytes(DRAFT), event_bytes(DRAFT) + b"\x22\x02\x10\x01"],
    ids=["garbage", "truncated", "no position", "position without epoch"],
)
def test_bytes_that_are_not_a_numbered_event_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"undecodable event|without a position"):
        event_from_bytes(TenantId("t1"), data, 0)
