import unicodedata
from typing import Any, TypedDict, Unpack, cast

import pm_proto as pb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pm_ws.client_messages import (
    ClientRequest,
    CommandRequest,
    PingRequest,
    RefreshTokenRequest,
    SubscribeRequest,
    SubscriptionIds,
    UnsubscribeRequest,
    check_id,
    decode_client_message,
    decode_request_id,
)
from pm_ws.events import StreamPosition
from pm_ws.exceptions import ProtocolError

ID_LISTS = ("project_ids", "sprint_ids", "work_item_ids")
REQUEST_TYPES = (
    SubscribeRequest,
    UnsubscribeRequest,
    PingRequest,
    RefreshTokenRequest,
    CommandRequest,
)


class Payload(TypedDict, total=False):
    """The oneof payload of a ClientMessage, as keyword arguments."""

    subscribe: pb.Subscribe
    unsubscribe: pb.Unsubscribe
    ping: pb.Ping
    refresh_token: pb.RefreshToken
    command: pb.Command


class ClientMessageFields(Payload, total=False):
    request_id: str


def encoded(**fields: Unpack[ClientMessageFields]) -> bytes:
    return pb.ClientMessage(**fields).SerializeToString()


def refusal(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client_message(data)
    return info.value


def subscribe_with(list_name: str, ids: list[str], request_id: str = "r1") -> bytes:
    # The list is named at run time, so its keyword cannot be checked statically.
    id_list: dict[str, Any] = {list_name: ids}
    return encoded(request_id=request_id, subscribe=pb.Subscribe(**id_list))


def test_subscribe_decodes_to_a_subscribe_request_with_its_ids() -> None:
    data = encoded(
        request_id="r1",
        subscribe=pb.Subscribe(project_ids=["p1", "p2"], sprint_ids=["s1"], work_item_ids=["w1"]),
    )

    assert decode_client_message(data) == SubscribeRequest(
        "r1", SubscriptionIds(("p1", "p2"), ("s1",), ("w1",)), resume_from=None
    )


def test_subscribe_with_resume_from_carries_the_position() -> None:
    data = encoded(
        subscribe=pb.Subscribe(
            project_ids=["p1"], resume_from=pb.StreamPosition(epoch="e1", seq=42)
        )
    )

    request = decode_client_message(data)

    assert isinstance(request, SubscribeRequest)
    assert request.resume_from == StreamPosition(epoch="e1", seq=42)


def test_resume_from_the_empty_stream_position_is_accepted() -> None:
    data = encoded(
        subscribe=pb.Subscribe(project_ids=["p1"], resume_from=pb.StreamPosition(epoch="e1"))
    )

    request = decode_client_message(data)

    assert isinstance(request, SubscribeRequest)
    assert request.resume_from == StreamPosition(epoch="e1", seq=0)


def test_unsubscribe_decodes_to_an_unsubscribe_request() -> None:
    data = encoded(request_id="r2", unsubscribe=pb.Unsubscribe(sprint_ids=["s1"]))

    assert decode_client_message(data) == UnsubscribeRequest(
        "r2", SubscriptionIds(sprint_ids=("s1",))
    )


@pytest.mark.parametrize("client_time_ms", [0, 1_700_000_000_000, -1, 2**63 - 1, -(2**63)])
def test_ping_decodes_with_the_client_time_unchanged(client_time_ms: int) -> None:
    data = encoded(request_id="r3", ping=pb.Ping(client_time_ms=client_time_ms))

    assert decode_client_message(data) == PingRequest("r3", client_time_ms)


def test_refresh_token_decodes_to_a_refresh_token_request() -> None:
    data = encoded(request_id="r4", refresh_token=pb.RefreshToken(token="a.b.c"))

    assert decode_client_message(data) == RefreshTokenRequest("r4", "a.b.c")


def test_command_decodes_with_its_name_and_body_bytes() -> None:
    data = encoded(request_id="r5", command=pb.Command(name="board.move", body=b"\x00\xff"))

    assert decode_client_message(data) == CommandRequest("r5", "board.move", b"\x00\xff")


@pytest.mark.parametrize(
    "payload",
    [
        {"subscribe": pb.Subscribe(project_ids=["p"])},
        {"unsubscribe": pb.Unsubscribe(project_ids=["p"])},
        {"ping": pb.Ping(client_time_ms=1)},
        {"refresh_token": pb.RefreshToken(token="t")},
        {"command": pb.Command(name="x")},
    ],
    ids=["subscribe", "unsubscribe", "ping", "refresh_token", "command"],
)
@pytest.mark.parametrize("request_id", ["", "r", "x" * 64])
def test_every_request_kind_echoes_its_request_id(payload: Payload, request_id: str) -> None:
    request = decode_client_message(encoded(request_id=request_id, **payload))

    assert request.request_id == request_id


@pytest.mark.parametrize("list_name", ID_LISTS)
@pytest.mark.parametrize("value", ["a", "x" * 128, "é" * 128, "日本語", "tab\u00a0nbsp", "🙂"])
def test_ids_of_one_to_128_characters_are_accepted(list_name: str, value: str) -> None:
    request = decode_client_message(subscribe_with(list_name, [value]))

    assert isinstance(request, SubscribeRequest)
    assert getattr(request.ids, list_name) == (value,)


@pytest.mark.parametrize("list_name", ID_LISTS)
@pytest.mark.parametrize("value", ["", "x" * 129, "é" * 129], ids=["empty", "129", "129-multibyte"])
def test_ids_of_zero_or_129_characters_are_refused_naming_their_list(
    list_name: str, value: str
) -> None:
    error = refusal(subscribe_with(list_name, ["fine", value], request_id="r9"))

    assert error.code == "INVALID_MESSAGE"
    assert error.field == list_name
    assert error.request_id == "r9"


@pytest.mark.parametrize("list_name", ID_LISTS)
@pytest.mark.parametrize(
    "control", ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]
)
def test_ids_with_a_control_character_are_refused(list_name: str, control: str) -> None:
    error = refusal(subscribe_with(list_name, [f"a{control}b"]))

    assert error.code == "INVALID_MESSAGE"
    assert error.field == list_name


