import importlib.util
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_proto import contract

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("value", ["a", "x" * 128, "é" * 128, "日本語", "tab\u00a0nbsp", "🙂"])
def test_ids_of_1_to_128_characters_are_valid(value: str) -> None:
    assert contract.is_valid_id(value)


@pytest.mark.parametrize("value", ["", "x" * 129])
def test_empty_and_overlong_ids_are_invalid(value: str) -> None:
    assert not contract.is_valid_id(value)


@pytest.mark.parametrize(
    "char", ["\x00", "\t", "\n", "\x1f", "\x7f", "\x80", "\x85", "\x9f", "\ud800"]
)
def test_control_characters_c0_del_c1_and_lone_surrogates_make_an_id_invalid(char: str) -> None:
    assert contract.has_control_characters(f"a{char}b")
    assert not contract.is_valid_id(f"a{char}b")
    assert not contract.is_valid_request_id(char)


@given(st.text(max_size=140))
def test_the_id_rule_is_length_and_unicode_categories_cc_and_cs(value: str) -> None:
    forbidden = any(unicodedata.category(char) in ("Cc", "Cs") for char in value)

    assert contract.has_control_characters(value) is forbidden
    assert contract.is_valid_id(value) is (1 <= len(value) <= 128 and not forbidden)
    assert contract.is_valid_request_id(value) is (len(value) <= 64 and not forbidden)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("board.move", True), ("a", True), ("a" * 64, True), ("a" * 65, False), ("Move", False)],
)
def test_command_names_match_the_pattern_whole(name: str, valid: bool) -> None:
    assert contract.is_valid_command_name(name) is valid


def test_the_generator_never_writes_beside_the_generated_package() -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = generator
    spec.loader.exec_module(generator)

    assert Path(contract.__file__).parent / "v1" == generator.OUTPUT_DIR
    assert "contract.py" not in generator.generate()
