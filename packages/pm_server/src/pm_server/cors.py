"""CORS for the HTTP routes, so browser back-offices can call the APIs."""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp_cors
from aiohttp import web


def allow_cors(
    app: web.Application, routes: Iterable[web.AbstractRoute], origins: Iterable[str]
) -> None:
    """Answer preflights and add CORS headers on `routes` for exactly `origins`.

    Credentials (cookies) are not allowed: the APIs authenticate with a bearer
    key, which a browser sends explicitly.
    """
    options = aiohttp_cors.ResourceOptions(
        allow_headers=("Authorization", "Content-Type"), max_age=600
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in routes:
        cors.add(route)
