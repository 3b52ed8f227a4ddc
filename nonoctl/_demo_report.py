"""How the demo speaks: numbered steps, the commands they run, what came back, and checks.

Every line goes through :class:`Story`, the demo's one output layer. Long throw-away paths
are shown as ``$DEMO/...`` so that the walkthrough reads like the seed's.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import TextIO, final

_INDENT = "   "


class DemoError(Exception):
    """A step could not run at all (as opposed to an expectation that failed): the message
    says what and why, for the person running the demo."""


@final
class Story:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._steps = 0
        self._base: str | None = None
        self.passed = 0
        self.failed: list[str] = []

    def abbreviate(self, base: str) -> None:
        """Show ``base`` as ``$DEMO`` from now on."""
        self._base = base

    def short(self, text: str) -> str:
        return text.replace(self._base, "$DEMO") if self._base else text

    def _line(self, text: str = "") -> None:
        self._out.write(self.short(text) + "\n")
        self._out.flush()

    def title(self, text: str) -> None:
        self._line(text)

    def step(self, title: str) -> None:
        self._steps += 1
        self._line()
        self._line(f"{self._steps}. {title}")

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._line(_INDENT + line)

    def command(self, argv: Sequence[str], *, note: str = "") -> None:
        self._line(f"{_INDENT}$ {shlex.join(argv)}" + (f"   # {note}" if note else ""))

    def request(self, method: str, url: str, *, note: str = "") -> None:
        """An HTTP request the demo makes (with urllib), as a reader would type it."""
        self._line(f"{_INDENT}> {method} {url}" + (f"   [{note}]" if note else ""))

    def output(self, text: str, *, limit: int = 40) -> None:
        """What a command printed, indented under it (at most ``limit`` lines)."""
        lines = text.rstrip("\n").splitlines()
        for line in lines[:limit]:
            self._line(_INDENT + "  " + line)
        if len(lines) > limit:
            self._line(f"{_INDENT}  ... ({len(lines) - limit} more lines)")

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        """One expectation: ``[ok]`` or ``[FAIL]``, and why when it failed."""
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        mark = "[ok]  " if ok else "[FAIL]"
        self._line(f"{_INDENT}{mark} {what}" + (f": {detail}" if detail and not ok else ""))
        return ok

    def fail(self, what: str, detail: str = "") -> None:
        self.check(what, False, detail)
