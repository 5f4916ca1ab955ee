"""The live demo board that `pm-server --dev` serves (never in production mode)."""

from aiohttp import web

__all__ = ["add_demo_routes"]


def add_demo_routes(app: web.Application) -> None:
    """Serve the demo board at `/demo/`."""
