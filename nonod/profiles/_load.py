"""Finding profiles, parsing them, and flattening ``extends`` chains into one Profile.

Lookup (``load_profile``): a value containing ``/`` or ending in ``.json`` is a file path;
anything else is a profile name, looked up first in the user's profile directory
(``$XDG_CONFIG_HOME/nono/profiles/NAME.json``), then among the built-in profiles (the
top-level ``profiles/`` directory next to the ``nonod`` package).

Merging (base first, then child), as nono does: arrays append without duplicates, maps merge
with the child's entries winning, scalars the child sets override. A few keys have their own
rule, listed in ``docs/profiles.md``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, final

import msgspec
from msgspec import UNSET, Raw

from .._callerfs import CallerFileError, FileMissing, FileTooLarge, read_path
from .._data import DATA_DIR
from .._xdg import config_home
from ..errors import ExtendsError, ProfileError, ProfileNotFound, UnknownKey
from ._check import (
    PROFILE_NAME,
    allowed_values,
    check_meta,
    check_profile,
    is_registry_ref,
    known_keys,
    pack_hint,
    raw_is_empty,
)
from ._groups import builtin_groups, builtin_network
from ._owner import check_writers
from ._schema import NetworkConfig, Profile, WorkdirConfig

MAX_EXTENDS_DEPTH: Final = 10
MAX_PROFILE_BYTES: Final = 1 << 20

Origin = Literal["user", "builtin", "path"]

_AT = re.compile(r"(?P<message>.*) - at `(?P<path>\$[^`]*)`", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>.*)`", re.DOTALL)


@final
class ProfileInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One profile ``load_profile`` can find by name, and where it comes from."""

    name: str
    origin: Literal["user", "builtin"]
    path: str
    shadows_builtin: bool = False


def builtin_profiles_dir() -> Path:
    """The built-in profiles: package data (``nonod/data/profiles``, in the wheel too; the
    repository's top-level ``profiles/`` is a link to it). An installed package is files on
    disk (the loader lists the directory); a zipped one is not supported (``nonod._data``)."""
    return DATA_DIR / "profiles"


def user_profiles_dir(home: str, xdg_config_home: str | None = None) -> Path:
    """``$XDG_CONFIG_HOME/nono/profiles`` (``~/.config`` when unset or relative), as nono."""
    return config_home(home, xdg_config_home) / "nono" / "profiles"


# --- parsing --------------------------------------------------------------------------------


def parse_profile(data: bytes, source: str) -> Profile:
    """Decode and check one profile file. Every error is a ProfileError naming ``source``."""
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"larger than {MAX_PROFILE_BYTES} bytes", source=source)
    try:
        profile = msgspec.json.decode(data, type=Profile)
    except msgspec.ValidationError as exc:
        raise _from_validation_error(exc, source) from exc
    except msgspec.DecodeError as exc:
        raise ProfileError(f"not valid JSON ({exc})", source=source) from exc
    except RecursionError as exc:
        raise ProfileError("nested too deeply", source=source) from exc
    _refuse_duplicate_keys(data, source)
    check_meta(data, source)
    check_profile(profile, source, builtin_groups(), builtin_network())
    return profile


