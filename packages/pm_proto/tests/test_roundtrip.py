"""One of each message survives encoding and decoding with every field set."""

import pm_proto as pb
import pytest
from google.protobuf.message import Message

POSITION = pb.StreamPosition(epoch="e1", seq=2**63)
SCOPE = pb.Scope(project_id="p", sprint_id="s", work_item_id="w")

MESSAGES: list[Message] = [
    pb.ClientMessage(
        request_id="r1",
        subscribe=pb.Subscribe(
            project_ids=["p1", "p2"], sprint_ids=["s"], work_item_ids=["w"], resume_from=POSITION
        ),
    ),
    pb.ClientMessage(
        request_id="r2", unsubscribe=pb.Unsubscribe(project_ids=["p"], sprint_ids=["s"])
    ),
    pb.ClientMessage(request_id="r3", ping=pb.Ping(client_time_ms=-5)),
    pb.ClientMessage(request_id="r4", refresh_token=pb.RefreshToken(token="t.t.t")),
    pb.ClientMessage(request_id="r5", command=pb.Command(name="board.move", body=b"\x00\xff")),
    pb.ServerMessage(
        request_id="",
        welcome=pb.Welcome(
            connection_id="c",
            tenant_id="t",
            user_id="u",
            server_time_ms=1,
            heartbeat_interval_secs=30,
            token_expires_at_ms=2,
            position=POSITION,
            limits=pb.Limits(
                max_message_bytes=65536,
                rate_limit_max_requests=100,
                rate_limit_window_secs=60,
                max_subscriptions=1000,
            ),
        ),
    ),
    pb.ServerMessage(request_id="r", ack=pb.Ack(recovered=True, position=POSITION, replayed=3)),
    pb.ServerMessage(request_id="r", error=pb.Error(code="X", message="m", field="f")),
    pb.ServerMessage(
        event=pb.Event(
            event_id="e",
            type="card.moved",
            scope=SCOPE,
            position=POSITION,
            occurred_at_ms=7,
            actor_user_id="u",
            payload=b"{}",
        )
    ),
    pb.ServerMessage(request_id="r", pong=pb.Pong(client_time_ms=1, server_time_ms=2)),
    pb.ServerMessage(
        closing=pb.Closing(code="SERVER_SHUTDOWN", message="bye", reconnect_after_ms=1500)
    ),
    pb.ServerMessage(request_id="r", command_result=pb.CommandResult(body=b"ok")),
    pb.PublishRequest(
        tenant_id="t",
        type="card.moved",
        scope=SCOPE,
        payload=b"x",
        actor_user_id="u",
        event_id="e",
        occurred_at_ms=9,
    ),
    pb.PublishResponse(event_id="e", position=POSITION),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_round_trips(message: Message) -> None:
    decoded = type(message)()
    decoded.ParseFromString(message.SerializeToString())
    assert decoded == message
    assert decoded.ListFields() == message.ListFields()


def test_field_numbers_match_the_contract() -> None:
    client = pb.ClientMessage.DESCRIPTOR.fields_by_name
    assert {name: client[name].number for name in client} == {
        "request_id": 1,
        "subscribe": 10,
        "unsubscribe": 11,
        "ping": 12,
        "refresh_token": 13,
        "command": 14,
    }
    server = pb.ServerMessage.DESCRIPTOR.fields_by_name
    assert {name: server[name].number for name in server} == {
        "request_id": 1,
        "welcome": 10,
        "ack": 11,
        "error": 12,
        "event": 13,
        "pong": 14,
        "closing": 15,
        "command_result": 16,
    }
    assert pb.Error.DESCRIPTOR.fields_by_name["field"].has_presence
    assert pb.Subscribe.DESCRIPTOR.fields_by_name["resume_from"].number == 4
