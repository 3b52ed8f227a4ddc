"""This checkout against another (``--before DIR``), each measured in a process of its own,
alternating round by round so that the two share the machine's load: what
bench/kept_check.py and bench/kept_plan.py share."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile``, ``--rounds`` and ``--before``."""
    parser.add_argument("--profile", default="python-dev")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--before", help="another checkout to compare with")


def checkouts(before: str | None) -> dict[str, str]:
    """The trees to measure: this one (``after``), and ``before`` if given."""
    return {"after": HERE, **({"before": before} if before else {})}


def report(times: dict[str, list[float]], per: Callable[[str], str]) -> None:
    """Each tree's median CPU (µs) ``per`` what one measure is, its rounds, and the ratio."""
    for name, got in times.items():
        print(f"{name}: median {statistics.median(got):.1f} us CPU per {per(name)} "
              f"({', '.join(f'{t:.0f}' for t in got)})")
    if "before" in times:
        ratio = statistics.median(times["after"]) / statistics.median(times["before"])
        print(f"after/before: {ratio:.2f}")
