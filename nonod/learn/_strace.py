"""Reading strace's output, first layer: the strace command, and text lines to calls.

Pure (no I/O, no clock), so it can be fed captured lines in tests. :class:`StraceParser`
turns text lines into :class:`Call` records: it joins ``<unfinished ...>`` /
``<... name resumed>`` pairs per pid, splits the arguments on top-level commas (respecting
quoted strings, ``<...>`` descriptor decorations and brackets), and decodes strace's C-style
string escapes back into the bytes the program passed. The argument helpers
(:func:`string_arg`, :func:`fd_arg`, :func:`flag_names`) read one argument each.

The trace is produced by :func:`strace_argv` with ``-y``, so descriptors come decorated with
the path the kernel knows for them (``3</etc/hosts>``, ``AT_FDCWD</work>``). What the calls
mean is the second layer, :mod:`._trace`.
"""


from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, final

# -- the strace command line -------------------------------------------------------------------

#: What is traced: every syscall that takes a path (%file), process creation and exec
#: (%process, needed to follow working directories and descriptor tables), plus the
#: descriptor-based calls that matter: directory listings, fchdir, and the socket calls that
#: reveal listening ports and direct connection attempts. ``?`` marks names some
#: architectures lack (aarch64 has no getdents).
TRACE_SET: Final = "%file,%process,fchdir,?getdents,getdents64,bind,listen,connect"


def strace_argv(strace: str, output: str, argv: Sequence[str]) -> tuple[str, ...]:
    """The strace command that runs ``argv`` and writes the trace to ``output``.

    ``-f`` follows every child; ``-qq`` drops attach and exit notices; ``-y`` decorates
    descriptors with their paths; ``-s 4096`` prints whole paths (PATH_MAX); ``-I never``
    keeps fatal signals away from strace itself, so that stopping the program is the
    program's business and the trace covers its shutdown too.
    """
    return (strace, "-f", "-qq", "-y", "-I", "never", "-s", "4096", "-e", "signal=none",
            "-e", f"trace={TRACE_SET}", "-o", output, "--", *argv)


# -- lines to calls ------------------------------------------------------------------------------

