"""The built-in policy groups and network groups, read from ``nonod/data``.

The data files are ours (``groups.json``, ``network_groups.json``); only the group names follow
nono so that nono profiles keep working. They are decoded into strict Structs on every call:
they are small, and keeping no cache means there is no module-level state to go stale.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, final

import msgspec

from .._data import read_data
from ..errors import ProfileError
from . import _expand

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


def valid_host(host: str) -> bool:
    """An exact host name or ``*.suffix``: lower case letters, digits, dots and dashes.

    A wildcard needs at least two labels after ``*.`` so that ``*.com`` cannot open a whole TLD.
    """
    if len(host) > 253 or _HOST.fullmatch(host) is None:
        return False
    return not host.startswith("*.") or "." in host[2:]


class _Data(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


@final
class GroupEntry(_Data, frozen=True, kw_only=True):
    """One path of a group. ``file`` marks a single file (file rights only)."""

    path: str
    access: Literal["read", "write", "readwrite", "deny"]
    file: bool = False


@final
class PolicyGroup(_Data, frozen=True, kw_only=True):
    """A named set of grants or denials.

    ``required`` groups cannot be excluded; ``bypassable`` says whether ``bypass_protection``
    may lift one of its denials; ``platform`` limits the group to one system; ``unsupported``
    names a nono group whose behaviour nonod does not implement (and says why).
    """

    description: str
    entries: tuple[GroupEntry, ...] = ()
    required: bool = False
    bypassable: bool = True
    platform: Literal["linux", "macos"] | None = None
    unsupported: str | None = None


@final
class GroupCatalog(_Data, frozen=True, kw_only=True):
    """Every built-in group; ``base_groups`` apply to every profile."""

    format: Literal[1]
    base_groups: tuple[str, ...]
    groups: dict[str, PolicyGroup]
    comment: str = ""

    def __post_init__(self) -> None:
        for name in self.base_groups:
            if name not in self.groups:
                raise ValueError(f"base group `{name}` is not defined")
        for name, group in self.groups.items():
            if group.required and any(e.access != "deny" for e in group.entries):
                raise ValueError(f"required group `{name}` may only deny")
            if group.unsupported is not None and group.entries:
                raise ValueError(f"unsupported group `{name}` must not list entries")
            for entry in group.entries:
                try:
                    _expand.check_path(entry.path)
                except _expand.ExpansionError as exc:
                    raise ValueError(f"group `{name}`: {exc}") from None
        for name in self.required_groups():
            if name not in self.base_groups:
                raise ValueError(f"required group `{name}` must be a base group")

    def required_groups(self) -> tuple[str, ...]:
        return tuple(name for name, group in self.groups.items() if group.required)


@final
class NetworkGroup(_Data, frozen=True, kw_only=True):
    description: str
    hosts: tuple[str, ...]


@final
class NetworkProfile(_Data, frozen=True, kw_only=True):
    description: str
    groups: tuple[str, ...]


@final
class NetworkCatalog(_Data, frozen=True, kw_only=True):
    """Host groups, and the network profiles (``network.network_profile``) made of them."""

    format: Literal[1]
    groups: dict[str, NetworkGroup]
    profiles: dict[str, NetworkProfile]
    comment: str = ""

    def __post_init__(self) -> None:
        for name, group in self.groups.items():
            for host in group.hosts:
                if not valid_host(host):
                    raise ValueError(f"network group `{name}`: bad host `{host}`")
        for name, profile in self.profiles.items():
            for group_name in profile.groups:
                if group_name not in self.groups:
                    raise ValueError(f"network profile `{name}`: unknown group `{group_name}`")

    def hosts(self, profile: str) -> tuple[str, ...]:
        """The hosts of a network profile, in order, without duplicates."""
        out: list[str] = []
        for group_name in self.profiles[profile].groups:
            for host in self.groups[group_name].hosts:
                if host not in out:
                    out.append(host)
        return tuple(out)


def decode_groups(data: bytes, source: str) -> GroupCatalog:
    try:
        return msgspec.json.decode(data, type=GroupCatalog)
    except msgspec.DecodeError as exc:
        raise ProfileError(f"built-in group data is broken: {exc}", source=source) from exc


def decode_network(data: bytes, source: str) -> NetworkCatalog:
    try:
        return msgspec.json.decode(data, type=NetworkCatalog)
    except msgspec.DecodeError as exc:
        raise ProfileError(f"built-in network data is broken: {exc}", source=source) from exc


@functools.cache
def builtin_groups() -> GroupCatalog:
    """The built-in policy groups (``nonod/data/groups.json``): decoded once per process (they
    ship with the code, and the catalog is frozen)."""
    return decode_groups(read_data("groups.json"), "nonod/data/groups.json")


@functools.cache
def builtin_network() -> NetworkCatalog:
    """The built-in network groups and profiles (``nonod/data/network_groups.json``), decoded
    once per process."""
    return decode_network(read_data("network_groups.json"), "nonod/data/network_groups.json")
