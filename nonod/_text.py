"""Text fit for a terminal: a leaf (standard library only) shared by the audit renderer and
``nonoctl``'s output, so that the CLI does not load the audit package to print a name."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character shown as an escape (``\\x1b``)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


__all__ = ["printable"]
