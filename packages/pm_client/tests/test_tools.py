import io
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pm_client import Event, NotRecovered, Position, Scope
from pm_client.tools import item_json, listen_main, mint_token_main

SECRET = "pm-token-test-secret-0123456789-abcdef"


def run_pm_token(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    mint_token_main(args)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return out.strip()


def test_pm_token_prints_only_a_token_that_validates(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--secret", SECRET, "--tenant", "t1", "--user", "u1", "--roles", "a, b,", "--ttl", "60"]
    token = run_pm_token([*args, "--issuer", "me", "--audience", "pm"], capsys)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="me", audience="pm")
    assert (claims["tenant_id"], claims["sub"], claims["roles"]) == ("t1", "u1", ["a", "b"])
    assert claims["exp"] - claims["iat"] == 60


def test_pm_token_reads_the_secret_from_a_variable_or_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET", SECRET)
    token = run_pm_token(["--secret-env", "MY_SECRET", "--tenant", "t", "--user", "u"], capsys)
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "u"
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    token = run_pm_token(["--secret-stdin", "--tenant", "t", "--user", "u"], capsys)
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["tenant_id"] == "t"


def test_pm_token_signs_rs256_with_a_private_key_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    token = run_pm_token(["--private-key", str(pem), "--tenant", "t", "--user", "u"], capsys)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert jwt.decode(token, key.public_key(), algorithms=["RS256"])["sub"] == "u"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--secret", "too-short"], "is 9 bytes; at least 32 are required"),
        (["--secret-env", "PM_TOKEN_TEST_UNSET"], "PM_TOKEN_TEST_UNSET is not set"),
        (["--private-key", "/nonexistent/key.pem"], "cannot read"),
    ],
)
def test_pm_token_refuses_bad_keys_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        mint_token_main([*args, "--tenant", "t", "--user", "u"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.startswith("pm-token: ")


def test_pm_token_refuses_a_file_that_is_not_a_private_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text("not a key")
    with pytest.raises(SystemExit):
        mint_token_main(["--private-key", str(pem), "--tenant", "t", "--user", "u"])
    assert "RSA private key" in capsys.readouterr().err


def test_pm_listen_needs_a_token_and_a_subscription(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PM_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_:
        listen_main(["--project", "p1"])
    assert exit_.value.code == 2
    assert "token is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        listen_main(["--token", "x"])
    assert "subscribe to something" in capsys.readouterr().err


def test_events_print_with_base64_and_decoded_json_payloads() -> None:
    event = Event("e1", "card.moved", Scope("p1", "s1"), Position("E", 4), 12, "u0", b'{"a":1}')
    document = item_json(event)
    assert document == {
        "kind": "event",
        "event_id": "e1",
        "type": "card.moved",
        "scope": {"project_id": "p1", "sprint_id": "s1", "work_item_id": ""},
        "position": {"epoch": "E", "seq": 4},
        "occurred_at_ms": 12,
        "actor_user_id": "u0",
        "payload": "eyJhIjoxfQ==",
        "payload_json": {"a": 1},
    }
    json.dumps(document)


def test_a_payload_that_is_not_json_prints_as_base64_only() -> None:
    event = Event("e1", "t", Scope("p1"), Position("E", 1), 0, "", b"\xff\x00")
    assert "payload_json" not in item_json(event)


def test_not_recovered_prints_as_its_own_kind() -> None:
    assert item_json(NotRecovered(None, Position("B", 0))) == {
        "kind": "not_recovered",
        "last_position": None,
        "position": {"epoch": "B", "seq": 0},
    }
