"""Count the project files a `modhifi` command runs functions in, and its calls from a lower
layer into a higher one (the measure of issue 22's "call path of `modhifi prune --model`").

    .venv/bin/python scripts/call_path.py ROOT -- prune --model FILE.pt --out x.pt

ROOT is the checkout whose code runs (a worktree of an older commit compares). Layers,
high to low: flows, tasks, kinds, modhifi_core.operations, modhifi_core.vision,
modhifi_core.sources, the rest of modhifi_core. Import-time module bodies are not counted.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType

LAYERS = (
    ("flows/", 6),
    ("tasks/", 5),
    ("kinds/", 4),
    ("modhifi_core/operations/", 3),
    ("modhifi_core/params.py", 3),  # where the schema lived before issue 22
    ("modhifi_core/vision/", 2),
    ("modhifi_core/sources/", 1),
    ("modhifi_core/", 0),
)


def layer(relative: str) -> int | None:
    for prefix, level in LAYERS:
        if relative.startswith(prefix):
            return level
    return None


class Tracer:
    """A `sys.settrace` hook collecting the project files entered and the upward calls."""

    def __init__(self, root: Path) -> None:
        self.root, self.files, self.ups = root, set(), Counter()

    def relative(self, frame: FrameType) -> str | None:
        try:
            return Path(frame.f_code.co_filename).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or frame.f_code.co_name == "<module>":
            return
        callee = self.relative(frame)
        if callee is None or layer(callee) is None:
            return
        self.files.add(callee)
        caller = frame.f_back
        while caller is not None and self.relative(caller) is None:
            caller = caller.f_back
        if caller is None or caller.f_code.co_name == "<module>":
            return
        source = self.relative(caller)
        if layer(source) is not None and layer(source) < layer(callee):
            self.ups[(source, callee)] += 1


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    args = sys.argv[sys.argv.index("--") + 1 :]
    sys.path.insert(0, str(root))
    from flows.cli import main as modhifi

    tracer = Tracer(root)
    sys.settrace(tracer)
    threading.settrace(tracer)
    try:
        modhifi(args)
    except SystemExit:
        pass
    finally:
        sys.settrace(None)
    outside = [f for f in tracer.files if layer(f) > 0]
    print(
        f"files entered: {len(tracer.files)} (outside the engine's algorithms: {len(outside)}); "
        f"calls up a layer: {sum(tracer.ups.values())} ({len(tracer.ups)} distinct file pairs)",
        file=sys.stderr,
    )
    for name in sorted(tracer.files):
        print("  ", name, file=sys.stderr)
    for (source, callee), count in tracer.ups.most_common():
        print(f"   up {count}x {source} -> {callee}", file=sys.stderr)


if __name__ == "__main__":
    main()
