"""Folding: from every path a trace touched to the few grants a person would write.

The rule, applied in this order to each path (after canonicalisation: symlinks resolved on the
host, ``..`` removed, records of the same file merged):

1. **Learn's own files** (the trace directory) are dropped.
2. **Denied paths** (the always-on deny groups, and whatever the daemon hides) that the program
   touched, successfully or not, go to ``denied_touched``. They are never proposed.
3. **Only successful uses count.** A path that was only looked at (``stat``, ``access``,
   ``readlink``) or that every attempt failed on (a missing file probed on a search path)
   needs no grant. A write the recording session refused (a read-only system tree, host
   permissions) is reported in ``skipped``. So is a write the trace calls successful on a
   path the recording session saw read-only (``recording``: its grants): the kernel never
   made it, so it is a line the program wrote into the trace, or a link it left behind that
   now leads there, and the program is not proposed what it could not do while learning.
4. **What each use needs.** Reading or executing a file needs read on it; writing needs
   write; listing or opening a directory needs read on the directory; creating, removing or
   renaming an entry needs write on the directory that holds it. A need on a path that no
   longer exists (a temporary file) moves to its parent.
5. **Coverage.** A need inside the working directory becomes ``workdir.access``. A need a
   base group already grants (``system_read_linux`` ...) is ``covered_by`` that group. A need an
   optional built-in group grants (``python_runtime``, ``user_caches_linux`` ...) is covered by
   it and the group is added to ``groups.include``. ``/proc`` and ``/dev`` are the sandbox's own.
6. **Directories.** Of what is left, a directory becomes a directory grant when the program
   listed it, changed entries in it, or used at least :data:`FOLD_MIN_ENTRIES` distinct
   entries directly in it (files, or subdirectories that hold something it used); the grant
   takes the union of the access of everything under it, and what it covers is not listed
   again. This repeats upwards, deepest first.
7. **Never too broad.** ``/``, a top-level directory (``/etc``, ``/home`` ...), ``$HOME`` and
   its ancestors never become grants, not even the working directory: their files are
   granted one by one and a listing of them is reported in ``skipped``.
8. Whatever remains is a single-file grant.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Final, final

import msgspec

from ..policy import Access, Denial, Grant
from ..profiles import Profile, ResolveContext, builtin_groups, parse_profile, resolve
from ._trace import Observations, PathRecord, Use

#: Distinct entries used directly in one directory before it becomes a directory grant.
FOLD_MIN_ENTRIES: Final = 3
#: Paths the sandbox provides itself in every session.
SANDBOX_TREES: Final = ("/proc", "/dev")
#: Failures that mean "the recording session (or the host) said no", as opposed to a probe.
_REFUSALS: Final = frozenset({"EACCES", "EPERM", "EROFS"})
_GRANTING: Final = Use.READ | Use.WRITE | Use.EXEC | Use.LIST | Use.CREATE | Use.REMOVE
_CHANGES: Final = Use.WRITE | Use.CREATE | Use.REMOVE


class ProposedGrant(msgspec.Struct, frozen=True, kw_only=True):
    """One filesystem entry of the proposal. ``why`` says which rule produced it."""

    path: str
    access: Access
    is_file: bool
    why: str


class Covered(msgspec.Struct, frozen=True, kw_only=True):
    """A path the program used that needs no entry of its own: ``covered_by`` is a group name,
    ``workdir`` or ``sandbox``."""

    path: str
    access: Access
    covered_by: str


class DeniedTouch(msgspec.Struct, frozen=True, kw_only=True):
    """A denied path the program tried to use; ``uses`` are the kinds of use tried."""

    path: str
    denied_by: str
    uses: tuple[str, ...]


class Skipped(msgspec.Struct, frozen=True, kw_only=True):
    """A path the program used that the proposal leaves out, and why."""

    path: str
    reason: str


class Folded(msgspec.Struct, frozen=True, kw_only=True):
    workdir_access: Access | None
    groups: tuple[str, ...]
    grants: tuple[ProposedGrant, ...]
    covered: tuple[Covered, ...]
    denied_touched: tuple[DeniedTouch, ...]
    skipped: tuple[Skipped, ...]


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _union(a: Access | None, b: Access) -> Access:
    if a is None:
        return b
    reads, writes = a.reads or b.reads, a.writes or b.writes
    if reads and writes:
        return Access.READWRITE
    return Access.READ if reads else Access.WRITE


def _covers(grant: Grant, path: str, access: Access, *, is_dir: bool) -> bool:
    if grant.is_file:
        if is_dir or grant.path != path:
            return False
    elif not _under(path, grant.path):
        return False
    return (not access.reads or grant.access.reads) and (not access.writes
                                                         or grant.access.writes)


@final
class Coverage:
    """What the built-in groups grant and deny for one user, to fold needs into.

    ``base`` maps each base group that grants something to its grants (always in force);
    ``optional`` maps every other group of this platform to its grants (in force once
    included); ``denials`` are the base denials. Built by resolving one small profile per
    group, so paths are expanded and canonical exactly as a real profile's would be.
    """

    def __init__(self, *, home: str, workdir: str, base: dict[str, tuple[Grant, ...]],
                 optional: dict[str, tuple[Grant, ...]], denials: tuple[Denial, ...]) -> None:
        self.home = home
        self.workdir = workdir
        self.base = base
        self.optional = optional
        self.denials = denials

    @classmethod
    def build(cls, ctx: ResolveContext) -> Coverage:
        catalog = builtin_groups()
        granting_base = [name for name in catalog.base_groups
                         if not catalog.groups[name].required]
        base: dict[str, tuple[Grant, ...]] = {}
        denials: tuple[Denial, ...] = ()
        for name in granting_base:
            others = [other for other in granting_base if other != name]
            policy = resolve(_probe({"groups": {"exclude": others}}), ctx)
            base[name] = tuple(g for g in policy.grants if g.source == f"group:{name}")
            denials = policy.denials
        optional: dict[str, tuple[Grant, ...]] = {}
        for name, group in sorted(catalog.groups.items()):
            if (name in catalog.base_groups or group.unsupported is not None
                    or group.platform not in (None, ctx.platform)):
                continue
            policy = resolve(_probe({"groups": {"include": [name],
                                                "exclude": granting_base}}), ctx)
            grants = tuple(g for g in policy.grants if g.source == f"group:{name}")
            if grants:
                optional[name] = grants
        return cls(home=os.path.realpath(ctx.home), workdir=os.path.realpath(ctx.workdir),
                   base=base, optional=optional, denials=denials)

    def covering_group(self, path: str, access: Access, *,
                       is_dir: bool) -> tuple[str, bool] | None:
        """(group, is_base) of the most specific group grant covering the need, base groups
        first; None if no group covers it."""
        for table, is_base in ((self.base, True), (self.optional, False)):
            best: tuple[int, str] | None = None
            for name, grants in table.items():
                for grant in grants:
                    if _covers(grant, path, access, is_dir=is_dir):
                        depth = len(grant.path)
                        if best is None or depth > best[0]:
                            best = (depth, name)
            if best is not None:
                return best[1], is_base
        return None

    def too_broad(self, path: str) -> bool:
        """``/``, a top-level directory, ``$HOME`` or one of its ancestors."""
        return path == "/" or path.count("/") == 1 or _under(self.home, path)


def _probe(extra: dict[str, object]) -> Profile:
    data = msgspec.json.encode({"meta": {"name": "learn-probe"}, **extra})
    return parse_profile(data, "learn")


def _use_names(use: Use) -> tuple[str, ...]:
    return tuple((member.name or "").lower() for member in Use if member and member in use)


def canonical_records(obs: Observations) -> dict[str, PathRecord]:
    """The observations keyed by canonical path (symlinks resolved on the host), merged."""
    merged: dict[str, PathRecord] = {}
    for raw, record in obs.paths.items():
        # /proc and /dev are the session's own: the host's symlinks there (/proc/self) say
        # nothing about them.
        provided = any(_under(raw, tree) for tree in SANDBOX_TREES)
        path = os.path.normpath(raw) if provided else os.path.realpath(raw)
        known = merged.get(path)
        if known is None:
            merged[path] = PathRecord(record.ok, record.failed, set(record.errors))
        else:
            known.ok |= record.ok
            known.failed |= record.failed
            known.errors |= record.errors
    return merged


def _shebang(path: str) -> str | None:
    """The interpreter a script names on its ``#!`` line (the kernel opens it, strace does
    not see an open for it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words or not words[0].startswith(b"/"):
        return None
    return os.path.realpath(os.fsdecode(words[0]))


