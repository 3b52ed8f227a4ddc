"""Every ``nonoctl ...`` and ``nonod ...`` command line shown in README.md and docs/*.md, and
every one a hint or message in nonod/ and nonoctl/ names, parses with today's command line.

Parsing only: no daemon is started. A failure names the file and line of the command.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from nonoctl import _cli
from nonod import _main as nonod_main

from ._doc_commands import Found, in_markdown, in_python, split

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCES = sorted(p for package in ("nonod", "nonoctl") for p in (REPO / package).rglob("*.py"))


def parse_error(command: str) -> str | None:
    """Why ``command`` does not parse (None: it does)."""
    try:
        program, words = split(command)
    except ValueError as exc:
        return f"not a shell command line: {exc}"
    after: list[str] = []
    if program == "nonoctl" and "--" in words:
        cut = words.index("--")
        words, after = words[:cut], words[cut + 1 :]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if program == "nonod":
                nonod_main._parser().parse_args(words)
                return None
            word = _cli._command_word(words)
            args = _cli.build_parser(word if word in _cli._COMMANDS else None).parse_args(words)
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version
            return None
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else str(exc)
    if after and args.func not in (_cli._cmd_launch, _cli._cmd_learn):
        return "only `launch`/`run` and `learn` take a command after `--`"
    return None


def _failures(found: list[Found]) -> list[str]:
    return [f"{f.where}: `{f.text}`: {error}" for f in found
            if (error := parse_error(f.text)) is not None]


def test_every_documented_command_line_parses() -> None:
    found = [f for doc in DOCS for f in in_markdown(doc, REPO)]
    assert len(found) > 100  # the extractor finds the docs' commands at all
    assert not _failures(found), "\n".join(_failures(found))


def test_every_command_a_hint_or_message_names_parses() -> None:
    found = [f for source in SOURCES for f in in_python(source, REPO)]
    assert len(found) > 10
    assert not _failures(found), "\n".join(_failures(found))


@pytest.mark.parametrize(("command", "ok"), [
    ("nonoctl trust sign --key default GEMINI.md", True),
    ("nonoctl launch gitbot --dry-run -- python3 bot.py", True),
    ("nonoctl ps -- ls", False),
    ("nonoctl profile groups", False),
    ("nonod --daemonize", True),
    ("nonod --detach", False),
])
def test_the_check_tells_a_good_line_from_a_bad_one(command: str, ok: bool) -> None:
    assert (parse_error(command) is None) is ok


def test_the_extractor_reads_blocks_spans_and_hints(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("Run `nonoctl ps -a` or `nonod.toml`, or `nonoctl stop\n--force ID`.\n\n"
                   "```sh\n$ nonoctl logs -f ID | head\n"
                   "nonoctl launch [PROFILE] [--name N]\nFOO=1 nonoctl launch \\\n"
                   "  --allow-cwd -- ls   # list\n```\n| `nonoctl wait ID` | waits |\n")
    assert [(f.where, f.text) for f in in_markdown(doc, tmp_path)] == [
        ("x.md:1", "nonoctl ps -a"), ("x.md:1", "nonoctl stop --force ID"),
        ("x.md:5", "nonoctl logs -f ID"), ("x.md:7", "nonoctl launch --allow-cwd -- ls"),
        ("x.md:10", "nonoctl wait ID")]
    source = tmp_path / "m.py"
    source.write_text('name = "x"\nHINT = f"run `nonoctl secret set {name}` first"\n')
    assert [(f.where, f.text) for f in in_python(source, tmp_path)] == [
        ("m.py:2", "nonoctl secret set VALUE")]
