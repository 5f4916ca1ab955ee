"""What a real pm-server writes while serving: JSON lines, connection ids, and never a secret."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pm_proto as pb
import pytest_asyncio

TENANT = "log-tenant"
WRONG_KEY = "wrong-key-Zq8xW3vT5nLm2"


@dataclass(frozen=True)
class Transcript:
    """Everything one server printed while serving a known session of traffic."""

    stdout: list[str]
    stderr: list[str]
    records: list[dict[str, Any]]
    secrets: dict[str, str]
    alice_connection_id: str
    exit_code: int


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def transcript(module_servers: Any) -> AsyncIterator[Transcript]:
    """Serve a varied session with debug JSON logging, then stop the server and keep its output."""
    server = module_servers.start({"LOG_LEVEL": "debug", "LOG_FORMAT": "json"})
    header_token = server.token(TENANT, "log-alice")
    browser_token = server.token(TENANT, "log-browser")
    query_token = server.token(TENANT, "log-query")
    expired_token = server.token(TENANT, "log-expired", expires_in=-3600)
    refresh_token = server.token(TENANT, "log-alice", expires_in=7200)
    forged = server.token(TENANT, "log-forged")
    forged = forged[: forged.rindex(".") + 1] + "c2lnbmF0dXJlLW9mLW5vYm9keQ"

    alice = await server.open_ws(header_token, track=False)
    browser = await server.open_ws(browser_token, subprotocol=True, track=False)
    try:
        welcome = (await alice.recv_kind("welcome")).welcome
        await browser.recv_kind("welcome")
        await alice.subscribe(["p1"])
        await server.refused(url=f"{server.ws_url}?token={query_token}")
        await server.refused(expired_token)
        await server.refused(forged)
        await server.refused(additional_headers={"Authorization": f"Basic {server.publish_key}"})
        await server.publish(TENANT, "p1", payload=b"logged?")
        await server.post_publish(b"\x00", key=WRONG_KEY)
        await alice.events(1)
        await alice.request(pb.ClientMessage(refresh_token=pb.RefreshToken(token=refresh_token)))
        await alice.request(pb.ClientMessage(refresh_token=pb.RefreshToken(token=forged)))
        await alice.ws.send(b"\xff\xfe not protobuf")
        await alice.recv_kind("error")
        await server.get("/api/v1/connections", bearer=server.admin_key)
        await server.get("/api/v1/connections", bearer=WRONG_KEY)
        await server.http(
            "POST",
            "/api/v1/disconnect",
            json_body={"tenant_id": TENANT, "user_id": "log-browser"},
            bearer=server.admin_key,
        )
        await browser.until_closed()
        await alice.ws.close()
        exit_code = await server.stop_async(signal.SIGTERM)
    finally:
        await alice.close()
        await browser.close()
        server.kill()
    yield Transcript(
        stdout=server.stdout.lines,
        stderr=server.stderr.lines,
        records=server.log_records(),
        secrets={
            "JWT_SECRET": server.secret,
            "PUBLISH_API_KEY": server.publish_key,
            "ADMIN_API_KEY": server.admin_key,
            "wrong API key": WRONG_KEY,
            **{
                f"{name} token": token
                for name, token in (
                    ("header", header_token),
                    ("browser", browser_token),
                    ("query", query_token),
                    ("expired", expired_token),
                    ("refresh", refresh_token),
                    ("forged", forged),
                )
            },
            **{
                f"{name} token signature": token.rsplit(".", 1)[1]
                for name, token in (
                    ("header", header_token),
                    ("browser", browser_token),
                    ("query", query_token),
                    ("refresh", refresh_token),
                )
            },
        },
        alice_connection_id=welcome.connection_id,
        exit_code=exit_code,
    )


def test_the_session_ended_with_a_graceful_exit(transcript: Transcript) -> None:
    assert transcript.exit_code == 0
    assert any(r["message"] == "Graceful shutdown complete" for r in transcript.records)


def test_every_line_the_server_wrote_is_one_json_object(transcript: Transcript) -> None:
    assert len(transcript.records) == len(transcript.stderr) > 0
    for record in transcript.records:
        assert {"ts", "level", "logger", "message"} <= set(record)
    assert transcript.stdout == []


def test_debug_level_shows_debug_records(transcript: Transcript) -> None:
    levels = {record["level"] for record in transcript.records}

    assert "INFO" in levels
    assert "DEBUG" in levels


def test_lines_about_a_connection_carry_its_tenant_connection_and_user_ids(
    transcript: Transcript,
) -> None:
    about_connections = [
        r for r in transcript.records if r["logger"].startswith("pm_ws") and "connection" in r
    ]
    opened = [r for r in transcript.records if r["message"].startswith("connection opened")]
    closed = [r for r in transcript.records if r["message"].startswith("connection closed")]

    assert len(opened) == 2
    assert len(closed) == 2
    for record in opened + closed + about_connections:
        assert record["tenant_id"] == TENANT, record
        assert record["connection_id"], record
        assert record["user_id"] in {"log-alice", "log-browser"}, record
    alice = [r for r in opened + closed if r["connection_id"] == transcript.alice_connection_id]
    assert [r["user_id"] for r in alice] == ["log-alice", "log-alice"]


def test_no_token_signature_or_api_key_is_ever_printed(transcript: Transcript) -> None:
    output = "\n".join(transcript.stdout + transcript.stderr)

    leaked = [name for name, secret in transcript.secrets.items() if secret in output]

    assert leaked == []


def test_the_access_log_never_prints_a_query_string(transcript: Transcript) -> None:
    access = [r for r in transcript.records if r["logger"] == "aiohttp.access"]
    upgrades = [r for r in access if r["path"].startswith("/ws")]

    assert {r["status"] for r in upgrades} >= {101, 401}
    assert "/ws?<redacted>" in {r["path"] for r in upgrades}
    for record in access:
        assert "token=" not in record["message"]
        assert "token=" not in record["path"]


def test_the_effective_configuration_is_logged_with_secrets_redacted(
    transcript: Transcript,
) -> None:
    [configuration] = [r for r in transcript.records if r["message"] == "Effective configuration"]

    assert configuration["log_level"] == "debug"
    assert configuration["log_format"] == "json"
    assert configuration["jwt_secret"] == "<redacted>"
    assert configuration["publish_api_key"] == "<redacted>"
    assert configuration["admin_api_key"] == "<redacted>"