@pytest.mark.parametrize("list_name", ID_LISTS)
def test_a_list_of_100_ids_is_accepted_and_101_refused(list_name: str) -> None:
    hundred = [f"id{i}" for i in range(100)]

    request = cast(SubscribeRequest, decode_client_message(subscribe_with(list_name, hundred)))
    error = refusal(subscribe_with(list_name, [*hundred, "one-more"]))

    assert getattr(request.ids, list_name) == tuple(hundred)
    assert error.code == "INVALID_MESSAGE"
    assert error.field == list_name


def test_duplicate_ids_are_removed_keeping_first_occurrence_order() -> None:
    data = encoded(
        unsubscribe=pb.Unsubscribe(
            project_ids=["b", "a", "b", "c", "a"], work_item_ids=["w", "w", "w"]
        )
    )

    request = cast(UnsubscribeRequest, decode_client_message(data))

    assert request.ids == SubscriptionIds(project_ids=("b", "a", "c"), work_item_ids=("w",))
    assert len(request.ids) == 4


def test_the_same_id_in_different_lists_is_kept_in_each() -> None:
    data = encoded(subscribe=pb.Subscribe(project_ids=["x"], sprint_ids=["x"], work_item_ids=["x"]))

    assert cast(SubscribeRequest, decode_client_message(data)).ids == SubscriptionIds(
        ("x",), ("x",), ("x",)
    )


@pytest.mark.parametrize(
    "payload",
    [{"subscribe": pb.Subscribe()}, {"unsubscribe": pb.Unsubscribe()}],
    ids=["subscribe", "unsubscribe"],
)
def test_subscribe_or_unsubscribe_naming_no_id_is_refused(payload: Payload) -> None:
    error = refusal(encoded(request_id="r7", **payload))

    assert error.code == "INVALID_MESSAGE"
    assert error.field is not None
    assert error.request_id == "r7"


def test_subscribe_with_only_resume_from_is_refused() -> None:
    data = encoded(subscribe=pb.Subscribe(resume_from=pb.StreamPosition(epoch="e", seq=1)))

    assert refusal(data).code == "INVALID_MESSAGE"


@pytest.mark.parametrize(
    "name", ["board.move", "a", "x" * 64, "board_move.v2", "a1", "a.", "a..b", "a_"]
)
def test_command_names_matching_the_contract_are_accepted(name: str) -> None:
    request = decode_client_message(encoded(command=pb.Command(name=name)))

    assert request == CommandRequest("", name, b"")


