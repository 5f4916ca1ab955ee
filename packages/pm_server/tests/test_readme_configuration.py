"""The README's configuration table tells the truth about what the server reads."""

import re
from pathlib import Path

from pm_server.config import VARIABLES

README = Path(__file__).resolve().parents[3] / "README.md"
_ROW = re.compile(r"^\| `(?P<name>[A-Z_]+)` \| (?P<default>[^|]+) \|", re.MULTILINE)


def _table() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {m["name"]: m["default"].strip().strip("`") for m in _ROW.finditer(section)}


def test_readme_lists_every_variable_the_server_reads_with_its_default() -> None:
    table = _table()
    assert {v.name: v.default for v in VARIABLES} == table


def test_readme_lists_no_variable_twice() -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = [m["name"] for m in _ROW.finditer(section)]
    assert len(names) == len(set(names))
