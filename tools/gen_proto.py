"""Regenerate pm_proto from proto/ with grpcio-tools' protoc.

Usage: uv run python tools/gen_proto.py [--check]

protoc names generated imports after the .proto paths (`from pm.v1 import ...`);
the generated modules live in the `pm_proto.v1` package, so those imports are
rewritten. Only `pm_proto/v1` is written (and stray files there deleted): the
hand-written modules beside it, such as `pm_proto/contract.py`, are never touched.
With --check nothing is written: the exit code is 1 when the committed code
differs from what this script would write.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "pm" / "v1"
OUTPUT_DIR = ROOT / "packages" / "pm_proto" / "src" / "pm_proto" / "v1"
_IMPORT = re.compile(r"^from pm\.v1 import ", re.MULTILINE)


def generate() -> dict[str, str]:
    """Run protoc into a temporary folder and return file name -> rewritten text."""
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}", *sources]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out = Path(tmp) / "pm" / "v1"
        files = {
            p.name: _IMPORT.sub("from pm_proto.v1 import ", p.read_text())
            for p in sorted(out.iterdir())
            if p.suffix in {".py", ".pyi"}
        }
    files["__init__.py"] = '"""Generated from proto/pm/v1 by tools/gen_proto.py; do not edit."""\n'
    return files


def stale_files(files: dict[str, str]) -> list[str]:
    """Names of the files whose committed text differs from `files`, plus strays."""
    present = {p.name for p in OUTPUT_DIR.glob("*.py*")} if OUTPUT_DIR.exists() else set()
    stale = [
        name
        for name, text in files.items()
        if not (OUTPUT_DIR / name).exists() or (OUTPUT_DIR / name).read_text() != text
    ]
    return sorted(stale + sorted(present - files.keys()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    files = generate()
    if parser.parse_args().check:
        stale = stale_files(files)
        if stale:
            print(
                f"pm_proto is stale ({', '.join(stale)}); run tools/gen_proto.py", file=sys.stderr
            )
            return 1
        print("pm_proto is up to date")
        return 0
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for stray in OUTPUT_DIR.glob("*.py*"):
        if stray.name not in files:
            stray.unlink()
    for name, text in files.items():
        (OUTPUT_DIR / name).write_text(text)
    print(f"wrote {len(files)} files to {OUTPUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