@pytest.mark.parametrize(
    "name",
    ["", "Board", "1x", "x" * 65, "a-b", ".a", "_a", "board move", "board.move\n", "é", "ａ"],
)
def test_command_names_outside_the_contract_are_refused(name: str) -> None:
    error = refusal(encoded(request_id="rc", command=pb.Command(name=name)))

    assert error.code == "INVALID_MESSAGE"
    assert error.field == "command.name"
    assert error.request_id == "rc"


@pytest.mark.parametrize("token", ["t", "x" * 8192, "é" * 4096], ids=["1", "8192", "8192-bytes"])
def test_tokens_up_to_8_kib_are_accepted(token: str) -> None:
    assert decode_client_message(encoded(refresh_token=pb.RefreshToken(token=token))) == (
        RefreshTokenRequest("", token)
    )


@pytest.mark.parametrize("token", ["", "x" * 8193, "é" * 4097], ids=["empty", "8193", "8194-bytes"])
def test_tokens_empty_or_over_8_kib_are_refused(token: str) -> None:
    error = refusal(encoded(request_id="rt", refresh_token=pb.RefreshToken(token=token)))

    assert error.code == "INVALID_MESSAGE"
    assert error.field == "refresh_token.token"
    assert error.request_id == "rt"


def test_a_refused_token_is_not_repeated_in_the_error_message() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9." + "x" * 9000

    error = refusal(encoded(refresh_token=pb.RefreshToken(token=token)))

    assert "eyJ" not in error.message
    assert "eyJ" not in str(error)


def test_a_message_without_payload_is_an_invalid_message() -> None:
    error = refusal(encoded(request_id="r0"))

    assert error.code == "INVALID_MESSAGE"
    assert error.request_id == "r0"


def test_an_empty_frame_is_an_invalid_message() -> None:
    assert refusal(b"").code == "INVALID_MESSAGE"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff",
        b"\x00",
        b"\x0a\x05ab",  # request_id claims 5 bytes, 2 follow
        b"\x0a\x01\xff",  # request_id is not UTF-8
        b"\x0a\x02\xed\xa0",  # request_id is a UTF-8-encoded surrogate
        b"\x52\x03\x0a\x01\xc3",  # a project id that is not UTF-8
        b"hello, world",
    ],
)
def test_bytes_that_are_not_a_client_message_are_a_decode_error(data: bytes) -> None:
    error = refusal(data)

    assert error.code == "DECODE_ERROR"
    assert error.request_id == ""


@pytest.mark.parametrize(
    "epoch", ["", "e" * 129, "e\x00", "e\n"], ids=["empty", "129", "nul", "newline"]
)
def test_resume_from_epoch_is_validated_like_an_id(epoch: str) -> None:
    data = encoded(
        request_id="rr",
        subscribe=pb.Subscribe(project_ids=["p"], resume_from=pb.StreamPosition(epoch=epoch)),
    )

    error = refusal(data)

    assert error.code == "INVALID_MESSAGE"
    assert error.field == "resume_from.epoch"
    assert error.request_id == "rr"


@pytest.mark.parametrize("request_id", ["x" * 65, "x" * 200, "r\x00", "r\n"])
def test_request_ids_over_64_characters_or_with_control_characters_are_refused(
    request_id: str,
) -> None:
    error = refusal(encoded(request_id=request_id, ping=pb.Ping()))

    assert error.code == "INVALID_MESSAGE"
    assert error.field == "request_id"


def test_check_id_returns_a_valid_id_and_names_the_field_of_an_invalid_one() -> None:
    assert check_id("p1", "project_id") == "p1"
    with pytest.raises(ProtocolError) as info:
        check_id("", "scope.project_id", request_id="r")

    assert info.value.code == "INVALID_MESSAGE"
    assert info.value.field == "scope.project_id"
    assert info.value.request_id == "r"


def test_decode_request_id_reads_the_request_id_of_a_valid_frame() -> None:
    assert decode_request_id(encoded(request_id="abc", ping=pb.Ping())) == "abc"


def test_decode_request_id_reads_the_request_id_of_an_invalid_message() -> None:
    assert decode_request_id(encoded(request_id="abc", subscribe=pb.Subscribe())) == "abc"


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x01\xff"])
def test_decode_request_id_of_garbage_is_empty(data: bytes) -> None:
    assert decode_request_id(data) == ""


