"""A connection's life on a real pm-server: heartbeats, token expiry, limits on what it sends."""

from __future__ import annotations

import pm_proto as pb
import pytest
from pm_testkit import ServerProcess

MAX_MESSAGE_BYTES = 1024
RATE_LIMIT = 8

pytestmark = pytest.mark.pm_server(
    {
        "HEARTBEAT_INTERVAL_SECS": "1",
        "HEARTBEAT_TIMEOUT_SECS": "1",
        "JWT_LEEWAY_SECS": "0",
        "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "RATE_LIMIT_MAX_REQUESTS": str(RATE_LIMIT),
    }
)


def command_of_size(size: int) -> bytes:
    """A serialized ClientMessage carrying a Command, exactly `size` bytes long."""
    message = pb.ClientMessage(request_id="big", command=pb.Command(name="noop"))
    message.command.body = b"x" * (size - message.ByteSize() - 4)
    message.command.body += b"x" * (size - message.ByteSize())
    data = message.SerializeToString()
    assert len(data) == size
    return data


async def test_welcome_announces_the_configured_heartbeat_and_limits(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    assert client.welcome.heartbeat_interval_secs == 1
    assert client.welcome.limits.max_message_bytes == MAX_MESSAGE_BYTES
    assert client.welcome.limits.rate_limit_max_requests == RATE_LIMIT


async def test_a_peer_that_stops_answering_pings_is_closed_4009_and_others_stay(
    server: ServerProcess, tenant: str
) -> None:
    attentive = await server.connect(tenant, "attentive")
    silent = await server.connect(tenant, "silent")
    silent.stop_reading()

    await server.wait_log(rf"stopped answering pings.*tenant_id={tenant} .*user_id=silent")
    silent.resume_reading()
    await silent.expect_close(4009)  # and nothing before the close

    await attentive.expect_nothing_pending()


async def test_a_connection_ends_4001_when_its_token_expires_unless_refreshed(
    server: ServerProcess, tenant: str
) -> None:
    expiring = await server.open_ws(server.token(tenant, "u1", expires_in=2))
    refreshed = await server.open_ws(server.token(tenant, "u1", expires_in=2))
    await expiring.recv_kind("welcome")
    await refreshed.recv_kind("welcome")

    ack = await refreshed.request(
        pb.ClientMessage(refresh_token=pb.RefreshToken(token=server.token(tenant, "u1")))
    )
    [closing] = await expiring.expect_close(4001, "closing")

    assert ack.WhichOneof("payload") == "ack"
    assert closing.closing.code == "TOKEN_EXPIRED"
    await refreshed.expect_nothing_pending()


async def test_refreshing_with_a_token_of_another_user_closes_4003(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant, "alice")

    await client.send(
        pb.ClientMessage(refresh_token=pb.RefreshToken(token=server.token(tenant, "mallory")))
    )
    code, _ = await client.until_closed()

    assert code == 4003


async def test_refreshing_with_a_bad_token_is_an_error_and_the_connection_stays(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    answer = await client.request(
        pb.ClientMessage(refresh_token=pb.RefreshToken(token="not.a.token"))
    )

    assert answer.WhichOneof("payload") == "error"
    assert answer.error.code in {"JWT_DECODE_FAILED", "INVALID_TOKEN"}
    await client.expect_nothing_pending()


async def test_frames_beyond_the_rate_limit_are_refused_and_the_connection_stays(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    answers = [
        await client.request(pb.ClientMessage(ping=pb.Ping(client_time_ms=n)))
        for n in range(RATE_LIMIT + 2)
    ]

    kinds = [a.WhichOneof("payload") for a in answers]
    assert kinds[:RATE_LIMIT] == ["pong"] * RATE_LIMIT
    assert kinds[RATE_LIMIT:] == ["error", "error"]
    assert {a.error.code for a in answers[RATE_LIMIT:]} == {"RATE_LIMIT_EXCEEDED"}
    assert [a.request_id for a in answers[RATE_LIMIT:]] == [
        f"r{RATE_LIMIT + 1}",
        f"r{RATE_LIMIT + 2}",
    ]
    assert client.ws.close_code is None


async def test_a_frame_of_exactly_max_message_bytes_is_served(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    await client.ws.send(command_of_size(MAX_MESSAGE_BYTES))
    answer = await client.recv()

    assert answer.request_id == "big"
    assert answer.error.code == "UNKNOWN_COMMAND"


async def test_a_frame_over_max_message_bytes_closes_1009(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    await client.ws.send(command_of_size(MAX_MESSAGE_BYTES + 1))
    code, _ = await client.until_closed()

    assert code == 1009


async def test_text_and_undecodable_frames_get_errors_and_the_connection_stays(
    server: ServerProcess, tenant: str
) -> None:
    client = await server.connect(tenant)

    await client.ws.send("a text frame")
    text_error = await client.recv_kind("error")
    await client.ws.send(b"\xff\xff\xff")
    decode_error = await client.recv_kind("error")

    assert text_error.error.code == "INVALID_MESSAGE"
    assert decode_error.error.code == "DECODE_ERROR"
    await client.expect_nothing_pending()