_LINE: Final = re.compile(r"^\s*(?:\[pid\s+)?(\d+)\]?\s+(.*?)\s*$")
_UNFINISHED: Final = "<unfinished ...>"
_RESUMED: Final = re.compile(r"^<\.\.\.\s+([A-Za-z0-9_?]+)\s+resumed>(.*)$")
_NAME: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(")
_ERRNO: Final = re.compile(r"^-1\s+([A-Z][A-Z0-9_]*)")
_DELETED: Final = " (deleted)"
_SIMPLE_ESCAPES: Final = MappingProxyType({"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7,
                                           "b": 8, "\\": 92, '"': 34, "'": 39, "?": 63})


@final
@dataclass(frozen=True, slots=True)
class Call:
    """One finished syscall: ``args`` are the top-level argument texts as strace printed them,
    ``result`` the text after ``=`` (``3</etc/hosts>``, ``-1 ENOENT (...)``, ``?``)."""

    pid: int
    name: str
    args: tuple[str, ...]
    result: str

    @property
    def value(self) -> int | None:
        """The return value as an integer, or None (``?``, unparsable)."""
        token = self.result.split("<", 1)[0].split(" ", 1)[0]
        try:
            return int(token, 0)
        except ValueError:
            return None

    @property
    def ok(self) -> bool:
        value = self.value
        return value is not None and value >= 0

    @property
    def errno(self) -> str:
        """The error name of a failed call (``ENOENT``), else the empty string."""
        match = _ERRNO.match(self.result)
        return match.group(1) if match else ""

    @property
    def result_path(self) -> str | None:
        """The path decorating a returned descriptor (``= 3</etc/hosts>``), if any."""
        start = self.result.find("<")
        if start < 0:
            return None
        return _as_path(_decoration(self.result, start)[0])


def unescape(text: str) -> str:
    """Decode strace's C-style escapes (``\\n``, ``\\"``, ``\\303``, ``\\x41``) into the bytes
    they stand for, then into a str the way ``os.fsdecode`` would (undecodable bytes survive
    as surrogates, so the path round-trips)."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "\\" or i + 1 >= n:
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and _is_hex(text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif nxt in "01234567":
            j = i + 1
            while j < n and j < i + 4 and text[j] in "01234567":
                j += 1
            out.append(int(text[i + 1:j], 8) & 0xFF)
            i = j
        else:  # unknown escape: keep it as written
            out += text[i:i + 2].encode("utf-8", "surrogateescape")
            i += 2
    return os.fsdecode(bytes(out))


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def _decoration(text: str, start: int) -> tuple[str, int]:
    """The decoded text of the ``<...>`` starting at ``start``, and the index after it."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == ">":
            return unescape(text[start + 1:i]), i + 1
        i += 1
    return unescape(text[start + 1:]), len(text)


def _as_path(decoded: str) -> str | None:
    if not decoded.startswith("/"):
        return None  # socket:[...], pipe:[...], anon_inode:...
    return decoded[:-len(_DELETED)] if decoded.endswith(_DELETED) else decoded


def split_call(body: str) -> tuple[str, tuple[str, ...], str] | None:
    """``name(a, b, c) = result`` split into its name, top-level arguments and result text.

    Commas inside strings, ``<...>`` decorations, ``(...)``, ``[...]`` and ``{...}`` do not
    split. Returns None for a line that is not a call (exit notices, signals, garbage).
    """
    match = _NAME.match(body)
    if match is None:
        return None
    name = match.group(1)
    args: list[str] = []
    depth = 0
    i = match.end()
    start = i
    n = len(body)
    while i < n:
        char = body[i]
        if char == '"':
            i += 1
            while i < n and body[i] != '"':
                i += 2 if body[i] == "\\" else 1
            i += 1
            continue
        if char == "<":
            i = _decoration(body, i)[1]
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                if char != ")":
                    return None
                last = body[start:i].strip()
                if last or args:
                    args.append(last)
                rest = body[i + 1:].strip()
                result = rest[1:].strip() if rest.startswith("=") else ""
                return name, tuple(args), result
            depth -= 1
        elif char == "," and depth == 0:
            args.append(body[start:i].strip())
            start = i + 1
        i += 1
    return None  # no closing parenthesis: a truncated line


@final
class StraceParser:
    """Lines of ``strace -f`` output in, finished :class:`Call` records out.

    Keeps, per pid, the first half of a call interrupted by another process's output
    (``<unfinished ...>``) until its ``<... name resumed>`` half arrives. Lines that are not
    calls (``+++ exited +++``, ``--- SIGCHLD ---``, blank or truncated lines) are skipped;
    ``exits`` collects the pids whose ``+++`` notice was seen.
    """

    def __init__(self) -> None:
        self._pending: dict[int, str] = {}
        self.exits: list[int] = []
        self.skipped = 0

    def feed(self, line: str) -> Call | None:
        match = _LINE.match(line)
        if match is None:
            if line.strip():
                self.skipped += 1
            return None
        pid, body = int(match.group(1)), match.group(2)
        if body.startswith("+++") or body.startswith("---"):
            if body.startswith("+++ exited") or body.startswith("+++ killed"):
                self.exits.append(pid)
            return None
        if body.endswith(_UNFINISHED):
            self._pending[pid] = body[:-len(_UNFINISHED)].rstrip()
            return None
        resumed = _RESUMED.match(body)
        if resumed is not None:
            head = self._pending.pop(pid, None)
            if head is None or not head.startswith(resumed.group(1) + "("):
                self.skipped += 1
                return None
            tail = resumed.group(2)
            joiner = "" if head.endswith("(") or tail.startswith((")", ",")) else " "
            body = head + joiner + tail
        parts = split_call(body)
        if parts is None:
            self.skipped += 1
            return None
        name, args, result = parts
        return Call(pid=pid, name=name, args=args, result=result)

    def feed_all(self, lines: Iterable[str]) -> list[Call]:
        calls = []
        for line in lines:
            call = self.feed(line)
            if call is not None:
                calls.append(call)
        return calls


# -- argument values -----------------------------------------------------------------------------


def string_arg(arg: str) -> str | None:
    """A quoted string argument, decoded; None for NULL, an address or anything else."""
    if len(arg) < 2 or not arg.startswith('"'):
        return None
    end = arg.rfind('"')
    if end <= 0:
        return None
    return unescape(arg[1:end])


@final
@dataclass(frozen=True, slots=True)
class FdArg:
    """A descriptor argument: ``3``, ``3</path>``, ``AT_FDCWD`` or ``AT_FDCWD</cwd>``."""

    number: int | None  # None for AT_FDCWD
    path: str | None  # the decorated path, when it is one
    label: str | None  # the decorated text when not a path (``socket:[123]``)


def fd_arg(arg: str) -> FdArg | None:
    start = arg.find("<")
    head = arg if start < 0 else arg[:start]
    decorated = _decoration(arg, start)[0] if start >= 0 else None
    path = _as_path(decorated) if decorated is not None else None
    label = decorated if decorated is not None and path is None else None
    if head == "AT_FDCWD":
        return FdArg(None, path, label)
    try:
        return FdArg(int(head), path, label)
    except ValueError:
        return None


_FLAG_SPLIT: Final = re.compile(r"[|\s]+")


def flag_names(arg: str) -> frozenset[str]:
    return frozenset(part for part in _FLAG_SPLIT.split(arg) if part)
