"""The in-run baseline: a hand-written aiohttp hub, the simplest fanout a person would write.

A dict of socket sets keyed by project; `POST /publish?project=P` re-sends its body, as is,
with `await ws.send_bytes(data)` to every socket subscribed to P. Unfiltered scenarios put every
socket in one project, which is exactly "a set of sockets". Like pm-server it checks an HS256
JWT (pyjwt, `exp`, `sub` and `tenant_id` required) on the upgrade and a bearer key on publish,
so handshakes and publishes cost the same kind of work. A socket's first frame is a
`pm.v1.ClientMessage` subscribe (the same frame pm-server gets); the hub answers `ok`.

It has no send queue, no backpressure policy, no history, no metrics: `send_bytes` writes to the
transport at once and only waits when the transport is paused (the peer stopped reading).

Run: `JWT_SECRET=... PUBLISH_API_KEY=... python tools/bench/hub.py 127.0.0.1:PORT`.
"""

from __future__ import annotations

import hmac
import os
import sys

import jwt
from aiohttp import WSMsgType, web
from pm_proto import ClientMessage

SOCKETS = web.AppKey("sockets", dict[str, set[web.WebSocketResponse]])


async def upgrade(request: web.Request) -> web.StreamResponse:
    """Check the bearer JWT, upgrade, take one subscribe frame, then hold the socket."""
    header = request.headers.get("Authorization", "")
    try:
        jwt.decode(
            header.removeprefix("Bearer "),
            os.environ["JWT_SECRET"],
            algorithms=["HS256"],
            options={"require": ["exp", "sub", "tenant_id"]},
        )
    except jwt.PyJWTError:
        return web.json_response({"code": "INVALID_TOKEN"}, status=401)
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    projects: list[str] = []
    try:
        async for message in ws:
            if message.type is not WSMsgType.BINARY:
                continue
            for project in ClientMessage.FromString(message.data).subscribe.project_ids:
                sockets.setdefault(project, set()).add(ws)
                projects.append(project)
            await ws.send_bytes(b"ok")
    finally:
        for project in projects:
            sockets[project].discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    """Re-send the body to every socket of `?project=`."""
    if not hmac.compare_digest(
        request.headers.get("Authorization", ""), f"Bearer {os.environ['PUBLISH_API_KEY']}"
    ):
        return web.json_response({"code": "INVALID_API_KEY"}, status=401)
    data = await request.read()
    for ws in list(request.app[SOCKETS].get(request.query.get("project", ""), ())):
        try:  # noqa: SIM105 - a bare try costs nothing here; contextlib.suppress would
            await ws.send_bytes(data)
        except ConnectionError:  # the socket is closing: its handler will drop it
            pass
    return web.Response(text="ok")


def build_app() -> web.Application:
    """The hub's routes: `GET /ws` and `POST /publish`."""
    app = web.Application()
    app[SOCKETS] = {}
    app.router.add_get("/ws", upgrade)
    app.router.add_post("/publish", publish)
    return app


def main() -> None:
    """Serve on the `host:port` given as the only argument until SIGINT or SIGTERM."""
    host, _, port = sys.argv[1].rpartition(":")
    web.run_app(build_app(), host=host, port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()
