"""Top entries of a py-spy profile (`py-spy record --format raw`: collapsed stacks)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
REPO = Path(__file__).resolve().parents[1]
OWN_MODULES = {path.name for path in REPO.glob("*.py")}


def _name(frame: str) -> tuple[str, bool]:
    """`function (file:line)` as `function (file)`, and whether the file is wg-fleet's."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), False
    path = match["file"]
    parts = path.split("/")
    own = "/" not in path and path in OWN_MODULES  # py-spy names library files by package
    where = "/".join(parts[-2:]) if "site-packages" in path else parts[-1]
    return f"{match['function']} ({where})", own


def summarize(collapsed: str, top: int = 10) -> str:
    """Two lists, as percentages of all samples of all threads: the functions most often
    on top of the stack (own time), and wg-fleet's own functions by inclusive time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: set[str] = set()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame]
        # py-spy may prefix the stack with "process …" and "thread …" pseudo-frames.
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1][0]] += count
        for name, is_ours in set(frames):
            inclusive[name] += count
            if is_ours:
                ours.add(name)
    if not total:
        return "(no samples)"
    lines = [f"{total} samples. Own time (top of the stack):"]
    for name, count in own.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines.append("wg-fleet's functions, inclusive time:")
    # The process's entry and the middleware every request passes through say nothing.
    skip = {
        "<module> (main.py)",
        "main (main.py)",
        "serve (serving.py)",
        "QuietStartupFailure.__call__ (serving.py)",
        "BodySizeLimit.__call__ (limits.py)",
    }
    ranked = [(name, inclusive[name]) for name in ours if name not in skip]
    for name, count in sorted(ranked, key=lambda item: -item[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)
