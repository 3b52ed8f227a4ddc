"""``--tree DIR``: a benchmark runs the ``nonod`` of another checkout (an A/B against main).

Call :func:`use_tree` before anything imports ``nonod``; ``bench`` itself stays this
checkout's."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def use_tree() -> str:
    """Put the checkout named by ``--tree`` (default: this one) first on ``sys.path``."""
    tree = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else str(ROOT)
    sys.path.insert(0, tree)
    sys.path.insert(1, str(ROOT))
    return tree
