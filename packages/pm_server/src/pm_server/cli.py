"""The `pm-server` command line: settings from the environment, logging, then the server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from pm_server.config import MAX_WORKERS, ConfigError, load_settings
from pm_server.dev import dev_banner, mint_dev_token
from pm_server.logs import configure_logging
from pm_server.serving import run

logger = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2


def main(argv: Sequence[str] | None = None) -> None:
    """Run the gateway until it is stopped; the `pm-server` console script.

    Reads settings from `os.environ` (and `./.env`), the only place the
    environment is read. A bad setting prints `pm-server: VARIABLE: ...` on
    stderr, one line and no traceback, and exits 2 (as argparse does for bad
    arguments). Otherwise configures logging, logs the effective configuration
    with secrets redacted, prints the `--dev` banner on stdout when asked, and
    exits with the server's own exit code.

    Args:
        argv: Arguments without the program name; `sys.argv[1:]` by default.

    Raises:
        SystemExit: Always: with 2 for bad arguments or settings, else with the
            server's exit code.
    """
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, dev=args.dev, workers=args.workers)
    except ConfigError as error:
        print(f"pm-server: {error}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    configure_logging(
        level=settings.log_level, fmt=settings.log_format, colored=settings.log_colored
    )
    logger.info("Effective configuration", extra=settings.redacted())
    if settings.dev and settings.jwt_secret is not None:
        token = mint_dev_token(
            settings.jwt_secret, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        print(dev_banner(settings, token), flush=True)
    raise SystemExit(run(settings))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pm-server",
        description="The pm-realtime WebSocket gateway. Configured by environment "
        "variables (and ./.env); see the README.",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="local development: no JWT settings needed, random secrets, binds "
        "127.0.0.1, prints a token and connect examples",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="run N processes on one port (needs a shared broker, e.g. redis://, when N > 1)",
    )
    parser.add_argument("--version", action="version", version=f"pm-server {_version()}")
    return parser


def _workers(text: str) -> int:
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_WORKERS:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_WORKERS}")


def _version() -> str:
    try:
        return version("pm-server")
    except PackageNotFoundError:
        return "unknown"