def _from_validation_error(exc: msgspec.ValidationError, source: str) -> ProfileError:
    text = str(exc)
    at = _AT.fullmatch(text)
    message, path = (at.group("message"), at.group("path")) if at else (text, "$")
    unknown = _UNKNOWN.fullmatch(message)
    if unknown is None:
        if message.startswith("Invalid enum value"):
            values = allowed_values(path)
            if values:
                message += " (expected one of: " + ", ".join(values) + ")"
        return ProfileError(message, source=source, path=path)
    key = unknown.group("key")
    hints = []
    import difflib  # here: only a profile with a mistake needs it

    close = difflib.get_close_matches(key, known_keys(path), n=2)
    if close:
        hints.append("did you mean " + " or ".join(f"`{c}`" for c in close) + "?")
    if path == "$":
        hints.append("settings only nonod reads go under `nonod`")
    return UnknownKey(
        f"unknown key `{key}`",
        source=source,
        path=f"{path}.{key}",
        hint=" ".join(hints) or None,
    )


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order, so duplicate keys stay visible."""


def _refuse_duplicate_keys(data: bytes, source: str) -> None:
    # msgspec keeps the last of two equal keys; another reader might keep the first. A security
    # policy must not mean two things, so a repeated key is an error.
    try:
        tree = json.loads(data, object_pairs_hook=_Pairs)
        duplicate = _find_duplicate(tree, "$")
    except (ValueError, RecursionError) as exc:
        raise ProfileError("not valid JSON (nested too deeply?)", source=source) from exc
    if duplicate is not None:
        raise ProfileError("key appears twice in the same object", source=source,
                           path=duplicate)


def _find_duplicate(node: object, path: str) -> str | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            where = f"{path}.{key}"
            if key in seen:
                return where
            seen.add(key)
            found = _find_duplicate(value, where)
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _find_duplicate(value, f"{path}[{index}]")
            if found is not None:
                return found
    return None


# --- lookup ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True)
class _Found:
    origin: Origin
    name: str
    path: Path

    @property
    def source(self) -> str:
        return str(self.path)


def _is_path(value: str) -> bool:
    return "/" in value or value.endswith(".json")


def _find(name: str, user_dir: Path | None, builtin_dir: Path, *, skip_user: bool) -> _Found:
    if not PROFILE_NAME.fullmatch(name):
        raise ProfileError(f"`{name}` is not a profile name (letters, digits, - and _)")
    if user_dir is not None and not skip_user:
        candidate = user_dir / f"{name}.json"
        if candidate.is_file():
            return _Found("user", name, candidate)
    candidate = builtin_dir / f"{name}.json"
    if candidate.is_file():
        return _Found("builtin", name, candidate)
    where = [str(user_dir)] if user_dir is not None and not skip_user else []
    where.append(f"{builtin_dir} (built-in)")
    raise ProfileNotFound(
        f"no profile named `{name}`",
        hint="looked in " + " and ".join(where) + "; `nonoctl profile list` shows what exists",
    )


def _read(found: _Found) -> bytes:
    """Opened once, never blocking, regular files only (``nonod._callerfs``); a user's
    profile only if no other user could have written it (:mod:`._owner`)."""
    try:
        opened = read_path(str(found.path), max_bytes=MAX_PROFILE_BYTES)
    except FileMissing:
        raise ProfileNotFound("no such profile file", source=found.source) from None
    except FileTooLarge:
        raise ProfileError(f"larger than {MAX_PROFILE_BYTES} bytes", source=found.source) from None
    except CallerFileError as exc:
        raise ProfileError(f"cannot read profile: {exc.reason}", source=found.source) from None
    if found.origin != "builtin":  # package data: whoever may change it changes nonod too
        check_writers(found.source, opened, reader=os.geteuid())
    return opened.data


def load_profile(
    name_or_path: str,
    *,
    user_dir: Path | None,
    builtin_dir: Path | None = None,
    data: bytes | None = None,
) -> Profile:
    """Find, parse and flatten a profile: the result has no ``extends`` left.

    ``data``: the bytes of ``name_or_path`` (a path) when the caller has read them already,
    as the daemon does for a profile file named by its client (read as that client).

    ``user_dir`` is the requesting user's profile directory (see :func:`user_profiles_dir`),
    or None to use built-in profiles only. A user profile that extends its own name extends
    the built-in profile of that name, so a user can adjust a built-in without copying it.
    """
    builtin = builtin_dir if builtin_dir is not None else builtin_profiles_dir()
    if is_registry_ref(name_or_path) and not os.path.lexists(name_or_path):
        raise ProfileNotFound(
            f"`{name_or_path}` names a profile from a nono registry pack; nonod has no pack "
            "store to fetch or verify it from",
            hint=pack_hint(name_or_path),
        )
    if _is_path(name_or_path):
        stem = Path(name_or_path).name.removesuffix(".json")
        root = _Found("path", stem, Path(name_or_path))
    else:
        root = _find(name_or_path, user_dir, builtin, skip_user=False)
    linearizer = _Linearizer(user_dir, builtin)
    if data is not None and root.origin == "path":
        linearizer.preloaded[linearizer.key(root)] = data
    profiles = linearizer.run(root)
    merged = profiles[0]
    for profile in profiles[1:]:
        merged = merge(merged, profile)
    merged = msgspec.structs.replace(merged, extends=None)
    if merged.meta.name is None:
        merged = msgspec.structs.replace(
            merged, meta=msgspec.structs.replace(merged.meta, name=root.name)
        )
    return merged


@final
class _Linearizer:
    """Orders a profile and its bases so each is merged once, bases before what extends them."""

    def __init__(self, user_dir: Path | None, builtin_dir: Path) -> None:
        self.user_dir = user_dir
        self.builtin_dir = builtin_dir
        self.order: list[Profile] = []
        self.done: set[tuple[Origin, str]] = set()
        self.preloaded: dict[tuple[Origin, str], bytes] = {}

    def run(self, root: _Found) -> list[Profile]:
        self.visit(root, [])
        return self.order

    def key(self, found: _Found) -> tuple[Origin, str]:
        if found.origin == "path":
            return ("path", os.path.abspath(found.path))
        return (found.origin, found.name)

    def visit(self, found: _Found, chain: list[_Found]) -> None:
        chain = [*chain, found]
        if len(chain) > MAX_EXTENDS_DEPTH + 1:
            raise ExtendsError(
                f"extends chain deeper than {MAX_EXTENDS_DEPTH}: " + _names(chain),
                source=chain[-2].source,
                path="$.extends",
            )
        data = self.preloaded.get(self.key(found))
        profile = parse_profile(_read(found) if data is None else data, found.source)
        for base_name in profile.bases():
            base = self.find_base(found, base_name)
            if any(self.key(base) == self.key(link) for link in chain):
                raise ExtendsError(
                    "extends cycle: " + _names([*chain, base]),
                    source=found.source,
                    path="$.extends",
                )
            if self.key(base) not in self.done:
                self.visit(base, chain)
        self.done.add(self.key(found))
        self.order.append(profile)

    def find_base(self, child: _Found, name: str) -> _Found:
        skip_user = child.origin == "user" and child.name == name
        try:
            return _find(name, self.user_dir, self.builtin_dir, skip_user=skip_user)
        except ProfileNotFound as exc:
            raise ExtendsError(
                f"extends `{name}`, which is neither a user nor a built-in profile (nor "
                "can it be: nonod does not install profiles from a nono registry pack)",
                source=child.source,
                path="$.extends",
                hint=f"{exc.hint}; a profile from a pack can be copied to "
                f"{self.user_dir or '~/.config/nono/profiles'}/{name}.json",
            ) from exc


def _names(chain: list[_Found]) -> str:
    return " -> ".join(f.name if f.origin != "path" else f.source for f in chain)


def list_profiles(
    user_dir: Path | None, *, builtin_dir: Path | None = None
) -> tuple[ProfileInfo, ...]:
    """Every profile name ``load_profile`` can find, sorted, with where it would load from."""
    builtin = builtin_dir if builtin_dir is not None else builtin_profiles_dir()
    builtins = _json_stems(builtin)
    users = _json_stems(user_dir) if user_dir is not None else {}
    out = [
        ProfileInfo(name=name, origin="user", path=str(path), shadows_builtin=name in builtins)
        for name, path in users.items()
    ]
    out += [
        ProfileInfo(name=name, origin="builtin", path=str(path))
        for name, path in builtins.items()
        if name not in users
    ]
    return tuple(sorted(out, key=lambda info: info.name))


def _json_stems(directory: Path) -> dict[str, Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return {}
    return {
        entry.stem: entry
        for entry in entries
        if entry.suffix == ".json" and PROFILE_NAME.fullmatch(entry.stem) and entry.is_file()
    }


# --- merging --------------------------------------------------------------------------------

S = TypeVar("S", bound=msgspec.Struct)


def merge(base: Profile, child: Profile) -> Profile:
    """``child`` applied over ``base``; the result keeps ``child``'s ``extends``."""
    merged = _merge_struct(base, child)
    merged = msgspec.structs.replace(
        merged,
        extends=child.extends,
        open_urls=child.open_urls if child.open_urls is not None else base.open_urls,
    )
    # `binary` and `nonod.binary` are one setting: the child's, in either spelling, wins.
    if child.binary is not None:
        merged = msgspec.structs.replace(
            merged, nonod=msgspec.structs.replace(merged.nonod, binary=None))
    elif child.nonod.binary is not None:
        merged = msgspec.structs.replace(merged, binary=None)
    return merged


