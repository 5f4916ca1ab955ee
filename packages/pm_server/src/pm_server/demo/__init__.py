"""The live demo board that `pm-server --dev` serves (never in production mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from pm_server.dev import DEV_PROJECT, DEV_TENANT, mint_dev_token
from pm_server.state import SETTINGS

__all__ = ["DEMO_TOKEN_LIFETIME_SECS", "DEMO_USER", "add_demo_routes"]

DEMO_USER: Final = "demo-board"
DEMO_TOKEN_LIFETIME_SECS: Final = 3600

_STATIC: Final = Path(__file__).parent / "static"
# The files the page loads, by URL name; nothing else under static/ is served.
_FILES: Final = {
    "": ("index.html", "text/html"),
    "board.js": ("board.js", "text/javascript"),
    "board.css": ("board.css", "text/css"),
    "pm-client.js": ("pm-client.js", "text/javascript"),
}
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def add_demo_routes(app: web.Application) -> None:
    """Serve the demo board at `/demo/` and its dev-only token at `/demo/config.json`.

    The board is a static page and the browser client bundle (built from
    `clients/js` into `static/`). `GET /demo/config.json` answers
    `{"wsUrl", "token", "tenantId", "projectId"}` with a fresh token signed with
    the dev secret, so the page never carries a token in a URL and can fetch a
    new one after the dev server restarts with a new secret. Anyone who can
    reach the dev server can get such a token: call this only in `--dev` mode,
    which binds 127.0.0.1. A `Host` other than a loopback name gets 403 there,
    so a DNS-rebinding page cannot read the token either.
    """
    app.router.add_get("/demo", _redirect_to_board, name="demo")
    app.router.add_get("/demo/config.json", _config, name="demo-config")
    app.router.add_get("/demo/", _static_file, name="demo-board")
    app.router.add_get("/demo/{name:[a-z-]+\\.(?:js|css)}", _static_file)


async def _redirect_to_board(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/demo/")


async def _static_file(request: web.Request) -> web.StreamResponse:
    known = _FILES.get(request.match_info.get("name", ""))
    if known is None:
        raise web.HTTPNotFound()
    file_name, content_type = known
    path = _STATIC / file_name
    if not path.is_file():
        return web.json_response(
            {
                "code": "DEMO_NOT_BUILT",
                "message": "the demo bundle is missing: run `npm ci && npm run build` "
                "in clients/js",
            },
            status=404,
        )
    response = web.FileResponse(path, headers=_headers(request))
    response.content_type = content_type
    response.charset = "utf-8"
    return response


async def _config(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not _is_loopback(request.url.host):
        return web.json_response(
            {"code": "FORBIDDEN_HOST", "message": "the demo token is served to localhost only"},
            status=403,
        )
    if settings.jwt_secret is None:
        return web.json_response(
            {"code": "NOT_FOUND", "message": "the demo needs pm-server --dev"}, status=404
        )
    token = mint_dev_token(
        settings.jwt_secret,
        tenant_id=DEV_TENANT,
        user_id=DEMO_USER,
        lifetime_secs=DEMO_TOKEN_LIFETIME_SECS,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    scheme = "wss" if request.secure else "ws"
    body = {
        "wsUrl": f"{scheme}://{request.host}/ws",
        "token": token,
        "tenantId": DEV_TENANT,
        "projectId": DEV_PROJECT,
    }
    return web.json_response(body, headers=_headers(request))


def _headers(request: web.Request) -> dict[str, str]:
    ws_origin = f"{'wss' if request.secure else 'ws'}://{request.host}"
    return {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; "
            f"connect-src 'self' {ws_origin}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
    }


def _is_loopback(host: str | None) -> bool:
    return host is not None and host.lower() in _LOOPBACK_HOSTS
