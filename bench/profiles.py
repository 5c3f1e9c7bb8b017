"""Top entries of a py-spy profile (`py-spy record --format raw`: collapsed stacks)."""

from __future__ import annotations

import re
from collections import Counter

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """`function (file:line)` as `function (file's last two path parts)`."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    parts = match["file"].split("/")
    where = "/".join(parts[-2:]) if "site-packages" in match["file"] else parts[-1]
    return f"{match['function']} ({where})"


def summarize(collapsed: str, top: int = 12) -> str:
    """The functions with most samples on top of the stack (own time), with their
    inclusive share, as percentages of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame]
        # The first frames name the thread (py-spy's "process …;thread …" prefix).
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; own% incl% function"]
    for name, count in own.most_common(top):
        lines.append(f"{100 * count / total:5.1f} {100 * inclusive[name] / total:5.1f}  {name}")
    return "\n".join(lines)
