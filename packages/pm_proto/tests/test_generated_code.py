import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pm_proto

ROOT = Path(__file__).resolve().parents[3]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_code_matches_what_the_generator_writes() -> None:
    generator = _load_generator()
    assert generator.stale_files(generator.generate()) == []


def test_every_message_and_enum_is_exported() -> None:
    for name in pm_proto.__all__:
        exported = getattr(pm_proto, name)
        assert hasattr(exported, "SerializeToString") or hasattr(exported, "Name"), name


def test_close_codes_are_named_with_their_prefix_and_start_at_unspecified() -> None:
    names = pm_proto.CloseCode.keys()

    assert names[0] == "CLOSE_CODE_UNSPECIFIED"
    assert pm_proto.CloseCode.Value("CLOSE_CODE_UNSPECIFIED") == 0
    assert all(name.startswith("CLOSE_CODE_") for name in names)