class _Need(msgspec.Struct, frozen=True):
    path: str
    access: Access
    is_dir: bool
    why: str


def fold(
    obs: Observations,
    coverage: Coverage,
    *,
    ignore: Sequence[str] = (),
    hidden: Sequence[Denial] = (),
    recording: Sequence[Grant] = (),
) -> Folded:
    """Apply the module's rule to ``obs``. ``ignore`` are learn's own paths; ``hidden`` are
    extra denials (the daemon's files) reported like the deny groups'; ``recording`` the
    grants the program ran under (rule 3)."""
    records = canonical_records(obs)
    denials = (*coverage.denials, *hidden)
    denied: list[DeniedTouch] = []
    skipped: list[Skipped] = []
    needs: list[_Need] = []
    for path, record in sorted(records.items()):
        if any(_under(path, os.path.realpath(i)) for i in ignore):
            continue
        denial = next((d for d in denials if _under(path, d.path)), None)
        if denial is not None:
            denied.append(DeniedTouch(path=path, denied_by=denial.source,
                                      uses=_use_names(record.any)))
            continue
        refused = record.errors & _REFUSALS
        if refused and record.failed & _CHANGES and not record.ok & _CHANGES:
            skipped.append(Skipped(path=path, reason="writing was refused while learning ("
                                   + ", ".join(sorted(refused)) + ")"))
        ok = record.ok
        if ok & _CHANGES and _read_only(path, recording):
            ok &= ~_CHANGES
            skipped.append(Skipped(path=path, reason="read-only while learning, so never "
                                   "written: the trace's word for it is the program's"))
        needs.extend(_needs_of(path, ok))
    return _Folder(coverage, needs, denied, skipped).run()


