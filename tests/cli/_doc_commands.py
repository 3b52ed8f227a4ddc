"""Finding the ``nonoctl ...`` and ``nonod ...`` command lines that docs and hints show.

A command line is a shell-like text whose first word (after ``$ ``, ``sudo`` or ``VAR=value``
prefixes) is ``nonoctl`` or ``nonod``; pipelines and lists (``;``, ``&&``, ``||``, ``|``,
``&``) are cut into their commands. A usage synopsis (``[--flag X]``, ``{a,b}``, ``...``) is a
grammar, not a command line, and is left out.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("nonoctl", "nonod")
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_SEPARATORS = re.compile(r"\s*(?:&&|\|\||[;|&])\s*")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
_SYNOPSIS = re.compile(r"\[[^\]]*\]|\{[^}]*\}|\.\.\.|…|<[^>]*\|[^>]*>|\bCOMMAND\b")


@dataclass(frozen=True)
class Found:
    where: str  # file:line
    text: str  # the command line as written (one command of a pipeline or list)


def _commands_in(text: str) -> Iterator[str]:
    """The nonoctl/nonod commands in one line of shell-like text."""
    text = text.split(" # ", 1)[0]  # a trailing comment
    if text.lstrip().startswith("#"):
        return
    text = re.sub(r"^\s*\$\s+", "", text)  # a prompt
    text = re.sub(r"\$\(([^()]*)\)", lambda m: " ; " + m.group(1) + " ; ", text)
    for part in _SEPARATORS.split(text):
        words = part.split()
        while words and (_ASSIGNMENT.match(words[0]) or words[0] in ("sudo", "exec", "!")):
            words.pop(0)
        if not words or words[0] not in PROGRAMS:
            continue
        if len(words) > 1 and (words[1][0].isdigit() or words[1][0] == "("):
            continue  # a table row or a diagram naming the program, not a command
        command = " ".join(words)
        if _SYNOPSIS.search(command):
            continue
        yield command


def _spans(paragraph: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The inline code spans of a paragraph (a span may go on over a line break), each with
    the line it starts on."""
    text = ""
    starts: list[tuple[int, int]] = []  # (offset in text, line number)
    for number, line in paragraph:
        starts.append((len(text), number))
        text += line + " "
    for match in _INLINE.finditer(text):
        line = max(number for offset, number in starts if offset <= match.start())
        yield line, match.group(1).replace("\\|", "|")  # a table cell's escaped pipe


def in_markdown(path: Path, root: Path) -> Iterator[Found]:
    """Every command line in a markdown file: code blocks line by line (``\\`` continuations
    joined), and inline code spans elsewhere."""
    lines = path.read_text(encoding="utf-8").splitlines()
    fenced = False
    output = False  # a ```text block: a program's output, quoted, not command lines
    pending = ""
    start = 0
    paragraph: list[tuple[int, str]] = []
    name = path.relative_to(root)

    def spans() -> Iterator[Found]:
        for number, span in _spans(paragraph):
            for command in _commands_in(span):
                yield Found(f"{name}:{number}", command)
        paragraph.clear()

    for number, line in enumerate(lines, start=1):
        if _FENCE.match(line):
            yield from spans()
            fenced = not fenced
            output = fenced and line.strip().lstrip("`~").strip() == "text"
            pending = ""
            continue
        if output:
            continue
        if fenced:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            for command in _commands_in(pending + line):
                yield Found(f"{name}:{start}", command)
            pending = ""
        elif line.strip() and not line.lstrip().startswith("|"):
            paragraph.append((number, line.strip()))
        else:  # a blank line or a table row ends a paragraph; a row is read alone
            yield from spans()
            if line.strip():
                paragraph.append((number, line))
                yield from spans()
    yield from spans()


def _string_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # an f-string: each {value} stands for one word
        return "".join(part.value if isinstance(part, ast.Constant) else "VALUE"
                       for part in node.values)
    return None


def in_python(path: Path, root: Path) -> Iterator[Found]:
    """Every backquoted command line in a Python file's string literals (hints, messages,
    docstrings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = path.relative_to(root)
    parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
             for part in node.values}  # read as a whole with their f-string
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        text = _string_text(node)
        if text is None:
            continue
        for span in _INLINE.findall(text):
            for command in _commands_in(span):
                yield Found(f"{name}:{node.lineno}", command)


def split(command: str) -> tuple[str, list[str]]:
    """``(program, arguments)`` of one command line."""
    words = shlex.split(command, comments=False)
    return words[0], words[1:]