def test_decode_request_id_over_64_characters_is_empty() -> None:
    assert decode_request_id(encoded(request_id="x" * 65, ping=pb.Ping())) == ""


# Hypothesis: arbitrary bytes, and generated messages checked against a reference model.


def _valid_message_bytes() -> st.SearchStrategy[bytes]:
    return client_messages().map(lambda message: message.SerializeToString())


def _mangled(data: bytes, cut: int, junk: bytes) -> bytes:
    return data[: cut % (len(data) + 1)] + junk


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            _mangled, st.deferred(_valid_message_bytes), st.integers(0, 400), st.binary(max_size=8)
        ),
    )
)
def test_arbitrary_bytes_decode_to_a_request_or_raise_only_a_protocol_error(data: bytes) -> None:
    outcome: ClientRequest | ProtocolError
    try:
        outcome = decode_client_message(data)
    except ProtocolError as exc:
        outcome = exc

    if isinstance(outcome, ProtocolError):
        assert outcome.code in {"DECODE_ERROR", "INVALID_MESSAGE"}
        assert isinstance(outcome.message, str)
        assert outcome.message
    else:
        assert isinstance(outcome, REQUEST_TYPES)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_request_id_of_arbitrary_bytes_never_raises_and_is_at_most_64_characters(
    data: bytes,
) -> None:
    assert len(decode_request_id(data)) <= 64


def _is_valid_id(value: str, limit: int = 128) -> bool:
    return 1 <= len(value) <= limit and not any(unicodedata.category(c) == "Cc" for c in value)


# Small alphabets near the boundaries so that duplicates, control characters and
# the 128/129 and 64/65 limits all turn up.
_CHARS = st.sampled_from(["a", "b", "é", "日", "\x00", "\n", "\x7f", "\x85", " "])
_IDS = st.one_of(
    st.text(st.sampled_from("ab"), min_size=1, max_size=2),
    st.text(st.sampled_from("abé日 "), min_size=1, max_size=3),
    st.text(_CHARS, max_size=3),
    st.builds(str.__mul__, st.sampled_from(["a", "é"]), st.integers(127, 129)),
)
_ID_LISTS = st.one_of(
    st.lists(_IDS, max_size=3),
    st.lists(_IDS, max_size=3),
    st.integers(99, 102).map(lambda n: [f"id{i % 101}" for i in range(n)]),
)
_REQUEST_IDS = st.one_of(
    st.text(st.sampled_from("ab"), max_size=3),
    st.text(st.sampled_from("ab"), max_size=3),
    st.text(_CHARS, max_size=3),
    st.integers(63, 66).map(lambda n: "r" * n),
)
_COMMAND_NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_.]{0,63}", fullmatch=True),
    st.text(st.sampled_from("aZ1_.-\n"), max_size=66),
)
_TOKENS = st.one_of(
    st.text(_CHARS, max_size=4),
    st.builds(str.__mul__, st.just("x"), st.integers(8191, 8193)),
    st.builds(str.__mul__, st.just("é"), st.integers(4095, 4097)),
)


@st.composite
def client_messages(draw: st.DrawFn) -> pb.ClientMessage:
    message = pb.ClientMessage(request_id=draw(_REQUEST_IDS))
    kind = draw(
        st.sampled_from(["subscribe", "unsubscribe", "ping", "refresh_token", "command", None])
    )
    if kind in ("subscribe", "unsubscribe"):
        body = message.subscribe if kind == "subscribe" else message.unsubscribe
        body.SetInParent()
        body.project_ids.extend(draw(_ID_LISTS))
        body.sprint_ids.extend(draw(_ID_LISTS))
        body.work_item_ids.extend(draw(_ID_LISTS))
        if kind == "subscribe" and draw(st.booleans()):
            message.subscribe.resume_from.epoch = draw(_IDS)
            message.subscribe.resume_from.seq = draw(st.integers(0, 2**64 - 1))
    elif kind == "ping":
        message.ping.client_time_ms = draw(st.integers(-(2**63), 2**63 - 1))
    elif kind == "refresh_token":
        message.refresh_token.token = draw(_TOKENS)
    elif kind == "command":
        message.command.name = draw(_COMMAND_NAMES)
        message.command.body = draw(st.binary(max_size=16))
    return message