def _read_only(path: str, recording: Sequence[Grant]) -> bool:
    """Whether the most specific of ``recording``'s grants that holds ``path`` is read-only
    (False where none does: the sandbox's own trees, the private temporary directories)."""
    holding = [g for g in recording
               if g.path == path or (not g.is_file and _under(path, g.path))]
    if not holding:
        return False
    return not max(holding, key=lambda g: len(g.path)).access.writes


def _needs_of(path: str, ok: Use) -> Iterable[_Need]:
    if not ok & _GRANTING:
        return
    exists = os.path.lexists(path)
    is_dir = exists and os.path.isdir(path)
    if ok & (Use.CREATE | Use.REMOVE):
        parent = os.path.dirname(path)
        yield _Need(parent, Access.WRITE, True, "entries created or removed")
    if is_dir:
        if ok & (Use.LIST | Use.READ):
            yield _Need(path, Access.READ, True, "listed")
        if ok & Use.WRITE:
            yield _Need(path, Access.WRITE, True, "written")
        return
    access: Access | None = None
    if ok & (Use.READ | Use.EXEC | Use.LIST):
        access = Access.READ
    if ok & Use.WRITE:
        access = _union(access, Access.WRITE)
    if access is None:
        return
    if ok & Use.EXEC:
        interpreter = _shebang(path)
        if interpreter is not None:
            yield _Need(interpreter, Access.READ, False, "script interpreter")
    yield _Need(path, access, False, "used")


