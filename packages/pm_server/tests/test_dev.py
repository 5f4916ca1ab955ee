import asyncio
import re
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from pm_auth import JwtValidator, TokenExpired
from pm_proto import ClientMessage, PublishRequest, ServerMessage, Welcome
from pm_server.config import Settings, load_settings
from pm_server.dev import dev_banner, mint_dev_token

SECRET = "d" * 48
NOW = 1_900_000_000.0


def dev_settings(port: int = 3000) -> Settings:
    return Settings(
        jwt_secret=SECRET,
        bind_host="127.0.0.1",
        bind_port=port,
        publish_api_key="publish-key-0123456789",
        admin_api_key="admin-key-0123456789",
        dev=True,
    )


def python_snippet(banner: str) -> str:
    match = re.search(r"<<'EOF'\n(.*?)\nEOF\n", banner, re.DOTALL)
    assert match is not None
    return match[1]


def test_dev_token_is_accepted_by_the_validator_the_server_builds() -> None:
    token = mint_dev_token(SECRET, roles=("admin",), now=NOW)

    claims = JwtValidator.hs256(SECRET, clock=lambda: NOW + 60).validate(token)

    assert (claims.tenant_id, claims.sub, tuple(claims.roles)) == (
        "dev-tenant",
        "dev-user",
        ("admin",),
    )
    assert claims.exp == int(NOW) + 86400


def test_dev_token_carries_the_configured_issuer_and_audience() -> None:
    token = mint_dev_token(SECRET, issuer="https://issuer", audience="pm", now=NOW)
    validator = JwtValidator.hs256(
        SECRET, issuer="https://issuer", audience="pm", clock=lambda: NOW
    )

    assert validator.validate(token).sub == "dev-user"


def test_dev_token_expires_after_its_lifetime() -> None:
    token = mint_dev_token(SECRET, tenant_id="t", user_id="u", lifetime_secs=60, now=NOW)
    validator = JwtValidator.hs256(SECRET, leeway_secs=0, clock=lambda: NOW + 61)

    with pytest.raises(TokenExpired):
        validator.validate(token)


def test_banner_shows_url_token_keys_and_every_way_to_connect() -> None:
    token = mint_dev_token(SECRET)

    banner = dev_banner(dev_settings(4000), token)

    assert "ws://127.0.0.1:4000/ws" in banner
    assert f'"Authorization": "Bearer {token}"' in banner
    assert 'new WebSocket("ws://127.0.0.1:4000/ws", ["pm.v1", "pm.bearer." + token])' in banner
    assert f'const token = "{token}";' in banner
    assert "curl -sS -X POST http://127.0.0.1:4000/api/v1/publish" in banner
    assert "Bearer publish-key-0123456789" in banner
    assert "Bearer admin-key-0123456789" in banner
    assert "production" in banner


def test_banner_leaves_out_apis_that_are_off() -> None:
    settings = Settings(jwt_secret=SECRET, bind_host="127.0.0.1", dev=True)

    banner = dev_banner(settings, mint_dev_token(SECRET))

    assert "curl" not in banner
    assert "ws://127.0.0.1:3000/ws" in banner


def test_banner_for_loaded_dev_settings_uses_the_generated_keys() -> None:
    settings = load_settings({}, dev=True, dotenv_path=None)
    assert settings.jwt_secret is not None
    assert settings.publish_api_key is not None

    banner = dev_banner(settings, mint_dev_token(settings.jwt_secret))

    assert settings.publish_api_key in banner


def test_banner_publish_example_is_a_valid_publish_request_for_the_token_tenant() -> None:
    banner = dev_banner(dev_settings(), mint_dev_token(SECRET, tenant_id="acme"))

    match = re.search(r"-d '(.*)'", banner)
    assert match is not None
    request = json_format.Parse(match[1], PublishRequest())
    assert request.tenant_id == "acme"
    assert request.scope.project_id == "p1"
    assert request.type


@pytest.fixture
async def fake_gateway() -> AsyncIterator[tuple[int, list[ClientMessage], list[str]]]:
    """A stand-in for /ws that checks what a real client sends, answers once, and closes."""
    received: list[ClientMessage] = []
    headers: list[str] = []

    async def upgrade(request: web.Request) -> web.WebSocketResponse:
        headers.append(request.headers.get("Authorization", ""))
        ws = web.WebSocketResponse(protocols=("pm.v1",))
        await ws.prepare(request)
        message = await ws.receive()
        assert message.type is WSMsgType.BINARY
        received.append(ClientMessage.FromString(message.data))
        await ws.send_bytes(
            ServerMessage(
                request_id="1", welcome=Welcome(tenant_id="dev-tenant")
            ).SerializeToString()
        )
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", upgrade)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    _, port = runner.addresses[0]
    yield port, received, headers
    await runner.cleanup()


async def test_banner_python_example_connects_subscribes_and_prints(
    fake_gateway: tuple[int, list[ClientMessage], list[str]],
) -> None:
    port, received, headers = fake_gateway
    token = mint_dev_token(SECRET)
    snippet = python_snippet(dev_banner(dev_settings(port), token))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        snippet,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode == 0, stderr.decode()
    assert headers == [f"Bearer {token}"]
    [subscribe] = received
    assert list(subscribe.subscribe.project_ids) == ["p1"]
    assert 'tenant_id: "dev-tenant"' in stdout.decode()
