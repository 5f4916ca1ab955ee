"""The README's configuration table tells the truth about what the server reads."""

import re
from pathlib import Path

from pm_server.config import VARIABLES

README = Path(__file__).resolve().parents[3] / "README.md"
_ROW = re.compile(
    r"^\| `(?P<name>[A-Z_]+)` \| (?P<default>[^|]+) \| (?P<meaning>[^|]+) \|$", re.MULTILINE
)


def _section() -> str:
    return README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]


def _table() -> dict[str, tuple[str, str]]:
    return {
        m["name"]: (m["default"].strip().strip("`"), m["meaning"].strip())
        for m in _ROW.finditer(_section())
    }


def test_readme_lists_every_variable_the_server_reads_with_its_default() -> None:
    table = _table()
    assert {v.name: v.shown_default for v in VARIABLES} == {
        name: default for name, (default, _) in table.items()
    }


def test_readme_says_what_each_variable_means_as_the_configuration_declares_it() -> None:
    table = _table()
    assert {v.name: v.meaning for v in VARIABLES} == {
        name: meaning for name, (_, meaning) in table.items()
    }


def test_readme_lists_the_variables_in_the_order_they_are_declared() -> None:
    assert list(_table()) == [v.name for v in VARIABLES]


def test_readme_lists_no_variable_twice() -> None:
    names = [m["name"] for m in _ROW.finditer(_section())]
    assert len(names) == len(set(names))
