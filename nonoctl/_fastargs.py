"""The hot verbs' command lines read without argparse.

Importing argparse and building even one verb's parser costs ``nonoctl launch`` and
``nonoctl ps`` about a third of their start-up (argparse pulls ``re``, ``gettext``, ``locale``
and ``shutil``; each option it adds builds a help formatter). A command line made only of
those verbs' options, each spelled in full with its value as the next word, is read here into
the values argparse would give (``_flags`` declares both). Anything else (help, an
abbreviation, ``--opt=value``, bundled short flags, a value that starts with ``-``, a value
the option's conversion refuses, a word too many) is left to argparse, which reads it, or
explains the error, as it always did.
"""

from __future__ import annotations

from ._flags import GLOBAL, JSON, LAUNCH_FLAGS, LAUNCH_OWN, PS, STOP, Flag

TYPE_CHECKING = False  # no ``typing`` at run time: ``_lean`` reads its command line here
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Final


def _table(flags: Sequence[Flag]) -> dict[str, Flag]:
    return {name: flag for flag in flags for name in flag.names}


_LAUNCH: Final = _table([JSON, *LAUNCH_OWN, *(f for _, group in LAUNCH_FLAGS for f in group)])
_JSON_ONLY: Final = _table([JSON])
#: verb: (its options by name, the dest of its one positional or None, whether it is required)
_VERBS: Final[Mapping[str, tuple[dict[str, Flag], str | None, bool]]] = {
    "launch": (_LAUNCH, "profile_name", False),
    "run": (_LAUNCH, "profile_name", False),
    "ps": (_table([JSON, *PS]), None, False),
    "inspect": (_JSON_ONLY, "session", True),
    "stop": (_table([JSON, *STOP]), "session", True),
    "wait": (_JSON_ONLY, "session", True),
    "prune": (_JSON_ONLY, None, False),
}
_GLOBAL: Final = _table(GLOBAL)


def command_word(words: Sequence[str]) -> str | None:
    """The subcommand in ``words`` (skipping global options), if any."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--socket":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _plain(word: str) -> bool:
    """A word argparse reads as a value, never as an option (a stricter test than its own)."""
    return bool(word) and not word.startswith("-")


def parse(words: Sequence[str]) -> tuple[str, dict[str, object]] | None:
    """``(verb, {dest: value})`` as argparse would read ``words`` (``--socket`` left as the
    string given; the verb ``""`` for ``--version`` alone), or None: not a command line this
    module reads."""
    values: dict[str, object] = {"socket": None, **{f.dest: f.default() for f in GLOBAL}}
    at = 0
    while at < len(words) and words[at].startswith("-"):
        word = words[at]
        if word == "--socket" and at + 1 < len(words) and _plain(words[at + 1]):
            values["socket"] = words[at + 1]
            at += 2
            continue
        flag = _GLOBAL.get(word)
        if flag is None:
            return None
        values[flag.dest] = True
        at += 1
    if at == len(words):
        return ("", values) if values["version"] else None
    if values["version"] or words[at] not in _VERBS:
        return None
    verb = words[at]
    options, positional, required = _VERBS[verb]
    values.update((f.dest, f.default()) for f in options.values())
    if positional is not None:
        values[positional] = None
    rest = iter(words[at + 1 :])
    for word in rest:
        if _plain(word):
            if positional is None or values[positional] is not None:
                return None  # argparse: "unrecognized arguments"
            values[positional] = word
            continue
        flag = options.get(word)
        if flag is None:
            return None
        if flag.kind == "flag":
            values[flag.dest] = True
            continue
        value = next(rest, None)
        if value is None or not _plain(value):
            return None
        if flag.convert is not None:
            try:
                converted = flag.convert(value)
            except Exception:  # noqa: BLE001 - argparse reports it
                return None
        else:
            converted = value
        if flag.kind == "append":
            listed = values[flag.dest]
            if not isinstance(listed, list):  # not its default(): never
                return None
            listed.append(converted)
        else:
            values[flag.dest] = converted
    if required and positional is not None and values[positional] is None:
        return None  # argparse: "the following arguments are required"
    return verb, values
