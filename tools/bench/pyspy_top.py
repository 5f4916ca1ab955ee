"""Where a profiled server's time went: the top functions of a py-spy `raw` (collapsed) profile.

    python tools/bench/pyspy_top.py PROFILE.txt [--top 25] [--match pm_ws]

Prints each function's share of samples twice: self (the function was on top of the stack)
and inclusive (anywhere in the stack, counted once per sample). Idle time shows as the event
loop's `select`/`epoll` frames.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")


def _frame(text: str) -> str:
    # py-spy frames look like "handle (pm_ws/gateway.py:210)"; drop the line number.
    return _LINE_NUMBER.sub(")", text.strip())


def summarize(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Total samples, and samples per function as the leaf (self) and anywhere (inclusive)."""
    total = 0
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        leaf[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, leaf, inclusive


def main() -> None:
    """Print the self and inclusive tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only frames containing this text")
    args = parser.parse_args()
    total, leaf, inclusive = summarize(args.profile)
    print(f"{total} samples in {args.profile}")
    for title, counter in (("self", leaf), ("inclusive", inclusive)):
        print(f"\n{title}:")
        shown = [(f, n) for f, n in counter.most_common() if args.match in f][: args.top]
        for frame, count in shown:
            print(f"  {100 * count / max(1, total):5.1f}%  {frame}")


if __name__ == "__main__":
    main()
