import inspect
import subprocess
import sys
from collections.abc import Callable

import jwt
import pm_auth
import pytest
from pm_auth import (
    AuthError,
    Claims,
    InvalidAuthScheme,
    InvalidClaim,
    InvalidKey,
    InvalidToken,
    JwtDecodeFailed,
    JwtValidator,
    MissingAuthHeader,
    RateLimitExceeded,
    TokenExpired,
    extract_token,
    token_from_authorization,
)

SECRET = "x" * 32
SPEC_AUTH_CODES = {
    "INVALID_TOKEN",
    "TOKEN_EXPIRED",
    "MISSING_AUTH_HEADER",
    "INVALID_AUTH_SCHEME",
    "JWT_DECODE_FAILED",
    "RATE_LIMIT_EXCEEDED",
    "INVALID_CLAIM",
}
ERRORS: list[tuple[type[AuthError], str]] = [
    (InvalidToken, "INVALID_TOKEN"),
    (TokenExpired, "TOKEN_EXPIRED"),
    (MissingAuthHeader, "MISSING_AUTH_HEADER"),
    (InvalidAuthScheme, "INVALID_AUTH_SCHEME"),
    (JwtDecodeFailed, "JWT_DECODE_FAILED"),
    (RateLimitExceeded, "RATE_LIMIT_EXCEEDED"),
]


@pytest.mark.parametrize(("error_type", "code"), ERRORS)
def test_each_error_carries_its_stable_code_and_a_default_message(
    error_type: type[AuthError], code: str
) -> None:
    error = error_type()
    assert isinstance(error, AuthError)
    assert (error.code, error.field) == (code, None)
    assert error.message
    assert str(error) == error.message


def test_invalid_claim_always_names_its_field() -> None:
    error = InvalidClaim("tenant_id")
    assert (error.code, error.field) == ("INVALID_CLAIM", "tenant_id")
    assert "tenant_id" in error.message


def test_a_message_can_be_overridden() -> None:
    error = InvalidToken("the token is empty")
    assert (str(error), error.message) == ("the token is empty", "the token is empty")


def test_the_codes_are_exactly_the_auth_codes_of_the_spec() -> None:
    assert {code for _, code in ERRORS} | {InvalidClaim.code} == SPEC_AUTH_CODES


def test_invalid_key_is_an_operator_error_not_a_client_one() -> None:
    assert issubclass(InvalidKey, ValueError)
    assert not issubclass(InvalidKey, AuthError)


def _expired_token() -> None:
    token = jwt.encode({"sub": "u", "tenant_id": "t", "iat": 0, "exp": 1}, SECRET, "HS256")
    JwtValidator.hs256(SECRET).validate(token)


@pytest.mark.parametrize(
    ("trigger", "code"),
    [
        (lambda: extract_token(None, []), "MISSING_AUTH_HEADER"),
        (lambda: token_from_authorization("Basic abc"), "INVALID_AUTH_SCHEME"),
        (lambda: token_from_authorization("Bearer"), "INVALID_TOKEN"),
        (lambda: JwtValidator.hs256(SECRET).validate("a.b.c"), "JWT_DECODE_FAILED"),
        (_expired_token, "TOKEN_EXPIRED"),
        (lambda: Claims.from_payload({}), "INVALID_CLAIM"),
    ],
)
def test_every_code_is_reachable_through_the_public_api(
    trigger: Callable[[], object], code: str
) -> None:
    with pytest.raises(AuthError) as caught:
        trigger()
    assert caught.value.code == code


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in pm_auth.__all__:
        exported = getattr(pm_auth, name)
        if inspect.isclass(exported) or inspect.isfunction(exported):
            assert exported.__doc__, name


def test_importing_pm_auth_loads_no_package_of_ours_but_the_contract() -> None:
    probe = (
        "import sys, pm_auth; "
        "print([m for m in sys.modules if m.split('.')[0] in ('pm_ws', 'pm_server', 'pm_client')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
