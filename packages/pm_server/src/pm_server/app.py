"""The deployable application: the engine, its routes, and the process lifecycle."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from pm_auth import JwtValidator, TenantContext
from pm_ws import (
    BrokerUnavailable,
    Gateway,
    GatewayMetrics,
    GatewayOptions,
    TenantCheck,
    open_broker,
)
from prometheus_client import CollectorRegistry

from pm_server import api, probes
from pm_server.address_limits import AuthFailureLimiter, auth_failure_middleware
from pm_server.config import Settings
from pm_server.cors import allow_cors
from pm_server.demo import add_demo_routes
from pm_server.descriptors import (
    check_connection_budget,
    quiet_accept_errors,
    raise_open_files_limit,
)
from pm_server.edge import EdgePolicy, EdgeRunner
from pm_server.logs import AccessLogger
from pm_server.state import GATEWAY, LIMITS, METRICS_REGISTRY, SETTINGS, STARTED_AT, VERSION

logger = logging.getLogger(__name__)

# Pending connections the kernel queues for accept(): aiohttp's default (128) drops
# SYNs when a fleet of clients reconnects at once after a deploy, and each drop
# costs the client a one-second retransmit.
_LISTEN_BACKLOG = 2048
# An idle kept-alive HTTP connection is closed after this long (nginx's default;
# aiohttp's own, 3630 s, lets idle sockets pile up).
_KEEPALIVE_SECS = 75.0
# Request line and header field limit. aiohttp's 8190 refused a token of SPEC's
# maximum (8 KiB) with a plain-text 400; with room to spare, an oversized token
# reaches pm_auth and gets its JSON 401 INVALID_TOKEN. Larger heads get a JSON 431.
_MAX_HEAD_LINE_BYTES = 16 * 1024
# The routes that answer 401, whose failures MAX_AUTH_FAILURES_PER_IP counts.
_AUTHENTICATED_PREFIXES = ("/ws", "/api/")


def build_app(settings: Settings) -> web.Application:
    """Assemble the gateway and every route of SPEC §5 from validated settings.

    The gateway's limits are built once; the body-size limit of the HTTP routes
    (`client_max_size`, the publish API) reads `MAX_MESSAGE_BYTES` from that object.
    """
    registry = CollectorRegistry()
    limits = settings.gateway_limits()
    gateway = Gateway(
        jwt=_jwt_validator(settings),
        broker=open_broker(
            settings.broker_url,
            history_size=settings.history_size,
            history_ttl_secs=settings.history_ttl_secs,
        ),
        metrics=GatewayMetrics(registry, tenant_labels=settings.metrics_tenant_labels),
        options=GatewayOptions(
            limits=limits,
            allowed_origins=(
                frozenset(settings.ws_allowed_origins)
                if settings.ws_allowed_origins is not None
                else None
            ),
            tenant_check=_tenant_check(settings.allowed_tenants),
            shutdown_timeout_secs=settings.shutdown_timeout_secs,
        ),
    )
    middlewares = []
    if settings.max_auth_failures_per_ip:
        limiter = AuthFailureLimiter(
            settings.max_auth_failures_per_ip, settings.auth_failure_window_secs
        )
        middlewares.append(auth_failure_middleware(limiter, _AUTHENTICATED_PREFIXES))
    app = web.Application(
        client_max_size=max(limits.max_message_bytes, 4096), middlewares=middlewares
    )
    app[GATEWAY] = gateway
    app[LIMITS] = limits
    app[SETTINGS] = settings
    app[METRICS_REGISTRY] = registry
    app[STARTED_AT] = time.monotonic()
    app[VERSION] = _version()
    gateway.mount(app, "/ws")
    http_routes = [
        app.router.add_get("/live", probes.live),
        app.router.add_get("/ready", probes.ready),
        app.router.add_get("/health", probes.health),
        app.router.add_get("/metrics", probes.metrics),
        app.router.add_post(
            "/api/v1/publish", api.require_key(settings.publish_api_key, api.publish)
        ),
        app.router.add_get(
            "/api/v1/connections", api.require_key(settings.admin_api_key, api.connections)
        ),
        app.router.add_post(
            "/api/v1/disconnect", api.require_key(settings.admin_api_key, api.disconnect)
        ),
    ]
    if settings.cors_allowed_origins:
        allow_cors(app, http_routes, settings.cors_allowed_origins)
    if settings.dev:
        add_demo_routes(app)
    return app


def _jwt_validator(settings: Settings) -> JwtValidator:
    if settings.jwt_public_key is not None:
        return JwtValidator.rs256(
            settings.jwt_public_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_secs=settings.jwt_leeway_secs,
        )
    if settings.jwt_secret is None:
        raise ValueError("no JWT key configured")
    return JwtValidator.hs256(
        settings.jwt_secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_secs=settings.jwt_leeway_secs,
    )


def _tenant_check(allowed: frozenset[str] | None) -> TenantCheck | None:
    if allowed is None:
        return None

    async def check(context: TenantContext) -> bool:
        return context.tenant_id in allowed

    return check


def _version() -> str:
    try:
        return version("pm-server")
    except PackageNotFoundError:
        return "unknown"


async def serve(settings: Settings, *, reuse_port: bool = False) -> int:
    """Serve until SIGTERM or SIGINT, then drain (SPEC §4) and return the exit code.

    The first signal turns readiness to 503 and refuses upgrades at once, then
    drains; a second signal exits the process immediately. Raises the
    open-files limit to its hard limit first (warning when `MAX_CONNECTIONS`
    does not fit), and logs running out of descriptors at most every few
    seconds.
    """
    check_connection_budget(settings.max_connections, raise_open_files_limit())
    app = build_app(settings)
    gateway = app[GATEWAY]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second signal: exiting now")
            os._exit(128 + signum)
        logger.info("received %s: draining", signal.Signals(signum).name)
        gateway.shutdown.begin()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    runner = EdgeRunner(
        app,
        policy=EdgePolicy(
            header_timeout_secs=settings.http_header_timeout_secs,
            max_pending_per_address=settings.max_pending_upgrades_per_ip,
        ),
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_secs + 5,
        keepalive_timeout=_KEEPALIVE_SECS,
        max_line_size=_MAX_HEAD_LINE_BYTES,
        max_field_size=_MAX_HEAD_LINE_BYTES,
    )
    try:
        await runner.setup()
    except BrokerUnavailable:
        logger.error("the event broker is unreachable at start-up; exiting")
        await runner.cleanup()
        return 1
    site = web.TCPSite(
        runner,
        settings.bind_host,
        settings.bind_port,
        reuse_port=reuse_port or None,
        backlog=_LISTEN_BACKLOG,
    )
    try:
        await site.start()
    except OSError as exc:
        logger.error(
            "cannot listen on %s:%d: %s", settings.bind_host, settings.bind_port, exc.strerror
        )
        await runner.cleanup()
        return 1
    # Start-up objects (modules, the app) live as long as the process: keep them out
    # of every later collection, which then scans only per-connection objects. And
    # collect the young generation less often: each connection allocates ~100
    # long-lived objects, and at the default threshold (700) accepting 10,000
    # connections ran a collection every few handshakes.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    for address in runner.addresses:
        logger.info("listening on %s", _format_address(address))
    await stop.wait()
    # Drain while still listening, so that /ready and new upgrades answer 503 meanwhile
    # (aiohttp's cleanup closes the listener before its on_shutdown hooks run).
    await gateway.drain()
    await runner.cleanup()
    logger.info("Graceful shutdown complete")
    return 0


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