def _invalid_fields(message: pb.ClientMessage) -> set[str]:
    """Every field the contract (SPEC §2 "Validation") says is wrong in `message`."""
    if not _is_valid_id(message.request_id, 64) and message.request_id:
        return {"request_id"}
    kind = message.WhichOneof("payload")
    bad: set[str] = set()
    if kind is None:
        bad.add("payload")
    elif kind in ("subscribe", "unsubscribe"):
        body = getattr(message, kind)
        for name in ID_LISTS:
            values = list(getattr(body, name))
            if len(values) > 100 or not all(_is_valid_id(v) for v in values):
                bad.add(name)
        if not (body.project_ids or body.sprint_ids or body.work_item_ids):
            bad.add("empty")
        if (
            kind == "subscribe"
            and body.HasField("resume_from")
            and not _is_valid_id(body.resume_from.epoch)
        ):
            bad.add("resume_from.epoch")
    elif kind == "refresh_token":
        if not 1 <= len(message.refresh_token.token.encode()) <= 8192:
            bad.add("refresh_token.token")
    elif kind == "command":
        name = message.command.name
        if not (
            1 <= len(name) <= 64
            and "a" <= name[0] <= "z"
            and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_." for c in name)
        ):
            bad.add("command.name")
    return bad


def _expected_request(message: pb.ClientMessage) -> ClientRequest:
    request_id = message.request_id
    kind = message.WhichOneof("payload")
    if kind in ("subscribe", "unsubscribe"):
        body = getattr(message, kind)
        ids = SubscriptionIds(*(tuple(dict.fromkeys(getattr(body, name))) for name in ID_LISTS))
        if kind == "unsubscribe":
            return UnsubscribeRequest(request_id, ids)
        resume_from = None
        if body.HasField("resume_from"):
            resume_from = StreamPosition(body.resume_from.epoch, body.resume_from.seq)
        return SubscribeRequest(request_id, ids, resume_from)
    if kind == "ping":
        return PingRequest(request_id, message.ping.client_time_ms)
    if kind == "refresh_token":
        return RefreshTokenRequest(request_id, message.refresh_token.token)
    return CommandRequest(request_id, message.command.name, message.command.body)


def _reencoded(request: ClientRequest) -> bytes:
    message = pb.ClientMessage(request_id=request.request_id)
    if isinstance(request, SubscribeRequest | UnsubscribeRequest):
        body = message.subscribe if isinstance(request, SubscribeRequest) else message.unsubscribe
        body.SetInParent()
        body.project_ids.extend(request.ids.project_ids)
        body.sprint_ids.extend(request.ids.sprint_ids)
        body.work_item_ids.extend(request.ids.work_item_ids)
        if isinstance(request, SubscribeRequest) and request.resume_from is not None:
            message.subscribe.resume_from.epoch = request.resume_from.epoch
            message.subscribe.resume_from.seq = request.resume_from.seq
    elif isinstance(request, PingRequest):
        message.ping.client_time_ms = request.client_time_ms
    elif isinstance(request, RefreshTokenRequest):
        message.refresh_token.token = request.token
    else:
        message.command.name = request.name
        message.command.body = request.body
    return message.SerializeToString()


@settings(max_examples=200, deadline=None)
@given(client_messages())
def test_generated_client_messages_are_validated_as_the_contract_says(
    message: pb.ClientMessage,
) -> None:
    invalid = _invalid_fields(message)
    data = message.SerializeToString()

    if not data:
        assert refusal(data).code == "INVALID_MESSAGE"
        return
    if invalid:
        error = refusal(data)
        assert error.code == "INVALID_MESSAGE"
        assert error.field in invalid or ("empty" in invalid and error.field in ID_LISTS)
        if "request_id" not in invalid:
            assert error.request_id == message.request_id
        return
    request = decode_client_message(data)
    assert request == _expected_request(message)
    assert decode_client_message(_reencoded(request)) == request


@settings(max_examples=200, deadline=None)
@given(client_messages())
def test_decode_request_id_agrees_with_the_request_id_decode_client_message_echoes(
    message: pb.ClientMessage,
) -> None:
    data = message.SerializeToString()
    try:
        echoed = decode_client_message(data).request_id
    except ProtocolError as error:
        echoed = error.request_id

    assert decode_request_id(data) == echoed
