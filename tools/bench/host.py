"""The machine a bench runs on: its open-files limit, its CPU, and the commit under test."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; the soft limit then."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def command_output(*command: str) -> str:
    """What `command` prints, run at the repository's root ("" when it cannot run)."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=ROOT, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" when it says none)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def write_result(result: dict[str, Any], stem: Path, markdown: Callable[[Any], str]) -> None:
    """Write `result` to `<stem>.json` and its Markdown table to `<stem>.md`; print the table."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    result["meta"]["out"] = str(stem)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
