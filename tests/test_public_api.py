"""Each package's public API is what its `__all__` says: complete, real, and public."""

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

PACKAGES = ["pm_proto", "pm_auth", "pm_ws", "pm_server", "pm_client"]


def _imported_names(module: ModuleType) -> set[str]:
    """Names that `import` statements at the top level of `module`'s source bind."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.partition(".")[0] for alias in node.names)
    return names


def _modules_with_all(package: ModuleType) -> list[ModuleType]:
    modules = [package]
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        if ".v1" in info.name or info.name.endswith("__main__"):
            continue  # generated code; running the command line
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            modules.append(module)
    return modules


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_declares_all(name: str) -> None:
    package = importlib.import_module(name)

    assert isinstance(package.__all__, list)
    assert len(package.__all__) == len(set(package.__all__))


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_only_public_names_that_exist(name: str) -> None:
    for module in _modules_with_all(importlib.import_module(name)):
        for exported in module.__all__:
            assert not exported.startswith("_"), f"{module.__name__}.{exported}"
            assert hasattr(module, exported), f"{module.__name__}.{exported}"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_the_package_imports_is_in_all(name: str) -> None:
    package = importlib.import_module(name)
    public = {imported for imported in _imported_names(package) if not imported.startswith("_")}

    assert public <= set(package.__all__), sorted(public - set(package.__all__))


def test_the_import_finder_sees_aliases_and_submodules(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from __future__ import annotations\n"
        "import os.path\n"
        "from json import dumps as to_json, loads\n"
        "from pm_ws import close_codes as _hidden\n"
    )
    module = ModuleType("probe")
    module.__file__ = str(source)

    assert _imported_names(module) == {"os", "to_json", "loads", "_hidden"}