def _merge_struct(base: S, child: S) -> S:
    values = {
        name: _merge_value(getattr(base, name), getattr(child, name))
        for name in child.__struct_fields__
    }
    merged = msgspec.structs.replace(base, **values)
    if isinstance(child, NetworkConfig) and isinstance(merged, NetworkConfig):
        return _merge_network(child, merged)  # type: ignore[return-value]
    if isinstance(child, WorkdirConfig) and child.access in (None, "none"):
        return base  # "none" in a child keeps the base's access, as nono does
    return merged


def _merge_network(child: NetworkConfig, merged: NetworkConfig) -> NetworkConfig:
    # network_profile: absent inherits, null clears, a name overrides (the generic rule
    # would keep the base's value for null).
    if child.network_profile is not UNSET:
        merged = msgspec.structs.replace(merged, network_profile=child.network_profile)
    # An explicit empty credentials list drops every inherited route, in both spellings.
    if child.credentials == () or child.proxy_credentials == ():
        merged = msgspec.structs.replace(
            merged,
            credentials=child.credentials or (),
            proxy_credentials=child.proxy_credentials or (),
        )
    return merged


def _identity(item: object) -> object:
    """What makes two array items the same: the value itself, or its JSON encoding for a
    struct (equal structs encode alike)."""
    return item if isinstance(item, str | int | float | bool) else msgspec.json.encode(item)


def _merge_value(base: object, child: object) -> object:
    if child is UNSET or child is None:
        return base
    if isinstance(child, Raw):
        return base if raw_is_empty(child) else child
    if isinstance(child, tuple):
        if not isinstance(base, tuple):
            return child
        out = list(base)
        seen = {_identity(item) for item in out}  # a set: a profile holds tens of thousands
        for item in child:
            key = _identity(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
        return tuple(out)
    if isinstance(child, dict):
        return {**base, **child} if isinstance(base, dict) else child
    if isinstance(child, msgspec.Struct) and type(base) is type(child):
        return _merge_struct(base, child)
    return child

