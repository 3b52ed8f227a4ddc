"""What a session controls never drives the host's terminal through nonoctl.

A session names itself, chooses its argv and cwd and writes its own output; nonoctl prints
those on the user's terminal (``ps``, ``inspect``, ``approvals``, ``logs --output``). A
terminal obeys escape sequences in what it prints: set the window title and read it back as
typed input, write the clipboard (OSC 52), clear or redraw the screen to hide a line, switch
character sets. Two filters keep that away:

* :func:`field` for one value in a table or a ``key  value`` row: every non-printable
  character (control characters, ``ESC``, C1 controls, Unicode format characters such as the
  bidirectional overrides, and line breaks) is shown as an escape (``\\x1b``), so a value is
  one visible line;
* :class:`OutputFilter` for a program's output shown by ``logs --output``: text, line breaks,
  tabs and colours (SGR, ``ESC [ ... m``) pass; every other control character or sequence is
  shown as an escape instead of acting. It keeps state across chunks, so a sequence cut in two
  by the transport is judged whole.

``attach`` and a foreground ``launch`` stay raw on purpose: there the program is interactive
on the user's terminal, as if run without nono (``docs/security-model.md``).
"""

from __future__ import annotations

import codecs
import functools
import re
from typing import Final, final

from nonod._text import printable

# A line break or a tab keeps its meaning in free text; everything else non-printable is
# escaped. "\r" stays only where it ends a line (the "\r\n" a terminal program writes, and
# nonoctl's own notes in raw mode): anywhere else it returns to the line's start, and what
# follows draws over what came before (a value's "FAIL x\rOK   y" shows as "OK   y").
_KEPT_IN_TEXT: Final = r"(\r\n|\r\Z|\n|\t)"
# What passes through OutputFilter: colours, CRLF and LF line ends, tabs.
_OUTPUT_KEPT: Final = r"(\x1b\[[0-9;:]{0,64}m|\r\n|\n|\t)"
# A chunk ending with the start of something kept is held back until the next chunk.
_OUTPUT_PARTIAL: Final = r"(?:\x1b(?:\[[0-9;:]{0,64})?|\r)\Z"
_MAX_HELD: Final = 80


@functools.cache
def _pattern(source: str) -> re.Pattern[str]:
    """Compiled when first used: most commands print only printable text (~0.4 ms saved)."""
    return re.compile(source)


def field(value: str) -> str:
    """One value on one line: every non-printable character shown as an escape."""
    return printable(value)


def text(value: str) -> str:
    """Free text (a message, a line of ours that embeds values): line breaks and tabs kept,
    every other non-printable character shown as an escape (a carriage return too, but at
    a line's end). A value embedded in a line of ours goes through :func:`field` first: its
    line breaks are its own to show, not to draw lines with."""
    if value.isprintable():
        return value
    kept = _pattern(_KEPT_IN_TEXT)
    return "".join(part if kept.fullmatch(part) else printable(part)
                   for part in kept.split(value))


@final
class OutputFilter:
    """A program's output made safe for the terminal, chunk by chunk (UTF-8, invalid bytes
    shown as U+FFFD)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def feed(self, data: bytes, *, final: bool = False) -> bytes:
        pending = self._held + self._decoder.decode(data, final=final)
        self._held = ""
        if not final:
            partial = _pattern(_OUTPUT_PARTIAL).search(pending)
            if partial is not None and len(pending) - partial.start() <= _MAX_HELD:
                self._held = pending[partial.start():]
                pending = pending[:partial.start()]
        kept = _pattern(_OUTPUT_KEPT)
        out = "".join(part if kept.fullmatch(part) else printable(part)
                      for part in kept.split(pending))
        return out.encode("utf-8")


__all__ = ["OutputFilter", "field", "text"]
