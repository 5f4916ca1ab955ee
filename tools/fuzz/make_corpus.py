"""Write the named seed inputs of every fuzz target into tools/fuzz/corpus/<target>/.

    uv run python tools/fuzz/make_corpus.py

The committed corpus is the source of truth; this script documents where its
named seeds came from and rewrites them (deterministically) after a change of
the wire format. Files it does not name (inputs that once crashed, or that a
long run contributed) are left alone.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pm_proto as pb
from fuzz_auth import NOW, signed

CORPUS = Path(__file__).resolve().parent / "corpus"
JWT_HEADER = b'{"alg":"HS256","typ":"JWT"}'
CLAIMS = {"sub": "u1", "tenant_id": "t1", "iat": NOW - 60, "exp": NOW + 3600}


def claims(**changes: object) -> bytes:
    body = {**CLAIMS, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def frame(**fields: object) -> bytes:
    return pb.ClientMessage(**fields).SerializeToString()  # type: ignore[arg-type]


def client_frame() -> Iterator[tuple[str, bytes]]:
    ids = [f"p{i}" for i in range(101)]
    yield "subscribe-project", frame(request_id="r1", subscribe=pb.Subscribe(project_ids=["p1"]))
    yield (
        "subscribe-three-lists",
        frame(
            request_id="r2",
            subscribe=pb.Subscribe(
                project_ids=["p1"], sprint_ids=["s1"], work_item_ids=["w1", "w2"]
            ),
        ),
    )
    yield (
        "subscribe-resume",
        frame(
            request_id="r3",
            subscribe=pb.Subscribe(
                project_ids=["p1"], resume_from=pb.StreamPosition(epoch="e1", seq=42)
            ),
        ),
    )
    yield (
        "subscribe-resume-empty-epoch",
        frame(subscribe=pb.Subscribe(project_ids=["p1"], resume_from=pb.StreamPosition(seq=1))),
    )
    yield "subscribe-100-ids", frame(subscribe=pb.Subscribe(project_ids=ids[:100]))
    yield "subscribe-101-ids", frame(subscribe=pb.Subscribe(sprint_ids=ids))
    yield "subscribe-128-char-id", frame(subscribe=pb.Subscribe(work_item_ids=["w" * 128]))
    yield "subscribe-129-char-id", frame(subscribe=pb.Subscribe(work_item_ids=["w" * 129]))
    yield "subscribe-control-character", frame(subscribe=pb.Subscribe(project_ids=["p\x85"]))
    yield "subscribe-duplicates", frame(subscribe=pb.Subscribe(project_ids=["p1", "p1", "p2"]))
    yield "subscribe-empty", frame(request_id="r4", subscribe=pb.Subscribe())
    yield "unsubscribe", frame(request_id="r5", unsubscribe=pb.Unsubscribe(sprint_ids=["s1"]))
    yield "ping", frame(request_id="r6", ping=pb.Ping(client_time_ms=1_700_000_000_000))
    yield "ping-min-int64", frame(ping=pb.Ping(client_time_ms=-(2**63)))
    token = signed(JWT_HEADER, claims())
    yield "refresh-token", frame(request_id="r7", refresh_token=pb.RefreshToken(token=token))
    yield "refresh-token-8192", frame(refresh_token=pb.RefreshToken(token="t" * 8192))
    yield "refresh-token-8193", frame(refresh_token=pb.RefreshToken(token="t" * 8193))
    yield "refresh-token-empty", frame(refresh_token=pb.RefreshToken())
    yield (
        "command",
        frame(request_id="r8", command=pb.Command(name="board.move_card", body=b'{"card":"w1"}')),
    )
    yield "command-64-char-name", frame(command=pb.Command(name="a" * 64))
    yield "command-bad-name", frame(command=pb.Command(name="Board.Move"))
    yield "no-payload", frame(request_id="r9")
    yield "request-id-64", frame(request_id="r" * 64, ping=pb.Ping())
    yield "request-id-65", frame(request_id="r" * 65, ping=pb.Ping())
    yield "request-id-control", frame(request_id="r\x00", ping=pb.Ping())
    yield "empty", b""
    yield "garbage", b"\xff\xff\xff\xff"
    yield "truncated-varint", b"\x0a\x80"
    yield "unknown-field", frame(ping=pb.Ping()) + b"\xf8\x07\x01"
    yield "wrong-wire-type", b"\x0d\x00\x00\x00\x00"
    yield "deep-unknown-groups", b"\xfb\x07" * 120 + b"\xfc\x07" * 120


def publish_api() -> Iterator[tuple[str, bytes]]:
    def proto(**fields: object) -> bytes:
        request = pb.PublishRequest(
            tenant_id="t1", type="work_item.updated", scope=pb.Scope(project_id="p1")
        )
        for name, value in fields.items():
            if name.startswith("scope_"):
                setattr(request.scope, name.removeprefix("scope_"), value)
            else:
                setattr(request, name, value)
        return b"\x00" + request.SerializeToString()

    def json_body(**fields: object) -> bytes:
        body: dict[str, object] = {
            "tenantId": "t1",
            "type": "work_item.updated",
            "scope": {"projectId": "p1"},
        }
        body.update(fields)
        return b"\x01" + json.dumps(body).encode()

    yield "protobuf-minimal", proto()
    yield (
        "protobuf-full",
        proto(
            scope_sprint_id="s1",
            scope_work_item_id="w1",
            payload=b'{"title":"x"}',
            actor_user_id="u1",
            event_id="e1",
            occurred_at_ms=1_700_000_000_000,
        ),
    )
    yield "protobuf-129-char-event-id", proto(event_id="e" * 129)
    yield "protobuf-control-in-sprint", proto(scope_sprint_id="s\n1")
    yield "protobuf-max-time", proto(occurred_at_ms=2**63 - 1)
    yield "protobuf-no-project", proto(scope_project_id="")
    yield "protobuf-garbage", b"\x00\xff\xff\xff\xff"
    yield "protobuf-empty", b"\x00"
    yield "json-minimal", json_body()
    yield (
        "json-proto-names",
        b"\x01"
        + json.dumps(
            {"tenant_id": "t1", "type": "x", "scope": {"project_id": "p1"}, "event_id": "e"}
        ).encode(),
    )
    payload = bytes([0xFB, 0xEF, 0xBE, 0xFF, 0x10])
    yield "json-payload-standard", json_body(payload=base64.b64encode(payload).decode())
    yield (
        "json-payload-url-safe-unpadded",
        json_body(payload=base64.urlsafe_b64encode(payload).decode().rstrip("=")),
    )
    yield "json-payload-not-base64", json_body(payload="!!!")
    yield "json-payload-number", json_body(payload=5)
    yield "json-time-as-string", json_body(occurredAtMs="1700000000000")
    yield "json-time-huge", json_body(occurredAtMs=2**70)
    yield "json-wrong-type", json_body(tenantId=5)
    yield "json-unknown-key", json_body(nope=True)
    yield "json-depth-32", b"\x01" + b"[" * 32 + b"]" * 32
    yield "json-depth-33", b"\x01" + b"[" * 33 + b"]" * 33
    yield "json-depth-1000", b'\x01{"tenantId": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    yield "json-brackets-in-strings", json_body(type="[[[[{{{{" * 10)
    yield "json-duplicate-key", b'\x01{"tenantId": "t1", "tenantId": "t2"}'
    yield "json-scalar", b"\x015"
    yield "json-null", b"\x01null"
    yield "json-invalid-utf8", b'\x01{"tenantId": "\xff"}'
    yield "json-lone-surrogate", b'\x01{"tenantId": "\\ud800"}'
    yield "json-unterminated-string", b'\x01{"tenantId": "[[[[\\"'
    yield "disconnect-tenant", b'\x02{"tenant_id": "t1"}'
    yield "disconnect-user", b'\x02{"tenant_id": "t1", "user_id": "alice"}'
    yield "disconnect-connection", b'\x02{"tenant_id": "t1", "connection_id": "c1"}'
    yield "disconnect-nulls", b'\x02{"tenant_id": "t1", "user_id": null, "connection_id": null}'
    yield "disconnect-unknown-key", b'\x02{"tenant_id": "t1", "x": 1}'
    yield "disconnect-tenant-number", b'\x02{"tenant_id": 7}'
    yield "disconnect-depth-1000", b"\x02" + b"[" * 1000 + b"]" * 1000
    yield "disconnect-array", b"\x02[]"
    yield "disconnect-garbage", b"\x02not json"


def auth() -> Iterator[tuple[str, bytes]]:
    token = signed(JWT_HEADER, claims()).encode()
    yield "header-bearer", b"\x00Bearer " + token
    yield "header-lower-case", b"\x00bearer " + token
    yield "header-tab", b"\x00Bearer\t" + token
    yield "header-basic", b"\x00Basic dXNlcjpwYXNz"
    yield "header-blank", b"\x00   "
    yield "header-scheme-only", b"\x00Bearer"
    yield "header-two-tokens", b"\x00Bearer a b"
    yield "header-8193", b"\x00Bearer " + b"t" * 8193
    yield "header-non-ascii", "\x00Bearer tök".encode()
    yield "subprotocols", b"\x01pm.v1, pm.bearer." + token
    yield "subprotocols-bearer-alone", b"\x01pm.bearer." + token
    yield "subprotocols-two-bearers", b"\x01pm.v1, pm.bearer.a, pm.bearer.b"
    yield "subprotocols-empty-entries", b"\x01 ,,\t, pm.v1 ,"
    yield "payload-valid", b"\x02" + claims(roles=["admin"], jti="j1", nbf=NOW - 10)
    yield "payload-no-exp", b"\x02" + claims(exp=None)
    yield "payload-float-dates", b"\x02" + claims(exp=NOW + 0.5, nbf=NOW + 0.5)
    yield "payload-bool-exp", b"\x02" + claims(exp=True)
    yield "payload-huge-exp", b"\x02" + claims(exp=10**20)
    yield "payload-nan-exp", b'\x02{"sub":"u","tenant_id":"t","iat":1,"exp":NaN}'
    yield "payload-roles-not-list", b"\x02" + claims(roles="admin")
    yield "payload-129-char-sub", b"\x02" + claims(sub="u" * 129)
    yield "payload-control-in-tenant", b"\x02" + claims(tenant_id="t\x00")
    yield "payload-lone-surrogate", b'\x02{"sub":"\\udc00","tenant_id":"t","iat":1,"exp":2}'
    yield "token-valid", b"\x03" + token
    yield "token-expired", b"\x03" + signed(JWT_HEADER, claims(exp=NOW - 3600)).encode()
    yield "token-garbage", b"\x03a.b.c"
    yield "token-empty", b"\x03"
    yield "token-alg-none", b"\x03" + base64.urlsafe_b64encode(b'{"alg":"none"}') + b".e30."
    yield "signed-valid", b"\x04" + JWT_HEADER + b"\x00" + claims()
    yield (
        "signed-issuer-audience",
        b"\x09" + JWT_HEADER + b"\x00" + claims(iss="https://issuer.example", aud=["pm", "other"]),
    )
    yield "signed-alg-none", b'\x04{"alg":"none"}\x00' + claims()
    yield "signed-alg-rs256", b'\x04{"alg":"RS256"}\x00' + claims()
    yield "signed-crit", b'\x04{"alg":"HS256","crit":["b64"],"b64":false}\x00' + claims()
    yield "signed-payload-array", b"\x04" + JWT_HEADER + b"\x00[1,2]"
    yield "signed-payload-not-json", b"\x04" + JWT_HEADER + b"\x00not json"
    yield "signed-not-yet-valid", b"\x04" + JWT_HEADER + b"\x00" + claims(nbf=NOW + 3600)


def redis_codec() -> Iterator[tuple[str, bytes]]:
    event = pb.Event(
        event_id="e1",
        type="work_item.updated",
        scope=pb.Scope(project_id="p1", sprint_id="s1"),
        position=pb.StreamPosition(epoch="epoch-1", seq=7),
        occurred_at_ms=1_700_000_000_000,
        actor_user_id="u1",
        payload=b"{}",
    ).SerializeToString()
    header = b"E" + (1_700_000_000_000_000_000).to_bytes(8, "big")
    yield "channel-event", b"\x00" + header + event
    yield "channel-event-no-position", b"\x00" + header + pb.Event(event_id="e").SerializeToString()
    yield "channel-event-truncated-header", b"\x00E\x00\x01"
    yield "channel-event-garbage", b"\x00" + header + b"\xff\xff"
    yield "channel-disconnect", b'\x00D{"user_id":"alice","connection_id":null}'
    yield "channel-disconnect-empty", b"\x00D{}"
    yield "channel-disconnect-array", b"\x00D[]"
    yield "channel-disconnect-number-ids", b'\x00D{"user_id":5}'
    yield "channel-disconnect-deep", b"\x00D" + b"[" * 50 + b"]" * 50
    yield "channel-disconnect-garbage", b"\x00D{"
    yield "channel-unknown-type", b"\x00X"
    yield "channel-empty", b"\x00"
    yield (
        "history-entry",
        b"\x01" + b"\xff\xfe".join([b"event", event, b"published_at_ns", b"1700000000000000000"]),
    )
    yield "history-no-time", b"\x01" + b"\xff\xfe".join([b"event", event])
    yield "history-odd-fields", b"\x01" + b"\xff\xfe".join([b"event", event, b"published_at_ns"])
    yield (
        "history-bad-time",
        b"\x01" + b"\xff\xfe".join([b"event", event, b"published_at_ns", b"soon"]),
    )
    yield (
        "history-long-time",
        b"\x01" + b"\xff\xfe".join([b"event", event, b"published_at_ns", b"9" * 5000]),
    )
    yield "history-empty", b"\x01"


TARGETS = {
    "client_frame": client_frame,
    "publish_api": publish_api,
    "auth": auth,
    "redis_codec": redis_codec,
}


def main() -> None:
    for target, seeds in TARGETS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        count = 0
        for name, data in seeds():
            (directory / name).write_bytes(data)
            count += 1
        print(f"{target}: {count} seeds in {directory.relative_to(CORPUS.parent.parent.parent)}")


if __name__ == "__main__":
    main()
