import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_auth import (
    BEARER_SUBPROTOCOL_PREFIX,
    SUBPROTOCOL,
    AuthError,
    InvalidAuthScheme,
    InvalidToken,
    MissingAuthHeader,
    extract_token,
    parse_subprotocol_header,
    token_from_authorization,
    token_from_subprotocols,
)
from pm_proto.contract import MAX_TOKEN_BYTES

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER\t{TOKEN}  "])
def test_a_bearer_header_yields_its_token_whatever_the_scheme_case(header: str) -> None:
    assert token_from_authorization(header) == TOKEN


@pytest.mark.parametrize("header", [None, "", "   "])
def test_an_absent_or_blank_header_is_missing(header: str | None) -> None:
    with pytest.raises(MissingAuthHeader):
        token_from_authorization(header)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", TOKEN, "Bearer_x y", "Token abc"])
def test_a_scheme_other_than_bearer_is_refused(header: str) -> None:
    with pytest.raises(InvalidAuthScheme):
        token_from_authorization(header)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer   ",
        "Bearer a b",
        "Bearer a\tb",
        "Bearer a\nb",
        "Bearer a\x00b",
        "Bearer é",
    ],
)
def test_bearer_without_a_clean_token_is_an_invalid_token(header: str) -> None:
    with pytest.raises(InvalidToken):
        token_from_authorization(header)


def test_a_token_over_8_kib_is_refused_and_one_of_8_kib_accepted() -> None:
    assert token_from_authorization("Bearer " + "a" * MAX_TOKEN_BYTES) == "a" * MAX_TOKEN_BYTES
    with pytest.raises(InvalidToken):
        token_from_authorization("Bearer " + "a" * (MAX_TOKEN_BYTES + 1))
    with pytest.raises(InvalidToken):
        token_from_subprotocols(
            [SUBPROTOCOL, BEARER_SUBPROTOCOL_PREFIX + "a" * (MAX_TOKEN_BYTES + 1)]
        )


def test_the_bearer_subprotocol_yields_its_token() -> None:
    assert token_from_subprotocols([SUBPROTOCOL, f"pm.bearer.{TOKEN}"]) == TOKEN
    assert token_from_subprotocols([f"pm.bearer.{TOKEN}", "other", SUBPROTOCOL]) == TOKEN


@pytest.mark.parametrize("offered", [[], [SUBPROTOCOL], ["chat", "PM.BEARER.x", "pm.bearerx"]])
def test_no_bearer_subprotocol_yields_none(offered: list[str]) -> None:
    assert token_from_subprotocols(offered) is None


@pytest.mark.parametrize(
    "offered",
    [
        [f"pm.bearer.{TOKEN}"],
        [SUBPROTOCOL, "pm.bearer."],
        [SUBPROTOCOL, "pm.bearer.a", "pm.bearer.b"],
        [SUBPROTOCOL, "pm.bearer.a b"],
    ],
    ids=["without-pm.v1", "empty-token", "two-bearers", "whitespace"],
)
def test_a_bad_bearer_subprotocol_is_an_invalid_token(offered: list[str]) -> None:
    with pytest.raises(InvalidToken):
        token_from_subprotocols(offered)


def test_a_single_string_instead_of_a_list_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        token_from_subprotocols(f"pm.v1, pm.bearer.{TOKEN}")


def test_the_header_wins_over_the_subprotocol() -> None:
    offered = [SUBPROTOCOL, "pm.bearer.from-subprotocol"]
    assert extract_token(f"Bearer {TOKEN}", offered) == TOKEN
    with pytest.raises(InvalidAuthScheme):
        extract_token("Basic abc", offered)


@pytest.mark.parametrize("authorization", [None, ""])
def test_without_a_header_the_subprotocol_is_used(authorization: str | None) -> None:
    assert extract_token(authorization, [SUBPROTOCOL, f"pm.bearer.{TOKEN}"]) == TOKEN


def test_neither_header_nor_subprotocol_is_missing() -> None:
    with pytest.raises(MissingAuthHeader):
        extract_token(None, [SUBPROTOCOL])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("pm.v1", ["pm.v1"]),
        (f" pm.v1 ,\tpm.bearer.{TOKEN} ,, ", ["pm.v1", f"pm.bearer.{TOKEN}"]),
    ],
)
def test_the_subprotocol_header_splits_on_commas(value: str | None, expected: list[str]) -> None:
    assert parse_subprotocol_header(value) == expected


def test_a_parsed_browser_header_yields_the_token() -> None:
    offered = parse_subprotocol_header(f"pm.v1, pm.bearer.{TOKEN}")
    assert extract_token(None, offered) == TOKEN


def _is_clean_token(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_BYTES and all("!" <= char <= "~" for char in token)


@given(st.text() | st.text().map(lambda rest: "Bearer " + rest))
def test_any_authorization_header_yields_a_clean_token_or_an_auth_error(header: str) -> None:
    with contextlib.suppress(AuthError):
        assert _is_clean_token(token_from_authorization(header))


_names = (
    st.text() | st.text().map(lambda rest: BEARER_SUBPROTOCOL_PREFIX + rest) | st.just(SUBPROTOCOL)
)


@given(st.one_of(st.none(), st.text()), st.lists(_names, max_size=4))
def test_any_offer_yields_a_clean_token_or_an_auth_error(
    authorization: str | None, offered: list[str]
) -> None:
    with contextlib.suppress(AuthError):
        token = token_from_subprotocols(offered)
        assert token is None or _is_clean_token(token)
    with contextlib.suppress(AuthError):
        assert _is_clean_token(extract_token(authorization, offered))


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_any_clean_token_survives_both_transports(token: str) -> None:
    assert token_from_authorization(f"Bearer {token}") == token
    offered = parse_subprotocol_header(f"{SUBPROTOCOL}, {BEARER_SUBPROTOCOL_PREFIX}{token}")
    if "," not in token:
        assert extract_token(None, offered) == token
