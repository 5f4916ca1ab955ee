"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from pm_ws import Gateway, GatewayLimits
from prometheus_client import CollectorRegistry

from pm_server.config import Settings

GATEWAY: Final = web.AppKey("gateway", Gateway)
LIMITS: Final = web.AppKey("limits", GatewayLimits)
"""The limits the gateway enforces, built once from the settings; the HTTP routes read them too."""
SETTINGS: Final = web.AppKey("settings", Settings)
METRICS_REGISTRY: Final = web.AppKey("metrics_registry", CollectorRegistry)
STARTED_AT: Final = web.AppKey("started_at", float)
VERSION: Final = web.AppKey("version", str)
