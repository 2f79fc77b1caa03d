"""``python -m integration.seeded_daemon SEED ANCHOR_FILE ARGS...``: the real CLI, with the
cover schedule drawn from seeded RNGs.

Test-only. A seeded schedule is predictable, which is what a fixed-seed statistical test of
the schedule's shape needs (the same verdict on every run) and what no user may ever have,
so the product has no such option: this wrapper swaps the node's RNGs before ``main``.
The schedule is a fixed sequence of offsets from the moment the scheduler starts (its first
draw), which the wrapper writes to ANCHOR_FILE so a test can observe fixed stretches of it.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onionmsg.daemon
from onionmsg.cli import main
from onionmsg.node import Node


class AnchoredRandom(random.Random):
    """A seeded RNG that writes the wall-clock time of its first draw to ``anchor``."""

    def __init__(self, seed: int, anchor: Path) -> None:
        super().__init__(seed)
        self._anchor: Path | None = anchor

    def expovariate(self, lambd: float = 1.0) -> float:
        if self._anchor is not None:
            self._anchor.write_text(repr(time.time()))
            self._anchor = None
        return super().expovariate(lambd)


def run(argv: Sequence[str]) -> int:
    seed, anchor = int(argv[0]), Path(argv[1])

    class SeededNode(Node):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            rngs = (AnchoredRandom(seed, anchor), random.Random(seed + 1))
            super().__init__(*args, cover_rngs=rngs, **kwargs)

    setattr(onionmsg.daemon, "Node", SeededNode)  # noqa: B010 (replacing the class is the point)
    return main(argv[2:])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
