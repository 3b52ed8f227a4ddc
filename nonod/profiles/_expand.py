"""Variable expansion in profile paths and values, and the context that supplies the values.

A profile may write ``~``, ``$HOME``, ``$WORKDIR``, ``$TMPDIR``, ``$UID`` and the XDG base
directories, as ``$NAME`` or ``${NAME}``. Nothing else: an unknown name is an error when the
profile is parsed, so a typo cannot silently turn into a literal path. The values come from a
:class:`ResolveContext` that the caller builds; this module never reads ``os.environ``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Final, Literal, final

import msgspec

# Names a profile may use. Every one except UID expands to an absolute directory.
VARIABLES: Final = (
    "HOME",
    "WORKDIR",
    "TMPDIR",
    "UID",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
)
_DIRECTORY_VARIABLES: Final = frozenset(VARIABLES) - {"UID"}
# nono's variables for its own directories, which nonod does not have or never shows.
_NONO_STORE: Final = {
    "NONO_CONFIG": "configuration directory",
    "NONO_PACKAGES": "pack store",
    "PACK_DIR": "directory of the pack a profile came from",
}

# XDG base directories relative to $HOME when the context does not set them (XDG spec).
_XDG_DEFAULTS: Final = (
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_DATA_HOME", ".local/share"),
    ("XDG_STATE_HOME", ".local/state"),
    ("XDG_CACHE_HOME", ".cache"),
)
# The ones whose defaults hold start-up files (``_mounts.HOME_RC_FILES``): the cache home
# has copy-on-write of its own (``ResolvedPolicy.cache_home``).
MOVED_HOMES: Final = _XDG_DEFAULTS[:3]
_XDG_KEYS: Final = frozenset({key for key, _ in _XDG_DEFAULTS} | {"XDG_RUNTIME_DIR"})

_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Prefixes that only exist on macOS. Paths under them are dropped (with a note) on Linux.
_MACOS_ROOTS: Final = ("/private", "/Library", "/System", "/Applications", "/Volumes")


class ExpansionError(ValueError):
    """A value names an unknown variable or is malformed. Callers add the source and JSON path."""


def references(text: str) -> tuple[str, ...]:
    """The variable names ``text`` refers to, in order. Raises ExpansionError if one is unknown."""
    names: list[str] = []
    for match in _REFERENCE.finditer(text):
        name = match.group("braced")
        if name is None:
            name = match.group("bare")
        if not _NAME.fullmatch(name):
            raise ExpansionError(f"malformed variable reference `{match.group(0)}`")
        if name in _NONO_STORE:
            raise ExpansionError(
                f"`${name}` is nono's {_NONO_STORE[name]}: nonod has no pack store, and nono's "
                "configuration directory is hidden in every session (group deny_nono_state); "
                "name the files the program needs instead"
            )
        if name not in VARIABLES:
            raise ExpansionError(
                f"unknown variable `${name}` (known: {', '.join('$' + v for v in VARIABLES)})"
            )
        names.append(name)
    if "${" in _REFERENCE.sub("", text):
        raise ExpansionError("unterminated `${`")
    return tuple(names)


def check_path(text: str) -> None:
    """Raise ExpansionError unless ``text`` is a usable path: absolute once expanded.

    Accepted starts: ``/``, ``~``, ``~/``, or a directory variable (``$HOME/x``, ``${WORKDIR}``).
    Relative paths are refused: in a profile there is no directory they could be relative to.
    """
    if not text:
        raise ExpansionError("empty path")
    if "\x00" in text:
        raise ExpansionError("path contains a NUL character")
    references(text)
    if text.startswith("~"):
        if text != "~" and not text.startswith("~/"):
            raise ExpansionError(f"`{text}`: only `~` and `~/...` are supported, not `~user`")
        return
    if text.startswith("/"):
        return
    first = _REFERENCE.match(text)
    if first is not None:
        name = first.group("braced") or first.group("bare")
        if name in _DIRECTORY_VARIABLES:
            return
    raise ExpansionError(
        f"`{text}` is not an absolute path (start it with `/`, `~` or a variable such as "
        "`$WORKDIR`)"
    )


def expand(text: str, values: Mapping[str, str]) -> str:
    """Replace ``~`` (at the start) and every ``$NAME`` / ``${NAME}`` using ``values``."""
    references(text)
    if text == "~" or text.startswith("~/"):
        text = "$HOME" + text[1:]

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        return values[name]

    return _REFERENCE.sub(substitute, text)


def is_macos_only(path: str, home: str) -> bool:
    """Whether an expanded, absolute ``path`` can only exist on macOS."""
    norm = posixpath.normpath(path)
    roots = (*_MACOS_ROOTS, posixpath.join(home, "Library"))
    return any(norm == root or norm.startswith(root + "/") for root in roots)


@final
class ResolveContext(msgspec.Struct, frozen=True, kw_only=True):
    """Where a policy is resolved: the requesting user's directories, never the daemon's.

    ``xdg`` holds the user's ``XDG_*_HOME`` / ``XDG_RUNTIME_DIR`` values where set; missing or
    relative ones fall back to the XDG defaults under ``home`` (``XDG_RUNTIME_DIR`` to
    ``/run/user/<uid>``). ``env`` is the caller's environment, kept for the layers that filter
    it; resolution itself reads only the named fields.
    """

    home: str
    workdir: str
    uid: int
    tmpdir: str = "/tmp"
    xdg: dict[str, str] = msgspec.field(default_factory=dict)
    platform: Literal["linux", "macos"] = "linux"
    env: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("home", "workdir", "tmpdir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise ValueError(f"ResolveContext.{name} must be an absolute path, got {value!r}")
        if self.uid < 0:
            raise ValueError("ResolveContext.uid must not be negative")
        unknown = sorted(set(self.xdg) - _XDG_KEYS)
        if unknown:
            raise ValueError(f"ResolveContext.xdg has unknown keys: {', '.join(unknown)}")

    @classmethod
    def for_user(
        cls,
        *,
        home: str,
        workdir: str,
        uid: int,
        environ: Mapping[str, str] | None = None,
        platform: Literal["linux", "macos"] = "linux",
    ) -> ResolveContext:
        """A context for one user; ``XDG_*`` (and on macOS ``TMPDIR``) come from ``environ``
        (the client's environment, not the daemon's) when given and absolute, else the
        defaults apply. On Linux ``$TMPDIR`` is ``/tmp``, each session's own: the client's
        ``TMPDIR`` is a directory of the host (``/tmp/user/UID`` with pam_tmpdir, ``~/tmp``),
        and granting it would share it with the host and with every other session, which
        the program does not even use (it gets no ``TMPDIR``)."""
        env = dict(environ or {})
        xdg = {key: env[key] for key in _XDG_KEYS if env.get(key, "").startswith("/")}
        tmpdir = env.get("TMPDIR", "") if platform == "macos" else ""
        return cls(
            home=home,
            workdir=workdir,
            uid=uid,
            tmpdir=tmpdir if tmpdir.startswith("/") else "/tmp",
            xdg=xdg,
            platform=platform,
            env=env,
        )

    def values(self, workdir: str | None = None) -> dict[str, str]:
        """Every variable's value; ``workdir`` replaces the context's when given."""
        out = {
            "HOME": self.home.rstrip("/") or "/",
            "WORKDIR": workdir if workdir is not None else self.workdir,
            "TMPDIR": self.tmpdir,
            "UID": str(self.uid),
        }
        for key, rel in _XDG_DEFAULTS:
            given = self.xdg.get(key, "")
            out[key] = given if given.startswith("/") else posixpath.join(out["HOME"], rel)
        runtime = self.xdg.get("XDG_RUNTIME_DIR", "")
        out["XDG_RUNTIME_DIR"] = runtime if runtime.startswith("/") else f"/run/user/{self.uid}"
        return out
