"""`pm-server --dev`: what it prints on stdout is enough to connect, subscribe and publish."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pm_testkit import free_port


@dataclass(frozen=True)
class Banner:
    """The facts `pm-server --dev` printed."""

    ws_url: str
    tenant: str
    token: str
    publish_key: str
    admin_key: str
    publish_body: str
    python_example: str


def read_banner(server: Any) -> Banner:
    def fact(label: str) -> str:
        return server.stdout.wait_for(rf"^\s+{label}\s+(\S+)").group(1)

    server.stdout.wait_for(r"^List connections")
    text = server.stdout.text
    body = re.search(r"-d '(.*)'$", text, re.MULTILINE)
    example = re.search(r"<<'EOF'\n(.*?)\nEOF$", text, re.MULTILINE | re.DOTALL)
    assert body is not None, text
    assert example is not None, text
    return Banner(
        ws_url=fact("WebSocket"),
        tenant=fact("Tenant"),
        token=fact("Token"),
        publish_key=fact("Publish key"),
        admin_key=fact("Admin key"),
        publish_body=body.group(1),
        python_example=example.group(1),
    )


@pytest.fixture(scope="module")
def dev_server(module_servers: Any) -> Any:
    port = free_port()
    # "Any address" in BIND_ADDR: --dev keeps the port but binds 127.0.0.1 regardless.
    return module_servers.start(
        {"BIND_ADDR": f"0.0.0.0:{port}"}, args=["--dev"], auth=False, api_keys=False, port=port
    )


@pytest.fixture(scope="module")
def banner(dev_server: Any) -> Banner:
    return read_banner(dev_server)


def test_dev_mode_binds_loopback_on_the_port_of_bind_addr(dev_server: Any, banner: Banner) -> None:
    listening = dev_server.wait_listening()

    assert f"listening on 127.0.0.1:{dev_server.port}" in listening
    assert banner.ws_url == f"ws://127.0.0.1:{dev_server.port}/ws"


async def test_the_printed_token_and_publish_key_deliver_an_event(
    dev_server: Any, banner: Banner
) -> None:
    client = await dev_server.open_ws(banner.token, url=banner.ws_url)
    welcome = (await client.recv_kind("welcome")).welcome
    await client.subscribe(["p1"])

    answer = await dev_server.post_publish(
        banner.publish_body, "application/json", key=banner.publish_key
    )
    [event] = await client.events(1)

    assert welcome.tenant_id == banner.tenant
    assert answer.status == 200, answer.body
    assert event.event_id == answer.json()["eventId"]
    assert event.scope.project_id == "p1"
    assert event.payload == b"hello"


async def test_the_printed_admin_key_lists_the_connections(dev_server: Any, banner: Banner) -> None:
    client = await dev_server.open_ws(banner.token, subprotocol=True)
    welcome = (await client.recv_kind("welcome")).welcome

    answer = await dev_server.get("/api/v1/connections", bearer=banner.admin_key)

    assert answer.status == 200
    ids = [c["connection_id"] for c in answer.json()["connections"]]
    assert welcome.connection_id in ids


async def test_the_printed_python_example_receives_a_published_event(
    dev_server: Any, banner: Banner, tmp_path: Path
) -> None:
    script = tmp_path / "example.py"
    script.write_text(banner.python_example)
    example = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        env=dev_server.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert example.stdout is not None
    printed: list[str] = []

    async def read_until(needle: str) -> None:
        while needle not in "".join(printed):
            line = await asyncio.wait_for(example.stdout.readline(), 20)
            assert line, "".join(printed)
            printed.append(line.decode())

    try:
        await read_until("ack {")
        answer = await dev_server.post_publish(
            banner.publish_body, "application/json", key=banner.publish_key
        )
        await read_until('payload: "hello"')
    finally:
        if example.returncode is None:
            example.kill()
        await asyncio.wait_for(example.wait(), 10)

    assert answer.status == 200
    assert json.loads(banner.publish_body)["tenantId"] == banner.tenant
    assert "event {" in "".join(printed)


def test_the_dev_secrets_are_printed_only_on_stdout(dev_server: Any, banner: Banner) -> None:
    logs = dev_server.stderr.text

    for secret in (banner.token, banner.token.split(".")[2], banner.publish_key, banner.admin_key):
        assert secret not in logs
