"""The hot verbs' command lines are read without argparse, exactly as argparse reads them.

``nonoctl._fastargs`` reads ``launch``/``run``/``ps`` command lines made of plain options and
leaves everything else to argparse; whenever it reads one, the values must be argparse's.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonoctl import _cli, _fastargs
from nonoctl._flags import GLOBAL, JSON, LAUNCH_FLAGS, LAUNCH_OWN, PS, STOP

_OPTION_NAMES = sorted({name for flag in (*GLOBAL, JSON, *LAUNCH_OWN, *PS, *STOP,
                                          *(f for _, group in LAUNCH_FLAGS for f in group))
                        for name in flag.names})
#: Words a command line may hold: every option, abbreviations, values good and bad for each
#: conversion, values that look like options, help, verbs.
_WORDS = st.sampled_from([
    *_OPTION_NAMES, "--socket", "--allow-c", "--mem", "-ad", "-aq", "--name=x", "-h", "--help",
    "--bogus", "-", "", "launch", "run", "ps", "inspect", "prof", "/tmp", "a b", "-5", "5",
    "0.5", "1G", "90s", "1h30m", "abc", "nan", "=x", "--version",
])
_VALUES = st.sampled_from(["/tmp", "5", "0.5", "1G", "90s", "abc", "x=Y", "-1", ""])
#: Mostly an option and a value (what the fast path reads), sometimes any word.
_CHUNKS = st.one_of(st.tuples(st.sampled_from(_OPTION_NAMES), _VALUES).map(list),
                    st.sampled_from(_OPTION_NAMES).map(lambda name: [name]),
                    _WORDS.map(lambda word: [word]))


def _argparse_reading(words: list[str]) -> dict[str, Any] | None:
    """What argparse makes of ``words`` (as ``main`` builds it), None if it refuses them."""
    word = _cli._command_word(words)
    parser = _cli.build_parser(word if word in _cli._COMMANDS else None)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its usage errors
            args = parser.parse_args(words)
    except SystemExit:
        return None
    values = vars(args)
    del values["parser"]
    return values


def _fast_reading(words: list[str]) -> dict[str, Any] | None:
    args = _cli._fast_args(words)
    if args is None:
        return None
    values = vars(args)
    assert values.pop("parser") is None
    return values


@settings(max_examples=600, deadline=None)
@given(before=st.sampled_from([[], ["--system"], ["--socket", "/run/x.sock"],
                               ["--no-autostart"], ["--json"], ["--version"]]),
       verb=st.sampled_from(["launch", "run", "ps", "inspect", "stop", "wait", "prune", ""]),
       after=st.lists(_CHUNKS, max_size=6))
def test_what_the_fast_path_reads_is_what_argparse_reads(
    before: list[str], verb: str, after: list[list[str]]
) -> None:
    words = [*before, *([verb] if verb else []), *(word for chunk in after for word in chunk)]
    fast = _fast_reading(words)
    if fast is not None:
        assert fast == _argparse_reading(words), words


@pytest.mark.parametrize("words", [
    ["launch", "--allow-cwd", "--block-net"],  # bench/daemon.py's
    ["ps"],
    ["ps", "-a", "--json", "-q"],
    ["--version"],
    ["inspect", "bot"], ["stop", "-t", "2.5", "bot", "-f"], ["wait", "bot", "--json"], ["prune"],
    ["--socket", "/run/n.sock", "--no-autostart", "run", "gitbot", "-d", "--name", "bot",
     "-a", "/tmp", "-a", "/srv", "-r", "/etc", "--memory", "512M", "--timeout", "90s",
     "--cpus", "0.5", "--listen-port", "8080", "--allow-domain", "example.com", "--json"],
])
def test_common_command_lines_take_the_fast_path(words: list[str]) -> None:
    fast = _fast_reading(words)
    assert fast is not None
    assert fast == _argparse_reading(words)


@pytest.mark.parametrize("words", [
    ["launch", "--help"], ["ps", "-aq"], ["launch", "--allow-c"], ["launch", "--name=x"],
    ["launch", "--memory", "lots"], ["launch", "a", "b"], ["ps", "x"], ["--version", "ps"], [],
    ["launch", "-a", "-x"], ["launch", "--system"], ["inspect"], ["stop", "-f"],
    ["wait", "a", "b"], ["logs", "x"],
])
def test_anything_else_is_left_to_argparse(words: list[str]) -> None:
    assert _fastargs.parse(words) is None
