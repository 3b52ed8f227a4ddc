"""``nonoctl ps``'s table, and the plain-text cells other outputs share, standard library only.

``_output.Output`` renders sessions decoded by the full client here, and ``_lean`` the ones it
read by hand: one table for both. A session is anything with the attributes of
``nonod.protocol.SessionInfo`` that the table shows (:class:`Row`).
"""

from __future__ import annotations

from nonod._text import printable

TYPE_CHECKING = False  # no ``typing`` at run time (``_lean`` renders ``ps`` with this)
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Sequence
    from typing import Protocol

    class Row(Protocol):
        """What the table reads of a session."""

        @property
        def id(self) -> str: ...
        @property
        def name(self) -> str: ...
        @property
        def state(self) -> str: ...
        @property
        def pid(self) -> int | None: ...
        @property
        def profile(self) -> str | None: ...
        @property
        def argv(self) -> Sequence[str]: ...
        @property
        def started_at(self) -> dt.datetime: ...
        @property
        def exit_code(self) -> int | None: ...
        @property
        def signal(self) -> int | None: ...
        @property
        def parent(self) -> str | None: ...


def ago(seconds: int) -> str:
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def signame(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def status(info: Row) -> str:
    if info.state != "exited":
        return info.state
    if info.signal is not None:
        return f"killed ({signame(info.signal)})"
    if info.exit_code is not None:
        return f"exited ({info.exit_code})"
    return "exited"


def command(argv: Sequence[str], width: int = 40) -> str:
    text = " ".join(argv)
    return text if len(text) <= width else text[: width - 1] + "…"


def tree(infos: Sequence[Row]) -> list[tuple[int, Row]]:
    """Sessions in order, each tool session (``parent``) right under its parent, indented; one
    whose parent is not listed stays at the top level."""
    listed = {i.id for i in infos}
    children: dict[str, list[Row]] = {}
    for info in infos:
        if info.parent is not None and info.parent in listed:
            children.setdefault(info.parent, []).append(info)
    out: list[tuple[int, Row]] = []

    def add(info: Row, depth: int) -> None:
        out.append((depth, info))
        for child in children.get(info.id, ()):
            add(child, depth + 1)

    for info in infos:
        if info.parent is None or info.parent not in listed:
            add(info, 0)
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned, every cell escaped as ``_sanitize.field`` does, the last one not
    padded, as one string (``ps`` with a thousand sessions: linear, under 1 us a row). A row
    whose cells are all printable (nearly every row) is checked with one call and kept as
    is."""
    body = [headers]
    for row in rows:
        body.append(row if "".join(row).isprintable()
                    else [c if c.isprintable() else printable(c) for c in row])
    widths = [max(map(len, column)) for column in zip(*body, strict=True)]
    line = "  ".join([*(f"{{:<{width}}}" for width in widths[:-1]), "{}"]).format
    return "\n".join([line(*row).rstrip() for row in body]) + "\n"


def sessions_table(infos: Sequence[Row], now: float) -> str:
    """``nonoctl ps``'s table of ``infos`` at ``now`` (a Unix time)."""
    # the tree only when some session runs a tool for another (rare): one pass otherwise
    ordered = (tree(infos) if any(i.parent is not None for i in infos)
               else [(0, i) for i in infos])
    return table(
        ("ID", "NAME", "STATE", "PID", "PROFILE", "STARTED", "COMMAND"),
        [
            ("  " * depth + ("└ " if depth else "") + i.id, i.name, status(i),
             str(i.pid) if i.pid else "-", i.profile or "-",
             ago(int(now - i.started_at.timestamp())), command(i.argv))
            for depth, i in ordered
        ],
    )
