"""Liveness, readiness, health and metrics: what orchestrators and Prometheus read."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pm_server.state import GATEWAY, METRICS_REGISTRY, STARTED_AT, VERSION


async def live(request: web.Request) -> web.Response:
    """200 while the process runs: restart me only when this fails."""
    return web.Response(text="OK")


async def ready(request: web.Request) -> web.Response:
    """200 `Ready`, or 503 `Not Ready: <reason>` while draining or with the broker unreachable."""
    gateway = request.app[GATEWAY]
    if gateway.shutdown.draining:
        return web.Response(status=503, text="Not Ready: draining")
    health = await gateway.broker.health()
    if not health.ok:
        return web.Response(status=503, text="Not Ready: broker unavailable")
    return web.Response(text="Ready")


async def health(request: web.Request) -> web.Response:
    """A JSON report with a check per subsystem; 503 when any check fails."""
    gateway = request.app[GATEWAY]
    broker = await gateway.broker.health()
    draining = gateway.shutdown.draining
    healthy = broker.ok and not draining
    broker_check: dict[str, Any] = {
        "status": "ok" if broker.ok else "down",
        "latency_ms": round(broker.latency_ms, 3),
    }
    if broker.detail:
        broker_check["detail"] = broker.detail
    body = {
        "status": "ok" if healthy else ("draining" if draining else "degraded"),
        "version": request.app[VERSION],
        "uptime_secs": round(time.monotonic() - request.app[STARTED_AT], 3),
        "connections": {
            "total": gateway.registry.count(),
            "tenants": len(gateway.registry.tenant_counts()),
        },
        "checks": {
            "broker": broker_check,
            "shutdown": {"status": gateway.shutdown.state.value},
        },
    }
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text exposition of this process's registry."""
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
