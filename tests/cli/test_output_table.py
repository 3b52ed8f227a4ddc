"""``nonoctl``'s tables (``ps``, ``audit list``, ``profile list``): aligned, escaped, and
written at once (a thousand sessions: one write, not a thousand line-buffered ones)."""

from __future__ import annotations

import io

from nonoctl._output import Output


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_a_table_is_aligned_escaped_and_written_once() -> None:
    sink = _Writes()
    Output(stdout=sink).table(("ID", "NAME", "COMMAND"), [
        ("a1", "x\x1b[2Jy", "sleep 600"),
        ("b2222222", "", "tab\there  "),
        ("c3", "naïve 漢", ""),
    ])
    assert sink.getvalue() == (
        "ID        NAME       COMMAND\n"
        "a1        x\\x1b[2Jy  sleep 600\n"
        "b2222222             tab\\x09here\n"
        "c3        naïve 漢\n"
    )
    assert sink.writes == 1


def test_an_empty_table_is_its_header() -> None:
    sink = _Writes()
    Output(stdout=sink).table(("ID", "NAME"), [])
    assert sink.getvalue() == "ID  NAME\n"
