"""`pm-server --dev`: a token signed with the dev secret, and the banner showing how to connect."""

from __future__ import annotations

import time
from collections.abc import Sequence
from textwrap import dedent

import jwt

from pm_server.config import Settings

DEV_TENANT = "dev-tenant"
DEV_USER = "dev-user"
DEV_PROJECT = "p1"


def mint_dev_token(
    secret: str,
    *,
    tenant_id: str = DEV_TENANT,
    user_id: str = DEV_USER,
    lifetime_secs: float = 86400,
    roles: Sequence[str] = (),
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token the dev server accepts, for trying it out by hand.

    Claims: `sub`, `tenant_id`, `roles`, `iat`, `exp` (whole seconds), plus `iss`
    and `aud` when the server is configured to check them (pass `issuer` and
    `audience` from `Settings`, or the token is refused).

    Args:
        secret: The server's `jwt_secret`.
        tenant_id: The tenant the token connects to.
        user_id: The `sub` claim.
        lifetime_secs: Seconds from `now` until `exp`.
        roles: The `roles` claim.
        issuer: The `iss` claim, when set.
        audience: The `aud` claim, when set.
        now: Issue time as a Unix timestamp; the current time by default.
    """
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "roles": list(roles),
        "iat": issued_at,
        "exp": issued_at + int(lifetime_secs),
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def dev_banner(settings: Settings, token: str) -> str:
    """What `pm-server --dev` prints on stdout: URL, token, keys and working examples.

    The examples use the token's own tenant and the generated API keys, so they
    can be pasted as they are: a Python client (from this repository, where
    `websockets` and `pm_proto` are installed) that subscribes to project `p1` and
    prints what arrives, the browser's subprotocol form, and curl commands for the
    publish and admin APIs when those keys are set. It contains secrets: print it
    to the developer's terminal, never to a log. Examples are flush left so that
    the shell here-document and the Python code paste as they are.
    """
    claims = jwt.decode(token, options={"verify_signature": False})
    tenant_id = str(claims.get("tenant_id", DEV_TENANT))
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(claims.get("exp", 0))))
    origin = f"{_url_host(settings.bind_host)}:{settings.bind_port}"
    ws_url = f"ws://{origin}/ws"
    http_url = f"http://{origin}"
    user_id = claims.get("sub", DEV_USER)
    facts = [
        ("WebSocket", ws_url),
        ("Tenant", f"{tenant_id} (user {user_id}, token valid until {expires})"),
        ("Token", token),
    ]
    if settings.publish_api_key is not None:
        facts.append(("Publish key", settings.publish_api_key))
    if settings.admin_api_key is not None:
        facts.append(("Admin key", settings.admin_api_key))
    sections = [
        "pm-server --dev: development mode (random secrets, 127.0.0.1 only). "
        "Never use it in production.",
        "\n".join(f"  {name:<12}{value}" for name, value in facts),
        f"Connect, subscribe to project {DEV_PROJECT} and print what arrives "
        "(run it in this repository):\n\n" + python_example(ws_url, token),
        "From a browser, which cannot set headers on a WebSocket:\n\n"
        + browser_example(ws_url, token),
    ]
    if settings.publish_api_key is not None:
        sections.append(
            f"Publish an event to project {DEV_PROJECT}:\n\n"
            + publish_example(http_url, settings.publish_api_key, tenant_id)
        )
    if settings.admin_api_key is not None:
        sections.append(
            "List connections:\n\n"
            f'curl -sS -H "Authorization: Bearer {settings.admin_api_key}" '
            f"{http_url}/api/v1/connections"
        )
    return "\n\n".join(sections) + "\n"


def python_example(ws_url: str, token: str) -> str:
    """A shell command running a Python client that subscribes to `p1` and prints messages."""
    return dedent(f"""\
        uv run python - <<'EOF'
        import asyncio

        import websockets
        from pm_proto import ClientMessage, ServerMessage


        async def main() -> None:
            async with websockets.connect(
                "{ws_url}",
                additional_headers={{"Authorization": "Bearer {token}"}},
                subprotocols=["pm.v1"],
            ) as ws:
                subscribe = ClientMessage(request_id="1")
                subscribe.subscribe.project_ids.append("{DEV_PROJECT}")
                await ws.send(subscribe.SerializeToString())
                async for frame in ws:
                    print(ServerMessage.FromString(frame))


        asyncio.run(main())
        EOF""")


def browser_example(ws_url: str, token: str) -> str:
    """JavaScript opening the connection with the token in the subprotocol list."""
    return dedent(f"""\
        const token = "{token}";
        const ws = new WebSocket("{ws_url}", ["pm.v1", "pm.bearer." + token]);
        ws.binaryType = "arraybuffer";  // frames are pm.v1.ServerMessage protobufs""")


def publish_example(http_url: str, publish_api_key: str, tenant_id: str) -> str:
    """A curl command publishing a protobuf-JSON `PublishRequest` to project `p1`."""
    body = (
        f'{{"tenantId": "{tenant_id}", "type": "work_item.updated", '
        f'"scope": {{"projectId": "{DEV_PROJECT}"}}, "payload": "aGVsbG8="}}'
    )
    return (
        f"curl -sS -X POST {http_url}/api/v1/publish \\\n"
        f'  -H "Authorization: Bearer {publish_api_key}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # a client cannot connect to "any address"
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
