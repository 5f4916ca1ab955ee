"""The demo board's routes: served by `--dev` only, tokens only to localhost, no stray files."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pm_server.app import build_app
from pm_server.config import Settings, load_settings


async def _client(settings: Settings) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(build_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
async def dev_client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = await _client(load_settings({}, dev=True, dotenv_path=None))
    yield client
    await client.close()


async def test_demo_is_not_served_without_dev_mode() -> None:
    secret = secrets.token_urlsafe(48)
    client = await _client(load_settings({"JWT_SECRET": secret}, dotenv_path=None))
    try:
        for path in ("/demo", "/demo/", "/demo/config.json", "/demo/pm-client.js"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 404, path
    finally:
        await client.close()


async def test_demo_page_and_its_scripts_are_served_with_a_strict_policy(
    dev_client: TestClient[web.Request, web.Application],
) -> None:
    redirect = await dev_client.get("/demo", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (308, "/demo/")
    page = await dev_client.get("/demo/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert '<script type="module" src="board.js">' in await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    for name, content_type in (
        ("board.js", "text/javascript"),
        ("pm-client.js", "text/javascript"),
        ("board.css", "text/css"),
    ):
        response = await dev_client.get(f"/demo/{name}")
        assert (response.status, response.content_type) == (200, content_type), name
        assert len(await response.read()) > 0


@pytest.mark.parametrize(
    "path", ["/demo/index.html", "/demo/nope.js", "/demo/..%2f__init__.py", "/demo/static/board.js"]
)
async def test_only_the_board_files_are_served(
    dev_client: TestClient[web.Request, web.Application], path: str
) -> None:
    response = await dev_client.get(path)
    assert response.status == 404


async def test_config_hands_localhost_a_token_the_gateway_accepts(
    dev_client: TestClient[web.Request, web.Application],
) -> None:
    response = await dev_client.get("/demo/config.json")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    config = await response.json()
    assert config["wsUrl"] == f"ws://{dev_client.host}:{dev_client.port}/ws"
    assert (config["tenantId"], config["projectId"]) == ("dev-tenant", "p1")
    claims = jwt.decode(config["token"], options={"verify_signature": False})
    assert (claims["tenant_id"], claims["sub"]) == ("dev-tenant", "demo-board")
    assert claims["exp"] - claims["iat"] == 3600

    async with dev_client.ws_connect(
        "/ws", protocols=("pm.v1", f"pm.bearer.{config['token']}")
    ) as ws:
        assert ws.protocol == "pm.v1"
        welcome = await ws.receive_bytes(timeout=5)
        assert b"demo-board" in welcome


async def test_config_refuses_a_host_that_is_not_localhost(
    dev_client: TestClient[web.Request, web.Application],
) -> None:
    response = await dev_client.get(
        "/demo/config.json", headers={"Host": f"attacker.example:{dev_client.port}"}
    )
    assert response.status == 403
    body = await response.json()
    assert body["code"] == "FORBIDDEN_HOST"
    assert set(body) == {"code", "message"}
