"""The `pm-token` and `pm-listen` command lines."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import jwt
import pm_proto as pb
from pm_proto.contract import MIN_HS256_SECRET_BYTES

from pm_client.client import PmClient
from pm_client.exceptions import PmClientError
from pm_client.lifecycle import Disconnected
from pm_client.stream import Event, NotRecovered, Position, StreamItem
from pm_client.tokens import mint_token

EXIT_USAGE: Final = 2
EXIT_FAILURE: Final = 1
DEFAULT_URL: Final = "ws://127.0.0.1:3000/ws"
_KEYGEN: Final = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


def mint_token_main(argv: Sequence[str] | None = None) -> None:
    """`pm-token`: print a signed development token, and nothing else, on stdout.

    The key comes from exactly one of `--secret`, `--secret-env VAR`,
    `--secret-stdin` (HS256) or `--private-key FILE` (RS256). A secret shorter
    than 32 bytes, a missing variable or an unreadable key file prints
    `pm-token: ...` on stderr and exits 2.

    Raises:
        SystemExit: 0 after printing the token, 2 for bad arguments or keys.
    """
    parser = argparse.ArgumentParser(
        prog="pm-token",
        description="Mint a development JWT for pm-realtime and print it.",
    )
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--secret", help="HS256 secret (visible in process listings; prefer --secret-env)"
    )
    key.add_argument("--secret-env", metavar="VAR", help="read the HS256 secret from $VAR")
    key.add_argument("--secret-stdin", action="store_true", help="read the HS256 secret from stdin")
    key.add_argument("--private-key", metavar="FILE", type=Path, help="RS256 private key (PEM)")
    parser.add_argument("--tenant", required=True, help="the tenant_id claim")
    parser.add_argument("--user", required=True, help="the sub claim (user id)")
    parser.add_argument("--roles", default="", help="comma-separated roles, e.g. admin,viewer")
    parser.add_argument(
        "--ttl", type=_positive_seconds, default=3600.0, help="lifetime in seconds (3600)"
    )
    parser.add_argument("--issuer", help="the iss claim, when the server sets JWT_ISSUER")
    parser.add_argument("--audience", help="the aud claim, when the server sets JWT_AUDIENCE")
    args = parser.parse_args(argv)
    try:
        secret, algorithm = _signing_key(args)
        token = mint_token(
            tenant_id=args.tenant,
            user_id=args.user,
            key=secret,
            algorithm=algorithm,
            roles=[role.strip() for role in args.roles.split(",") if role.strip()],
            ttl_secs=args.ttl,
            issuer=args.issuer,
            audience=args.audience,
        )
    except _KeyError as error:
        _fail("pm-token", str(error))
    except ValueError as error:
        hint = f"; make one with {_KEYGEN}" if "HS256 secret" in str(error) else ""
        _fail("pm-token", f"{error}{hint}")
    except (jwt.PyJWTError, TypeError):
        _fail("pm-token", "--private-key: expected an RSA private key in PEM format")
    print(token)


class _KeyError(Exception):
    """A key that could not be read; the message names the option."""


def _signing_key(args: argparse.Namespace) -> tuple[str, Any]:
    if args.private_key is not None:
        path: Path = args.private_key
        try:
            return path.read_text(encoding="utf-8"), "RS256"
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise _KeyError(f"--private-key: cannot read {str(path)!r}: {reason}") from None
    if args.secret_env is not None:
        value = os.environ.get(args.secret_env)
        if value is None:
            raise _KeyError(f"--secret-env: ${args.secret_env} is not set")
        secret = value
    elif args.secret_stdin:
        secret = sys.stdin.read()
    else:
        secret = args.secret
    # The server strips its JWT_SECRET the same way.
    secret = secret.strip()
    if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        raise ValueError(
            f"the HS256 secret is {len(secret.encode())} bytes; at least "
            f"{MIN_HS256_SECRET_BYTES} are required (the server refuses shorter ones)"
        )
    return secret, "HS256"


def listen_main(argv: Sequence[str] | None = None) -> None:
    """`pm-listen`: subscribe and print every stream item as one JSON line on stdout.

    Events print as `{"kind": "event", "event_id", "type", "scope", "position",
    "occurred_at_ms", "actor_user_id", "payload" (base64), "payload_json" (when
    the payload is UTF-8 JSON)}`; a resume that lost events prints
    `{"kind": "not_recovered", "last_position", "position"}`. Connection news
    goes to stderr. Reconnects and resumes by itself.

    Raises:
        SystemExit: 0 on Ctrl-C or SIGTERM; 1 when the client stopped for good
            (terminal close, refused upgrade, expired token); 2 for bad arguments.
    """
    parser = argparse.ArgumentParser(
        prog="pm-listen",
        description="Subscribe to pm-realtime and print each event as a JSON line.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway URL ({DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token (default: $PM_TOKEN)")
    parser.add_argument("--project", action="append", default=[], help="project id (repeatable)")
    parser.add_argument("--sprint", action="append", default=[], help="sprint id (repeatable)")
    parser.add_argument(
        "--work-item", action="append", default=[], help="work item id (repeatable)"
    )
    parser.add_argument(
        "--subprotocol",
        action="store_true",
        help="send the token as a subprotocol (as browsers do) instead of a header",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log connection details")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get("PM_TOKEN", "").strip()
    if not token:
        parser.error("a token is required: --token or the PM_TOKEN environment variable")
    if not (args.project or args.sprint or args.work_item):
        parser.error("subscribe to something: --project, --sprint or --work-item")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="pm-listen: %(message)s",
        stream=sys.stderr,
    )
    try:
        code = asyncio.run(_listen(args, token))
    except KeyboardInterrupt:
        code = 0
    raise SystemExit(code)


async def _listen(args: argparse.Namespace, token: str) -> int:
    task = asyncio.current_task()
    if task is not None:
        # Installed even where SIGINT was inherited as ignored (a script's `&` job).
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)

    async def provider() -> str:
        return token

    def connected(welcome: pb.Welcome) -> None:
        _note(f"connected: connection {welcome.connection_id}, user {welcome.user_id}")

    def disconnected(event: Disconnected) -> None:
        if event.delay_secs is not None:
            _note(f"disconnected with {event.code}; reconnecting in {event.delay_secs:.1f}s")

    try:
        async with PmClient(
            args.url,
            provider,
            auth="subprotocol" if args.subprotocol else "header",
            refresh_before_secs=None,
            on_connect=connected,
            on_disconnect=disconnected,
        ) as client:
            ack = await client.subscribe(
                projects=args.project, sprints=args.sprint, work_items=args.work_item
            )
            _note(f"subscribed at {_position_json(Position.from_proto(ack.position))}")
            async for item in client.events():
                print(json.dumps(item_json(item), separators=(",", ":")), flush=True)
    except PmClientError as error:
        _note(str(error))
        return EXIT_FAILURE
    except asyncio.CancelledError:
        return 0
    return 0


def item_json(item: StreamItem) -> dict[str, Any]:
    """A stream item as the JSON object `pm-listen` prints."""
    if isinstance(item, NotRecovered):
        last = item.last_position
        return {
            "kind": "not_recovered",
            "last_position": _position_json(last) if last is not None else None,
            "position": _position_json(item.position),
        }
    return _event_json(item)


def _event_json(event: Event) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "event",
        "event_id": event.event_id,
        "type": event.type,
        "scope": {
            "project_id": event.scope.project_id,
            "sprint_id": event.scope.sprint_id,
            "work_item_id": event.scope.work_item_id,
        },
        "position": _position_json(event.position),
        "occurred_at_ms": event.occurred_at_ms,
        "actor_user_id": event.actor_user_id,
        "payload": base64.b64encode(event.payload).decode("ascii"),
    }
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        document["payload_json"] = json.loads(event.payload.decode("utf-8"))
    return document


def _position_json(position: Position) -> dict[str, Any]:
    return {"epoch": position.epoch, "seq": position.seq}


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _note(message: str) -> None:
    print(f"pm-listen: {message}", file=sys.stderr, flush=True)


def _fail(program: str, message: str) -> NoReturn:
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)