@final
class _Folder:
    def __init__(self, coverage: Coverage, needs: list[_Need], denied: list[DeniedTouch],
                 skipped: list[Skipped]) -> None:
        self.cov = coverage
        self.needs = needs
        self.denied = denied
        self.skipped = skipped
        self.covered: dict[tuple[str, str], Access] = {}
        self.groups: set[str] = set()
        self.workdir_access: Access | None = None

    def run(self) -> Folded:
        cov = self.cov
        workdir_usable = not cov.too_broad(cov.workdir)
        # Needs on paths that are gone move up to the nearest existing directory.
        candidates: dict[str, tuple[Access, bool, set[str]]] = {}
        for need in self.needs:
            path, is_dir = need.path, need.is_dir
            while not os.path.lexists(path) and path != "/":
                path, is_dir = os.path.dirname(path), True
            if workdir_usable and _under(path, cov.workdir):
                self.workdir_access = _union(self.workdir_access, need.access)
                self._cover(path, need.access, "workdir")
                continue
            if _under(path, "/proc") or _under(path, "/dev"):
                self._cover(path, need.access, "sandbox")
                continue
            group = cov.covering_group(path, need.access, is_dir=is_dir)
            if group is not None:
                name, is_base = group
                if not is_base:
                    self.groups.add(name)
                self._cover(path, need.access, name)
                continue
            known = candidates.get(path)
            if known is None:
                candidates[path] = (need.access, is_dir, {need.why})
            else:
                candidates[path] = (_union(known[0], need.access), known[1] or is_dir,
                                    known[2] | {need.why})
        for path in [p for p in candidates if "$" in p]:
            # A profile reads `$` as the start of a variable; such a path cannot be written.
            del candidates[path]
            self.skipped.append(Skipped(path=path, reason="contains `$`, which a profile "
                                        "would read as a variable"))
        grants = self._collapse(candidates)
        if workdir_usable and self.workdir_access is None:
            # The session starts in the working directory, so it must at least be visible.
            self.workdir_access = Access.READ
        covered = tuple(Covered(path=p, access=a, covered_by=by)
                        for (p, by), a in sorted(self.covered.items()))
        return Folded(
            workdir_access=self.workdir_access,
            groups=tuple(sorted(self.groups)),
            grants=tuple(sorted(grants, key=lambda g: (g.path, g.is_file))),
            covered=covered,
            denied_touched=tuple(self.denied),
            skipped=tuple(sorted(set(self.skipped), key=lambda s: (s.path, s.reason))),
        )

    def _cover(self, path: str, access: Access, by: str) -> None:
        key = (path, by)
        self.covered[key] = _union(self.covered.get(key), access)

    def _collapse(self, candidates: dict[str, tuple[Access, bool, set[str]]]
                  ) -> list[ProposedGrant]:
        cov = self.cov
        # Directory needs on too-broad directories cannot be granted.
        for path, (access, is_dir, _) in list(candidates.items()):
            if is_dir and cov.too_broad(path):
                del candidates[path]
                if access.writes:
                    self.skipped.append(Skipped(
                        path=path, reason="creates or removes entries directly in a directory "
                        "too broad to grant ($HOME, a top-level directory); existing files "
                        "it wrote are granted one by one"))
                if access.reads:
                    self.skipped.append(Skipped(
                        path=path, reason="listed (or used entries now gone in) a directory "
                        "too broad to grant"))
        # Count, for every directory, the distinct direct entries that lead to a need.
        entries: dict[str, set[str]] = {}
        for path in candidates:
            child = path
            parent = os.path.dirname(child)
            while child != "/" and not cov.too_broad(parent):
                entries.setdefault(parent, set()).add(child)
                child, parent = parent, os.path.dirname(parent)
        dirs: dict[str, tuple[Access, set[str]]] = {
            path: (access, whys) for path, (access, is_dir, whys) in candidates.items()
            if is_dir
        }
        for directory, children in entries.items():
            if len(children) >= FOLD_MIN_ENTRIES and directory not in dirs:
                dirs[directory] = (Access.READ, {f"{len(children)} entries used"})
        # Deepest first: a directory grant takes in everything below it.
        granted: dict[str, tuple[Access, set[str]]] = {}
        for directory in sorted(dirs, key=lambda p: -p.count("/")):
            access, whys = dirs[directory]
            access = _union(access, _access_below(directory, candidates))
            for inner in [g for g in granted if _under(g, directory) and g != directory]:
                access = _union(access, granted.pop(inner)[0])
            granted[directory] = (access, whys)
        out = [ProposedGrant(path=p, access=a, is_file=False, why=", ".join(sorted(w)))
               for p, (a, w) in granted.items()]
        for path, (access, is_dir, whys) in candidates.items():
            if is_dir or any(_under(path, g) for g in granted):
                continue
            out.append(ProposedGrant(path=path, access=access, is_file=True,
                                     why=", ".join(sorted(whys))))
        return out


def _access_below(directory: str, candidates: dict[str, tuple[Access, bool, set[str]]]
                  ) -> Access:
    access: Access | None = None
    for path, (need, _, _) in candidates.items():
        if _under(path, directory):
            access = _union(access, need)
    return access if access is not None else Access.READ
