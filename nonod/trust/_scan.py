"""Scanning a directory: find the files a policy includes, verify each, report every outcome.

Discovery walks the scan root and matches each file's root-relative path against the policy's
``includes``. It ignores ``.gitignore`` (ignoring a file must not exempt it from verification),
never matches ``*.bundle`` files, and skips only the directories in :data:`SKIP_DIRS`, unless a
pattern names a path inside one by its literal start.

Symlinks are resolved before anything is read. An included path whose real location is outside
the scan root is refused (it is not the project's file, and a mount over it would pin something
else), and so is a symlinked directory leading outside the root when an include pattern could
match beneath it; neither is followed. Included files are then opened from a descriptor of the
real root, one path component at a time with ``O_NOFOLLOW``, so a symlink swapped in after
resolution fails the open instead of redirecting it. The bytes read are the bytes verified.

The policy's ``files`` are verified after the walk, each like an included file
(:func:`_read_listed`): ``~`` is expanded with the home the caller gives (never the
reader's own), the path is resolved, the real file read once with no symlink on the way and its
``.bundle`` read beside the name as written. A listed file that is missing fails, as in nono
(which cannot digest it). The scan's byte cap (:data:`MAX_VERIFIED_BYTES`) counts them too.
Whether a verified listed file is pinned in a session is the daemon's decision (only where the
session could read that path anyway), not the scan's.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, final

from .._callerfs import CallerFileError, FileMissing, FileTooLarge, read_optional, read_path
from ._bundle import MAX_BUNDLE_BYTES, shown_name
from ._errors import BadBundle, TooLarge, TrustError, TrustPolicyError
from ._policy import EnforcementMode, Glob, TrustPolicy
from ._verify import (
    MULTI_SUBJECT_BUNDLE,
    VerifiedFile,
    VerifiedManifest,
    verify_file,
    verify_manifest,
    verify_subject,
)

SKIP_DIRS: Final = frozenset({".git", ".venv", "node_modules", "__pycache__", ".tox", "target"})
"""Directory names the scan never enters (wherever they are in the tree)."""
MAX_DEPTH: Final = 32
MAX_VERIFIED_BYTES: Final = 512 << 10
"""The verified files of one scan, together: their bytes are kept in the daemon's memory and
go to the session in its launch plan (one message of at most 1 MiB, ``_launcher.MAX_PLAN``).
Past it a file is refused (``too large to pin``) unread, however many names the tree gives
it (hard links, copies of one signed file): a larger file could never be pinned anyway."""

Status = Literal["verified", "unsigned", "failed"]

_LABELS: Final = MappingProxyType(
    {
        "trust.unsigned": "unsigned",
        "trust.bad_bundle": "bad bundle",
        "trust.digest_mismatch": "digest mismatch",
        "trust.untrusted_signer": "untrusted signer",
        "trust.bad_signature": "bad signature",
        "trust.blocked": "blocked",
        "trust.subject_mismatch": "subject mismatch",
        "trust.policy": "policy",
        "trust.too_large": "too large to pin",
        "trust.failed": "refused",
    }
)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class FileOutcome:
    """What the scan concluded about one included path.

    ``path`` is relative to the scan root, as the program sees it (for a file of the policy's
    ``files``: the absolute path, ``~`` expanded); ``real_path`` the absolute
    real path the verified bytes belong over (``None`` when the path was refused before being
    read). ``code``/``reason`` say why it is not verified; ``blocking`` whether it refuses the
    launch under the report's enforcement mode.
    """

    path: str
    status: Status
    blocking: bool
    code: str | None = None
    reason: str | None = None
    real_path: str | None = None
    verified: VerifiedFile | None = None
    listed: bool = False  # named by the policy's ``files`` (``path`` is then absolute)
    #: Checked only because the multi-subject bundle names it: no include pattern reached
    #: it (``trust sign --all`` does not sign it).
    subject_only: bool = False
    #: ``(st_dev, st_ino)`` of the real file as the walk found it (None: refused before):
    #: ``nonoctl trust sign --all`` signs only that file (``read_scanned``).
    identity: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        """A short cause for listings: ``verified``, ``unsigned``, ``digest mismatch``..."""
        if self.status == "verified":
            return "verified"
        return _LABELS.get(self.code or "", "refused")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TrustReport:
    """Every included file's outcome, and whether they allow a launch.

    In ``deny`` mode any unverified file blocks; in ``warn`` and ``audit`` modes only
    blocklisted files do (they always do). The daemon reports ``warnings`` (a project policy
    without a user policy is not authoritative) and turns each entry into an audit event.
    """

    root: str
    enforcement: EnforcementMode
    authoritative: bool
    entries: tuple[FileOutcome, ...]
    warnings: tuple[str, ...] = ()
    #: ``(st_dev, st_ino)`` of the root scanned, the same before and after the scan: what
    #: was verified is in that directory only (the session must run in it).
    root_identity: tuple[int, int] | None = None

    @property
    def blocking(self) -> tuple[FileOutcome, ...]:
        return tuple(entry for entry in self.entries if entry.blocking)

    @property
    def allowed(self) -> bool:
        return not self.blocking

    def failures(self) -> tuple[FileOutcome, ...]:
        return tuple(entry for entry in self.entries if entry.status != "verified")

    def pins(self) -> tuple[tuple[str, VerifiedFile], ...]:
        """``(real_path, verified)`` for each verified file: what to mount read-only, where."""
        return tuple(
            (entry.real_path, entry.verified)
            for entry in self.entries
            if entry.verified is not None and entry.real_path is not None
        )

    def check(self) -> TrustReport:
        """Return the report if it allows a launch; otherwise raise :class:`TrustError`
        naming each blocking file and why."""
        blocking = self.blocking
        if not blocking:
            return self
        lines = "\n".join(f"  {shown_name(entry.path)} ({entry.label})" for entry in blocking)
        hint = "`nonoctl trust list` shows each file's status and reason"
        raise TrustError(f"instruction files failed trust verification:\n{lines}", hint=hint)


@dataclass(frozen=True, slots=True)
class _Found:
    rel: str
    directory: str  # real path of the directory the entry was listed in
    entry_name: str
    real_rel: str | None  # path of the real file relative to the real root; None if refused
    refusal: str | None = None
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the real file


class _Matcher:
    def __init__(self, globs: tuple[Glob, ...]) -> None:
        self._globs = globs

    def matches(self, rel: str) -> bool:
        return any(glob.matches(rel) for glob in self._globs)

    def could_match_below(self, reldir: str) -> bool:
        return any(glob.could_match_below(reldir) for glob in self._globs)

    def names_below(self, reldir: str) -> bool:
        return any(glob.names_below(reldir) for glob in self._globs)

    def skips(self, name: str, rel: str) -> bool:
        """A directory of :data:`SKIP_DIRS` is not entered unless a pattern names a path in
        it by its literal start (``node_modules/tool/AGENTS.md``, not ``**/AGENTS.md``)."""
        return name in SKIP_DIRS and not self.names_below(rel)


def _resolved(path: str) -> str:
    """``os.path.realpath(path)``, or ``OSError(ELOOP)`` for a chain of symbolic links that
    Python's resolver cannot follow: it recurses once per link, and a chain of about a
    thousand (which anyone who may write the tree can make) raised ``RecursionError`` out of
    the scan, which answered the launch with no outcome at all. The kernel follows at most
    40 links in one lookup, so no program opens a name at the end of such a chain either."""
    try:
        return os.path.realpath(path)
    except RecursionError:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None


def _kernel_real(path: str) -> str:
    """The real path of what ``path`` names now, resolved by the kernel: opened as a path
    only (``O_PATH``: no driver's ``open``, no read permission asked), symbolic links
    followed by the kernel's rules (at most 40 in one lookup: ``ELOOP`` past them), and
    named by ``/proc/self/fd``. Raises ``OSError`` (``ENOENT`` when nothing is there).

    The walk resolves every symbolic link it meets with this, never ``os.path.realpath``:
    Python's resolver reads one link at a time with no bound on a chain, so each link of
    a chain of ``n`` cost ``n`` looks. A session that made five chains of 1,000 links in its
    working directory (a second's work) made every later launch's scan there take 45 s of
    the daemon's time, holding the interpreter's lock its event loop shares; and it reads
    a chain the kernel refuses to follow (the session cannot open its end either)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _walk(real_root: str, matcher: _Matcher, walk_root: str | None = None) -> Iterator[_Found]:
    """The candidates below ``real_root``, walked from ``walk_root`` (``/proc/self/fd/N``
    of the root opened once: every listing and look is of that directory, whatever its path
    names meanwhile); the names found are relative to the root, as the program sees them."""
    walk_root = walk_root or real_root
    root_info = os.stat(walk_root)
    # Directories are walked once as themselves and once more at most through symbolic
    # links, each way with its own record of what it saw: with one record, a link met
    # first (``a -> docs``) took the place of ``docs`` itself, so ``docs/...`` was matched
    # only under the link's name, which the policy's patterns need not include.
    visited = {(root_info.st_dev, root_info.st_ino)}
    via_links = {(root_info.st_dev, root_info.st_ino)}
    stack: list[tuple[str, str, int, bool]] = [(walk_root, "", 0, False)]
    while stack:
        directory, prefix, depth, linked = stack.pop()
        seen = via_links if linked else visited
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            if depth == 0:
                raise TrustError(f"cannot scan {real_root}: {exc.strerror}") from exc
            reldir = prefix.rstrip("/")
            if matcher.could_match_below(reldir):
                yield _Found(reldir, directory, "", None, f"cannot list directory: {exc.strerror}")
            continue
        pushed: list[tuple[str, str, int, bool]] = []
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                found = _symlink(entry, rel, directory, depth, real_root, matcher, via_links,
                                 walk_root)
                if isinstance(found, _Found):
                    yield found
                elif found is not None:
                    pushed.append((*found, True))
                continue
            if entry.is_dir(follow_symlinks=False):
                if matcher.skips(entry.name, rel):
                    continue
                info = entry.stat(follow_symlinks=False)
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
                if depth + 1 > MAX_DEPTH:
                    if matcher.could_match_below(rel):
                        yield _Found(rel, directory, entry.name, None, "directory nesting too deep")
                    continue
                pushed.append((entry.path, rel + "/", depth + 1, linked))
                continue
            if entry.name.endswith(".bundle") or not matcher.matches(rel):
                continue
            info = entry.stat(follow_symlinks=False)
            yield _Found(rel, directory, entry.name, os.path.relpath(entry.path, walk_root),
                         identity=(info.st_dev, info.st_ino))
        stack.extend(reversed(pushed))


def _symlink(
    entry: os.DirEntry[str],
    rel: str,
    directory: str,
    depth: int,
    real_root: str,
    matcher: _Matcher,
    visited: set[tuple[int, int]],
    walk_root: str | None = None,
) -> _Found | tuple[str, str, int] | None:
    """Resolve one symlink: a refusal, a directory to descend into, a candidate, or nothing.
    A target inside the root is looked at (and walked) from ``walk_root``, as the rest."""
    try:
        target = _kernel_real(entry.path)
    except OSError as exc:
        # Nothing there, a loop or a chain longer than the kernel follows (ELOOP), or a
        # target this caller may not look at: no program reads a file through this name,
        # nor one below it, so only a name a pattern includes is refused (as before, for
        # a loop or a dangling link).
        if entry.name.endswith(".bundle") or not matcher.matches(rel):
            return None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return _Found(rel, directory, entry.name, None, "symlink target does not exist")
        return _Found(rel, directory, entry.name, None,
                      f"symlink cannot be resolved: {exc.strerror}")
    inside = _inside(target, real_root)
    if inside and walk_root is not None:
        target = walk_root + target[len(real_root.rstrip("/")):]
    try:
        info = os.stat(target)
    except OSError:
        if not entry.name.endswith(".bundle") and matcher.matches(rel):
            return _Found(rel, directory, entry.name, None, "symlink target does not exist")
        return None
    if stat.S_ISDIR(info.st_mode):
        if matcher.skips(entry.name, rel):
            return None
        if not inside:
            if matcher.could_match_below(rel):
                return _Found(
                    rel, directory, entry.name, None, "symlinked directory leaves the scan root"
                )
            return None
        if (info.st_dev, info.st_ino) in visited or depth + 1 > MAX_DEPTH:
            return None
        visited.add((info.st_dev, info.st_ino))
        return (target, rel + "/", depth + 1)
    if entry.name.endswith(".bundle") or not matcher.matches(rel):
        return None
    if not inside:
        return _Found(rel, directory, entry.name, None, "symlink leaves the scan root")
    return _Found(rel, directory, entry.name, os.path.relpath(target, walk_root or real_root),
                  identity=(info.st_dev, info.st_ino))


def _read_file(real_root: str | int, real_rel: str, max_bytes: int) -> bytes:
    """The file's bytes, opened once beneath the root (its path, or the descriptor the scan
    opened it as) with no symlink on the way (``nonod._callerfs``: regular files only, never
    blocking, at most ``max_bytes``)."""
    try:
        return read_path(real_rel, max_bytes=max_bytes, symlinks="refuse",
                         beneath=real_root).data
    except FileMissing:
        raise TrustError("missing (nothing to verify)") from None
    except FileTooLarge:
        raise TooLarge(
            f"too large to pin: the verified files of a scan may hold {MAX_VERIFIED_BYTES} "
            f"bytes in all, {max_bytes} were left for this one") from None
    except CallerFileError as exc:
        raise TrustError(exc.reason) from None


def _read_bundle(real_root: str, directory: str, name: str,
                 root_fd: int | None = None) -> bytes | None:
    """The sidecar's bytes, or ``None`` if there is none (symlinks followed inside the root;
    ``directory`` relative to ``real_root``, read beneath ``root_fd`` when given)."""
    rel = os.path.relpath(os.path.join(directory, name), real_root)
    try:
        return read_optional(rel, max_bytes=MAX_BUNDLE_BYTES,
                             beneath=real_root if root_fd is None else root_fd)
    except FileTooLarge:
        raise BadBundle(f"{name} is too large; the limit is {MAX_BUNDLE_BYTES} bytes") from None
    except CallerFileError as exc:
        raise BadBundle(f"{name}: {exc.reason}") from None


def read_scanned(report: TrustReport, entry: FileOutcome, max_bytes: int) -> bytes:
    """Blocking: the bytes of the file the scan found for ``entry``, read from one open
    beneath the scan's root, with no symlink on the way, never blocking, a regular file
    only (``nonod._callerfs``), and only if it is still the file the walk found (its device
    and inode): ``trust sign --all`` opened each by name after the scan, and whatever was
    put there meanwhile (by a session writing the repository) was read: a FIFO (the command
    waited for good) or a link to another file (signed as this one). Raises
    :class:`TrustError`."""
    if entry.real_path is None or entry.identity is None:
        raise TrustError(f"{shown_name(entry.path)}: {entry.reason or 'refused by the scan'}")
    real_rel = os.path.relpath(entry.real_path, report.root)
    try:
        opened = read_path(real_rel, max_bytes=max_bytes, symlinks="refuse",
                           beneath=report.root)
    except FileTooLarge:
        raise TooLarge(f"{shown_name(entry.path)} is larger than {max_bytes} bytes") from None
    except CallerFileError as exc:
        raise TrustError(f"{shown_name(entry.path)}: {exc.reason}") from None
    if opened.identity != entry.identity:
        raise TrustError(f"{shown_name(entry.path)} was replaced since the scan found it",
                         hint="run the command again once nothing writes the repository")
    return opened.data


def _read_manifest(fd: int, policy: TrustPolicy) -> VerifiedManifest | TrustError | None:
    """nono's multi-subject bundle at the top of the root open as ``fd``, verified as a
    whole (symlinks followed inside the root, at most 1 MiB): None when there is none, the
    error when it is there and fails (it is then an outcome of its own, and nothing it
    names counts as signed by it)."""
    try:
        bundle = read_optional(MULTI_SUBJECT_BUNDLE, max_bytes=MAX_BUNDLE_BYTES, beneath=fd)
    except FileTooLarge:
        return BadBundle(f"{MULTI_SUBJECT_BUNDLE} is too large; the limit is "
                         f"{MAX_BUNDLE_BYTES} bytes", name=MULTI_SUBJECT_BUNDLE)
    except CallerFileError as exc:
        return BadBundle(f"{MULTI_SUBJECT_BUNDLE}: {exc.reason}", name=MULTI_SUBJECT_BUNDLE)
    if bundle is None:
        return None
    try:
        return verify_manifest(bundle, policy)
    except TrustPolicyError:
        raise
    except TrustError as exc:
        return exc


def _verify_signed(data: bytes, name: str, subject: str | None, bundle: bytes | None,
                   manifest: VerifiedManifest | None, policy: TrustPolicy) -> VerifiedFile:
    """A file (base name ``name``) against its own ``.bundle``, the multi-subject bundle's
    ``subject`` that is the same file, or both. With both, both must pass (the stricter
    wins): a stale or forged one of the two is never outvoted by the other."""
    if manifest is None or subject is None:
        return verify_file(data, name, bundle, policy)
    together = verify_subject(manifest, data, subject, policy)
    return together if bundle is None else verify_file(data, name, bundle, policy)


def _subjects_by_real_path(manifest: VerifiedManifest | None, real_root: str,
                           walk_root: str) -> dict[str, str]:
    """Each subject's real path inside the root, to its name: a file the walk finds under
    another name (through a symbolic link inside the root) is that subject too, as nono
    matches them (by canonical path)."""
    found: dict[str, str] = {}
    for path in manifest.subjects if manifest is not None else ():
        try:
            target = _kernel_real(os.path.join(walk_root, path))
        except OSError:  # the subject's own check says so (_subject_path)
            continue
        if _inside(target, real_root):
            found.setdefault(target, path)
    return found


def _subject_path(real_root: str, walk_root: str, path: str) -> tuple[str, str]:
    """A subject's real path, and that path relative to the root: refused when a symbolic
    link on its way leads out of the root (nono refuses it too)."""
    try:
        target = _kernel_real(os.path.join(walk_root, path))
    except FileNotFoundError:  # missing: the read says so, at the name as signed
        target = os.path.join(real_root, path)
    except OSError as exc:
        raise TrustError(f"{shown_name(path)}: named in {MULTI_SUBJECT_BUNDLE}, but its "
                         f"path cannot be resolved: {exc.strerror}") from None
    if not _inside(target, real_root):
        raise TrustError(f"{shown_name(path)}: named in {MULTI_SUBJECT_BUNDLE}, but a "
                         "symbolic link on its way leads out of the scan root")
    return target, os.path.relpath(target, real_root)


def _read_subject(fd: int, path: str, real_rel: str, max_bytes: int) -> bytes:
    """A subject's bytes (:func:`_read_file`); a missing one fails, as in nono (which
    cannot digest it)."""
    try:
        return _read_file(fd, real_rel, max_bytes)
    except TrustError as exc:
        if exc.code != "trust.failed":
            raise
        raise TrustError(f"{shown_name(path)}: {exc.message}") from None


def expand_listed(path: str, root: str, home: str | None) -> str:
    """A ``files`` entry as an absolute path: ``~`` and ``~/...`` from ``home`` (nono's
    expansion; a ``~`` with no home known is refused), a relative path from the scan root."""
    if path == "~" or path.startswith("~/"):
        if not home:
            raise TrustError(f"{shown_name(path)}: no home directory is known to expand '~'")
        path = home.rstrip("/") + path[1:]
    return os.path.normpath(os.path.join(root, path))


def _read_listed(path: str, real: str, max_bytes: int) -> tuple[bytes, bytes | None]:
    """A listed file's bytes (read once at its real path ``real`` with no symlink on the way)
    and its sidecar's (beside the name as listed, symlinks followed), or None."""
    try:
        data = read_path(real, max_bytes=max_bytes, symlinks="refuse").data
    except FileMissing:
        raise TrustError(f"{shown_name(path)}: missing (nothing to verify)") from None
    except FileTooLarge:
        raise TooLarge(
            f"too large to pin: the verified files of a scan may hold {MAX_VERIFIED_BYTES} "
            f"bytes in all, {max_bytes} were left for this one") from None
    except CallerFileError as exc:
        raise TrustError(f"{shown_name(path)}: {exc.reason}") from None
    try:
        bundle = read_optional(path + ".bundle", max_bytes=MAX_BUNDLE_BYTES)
    except FileTooLarge:
        raise BadBundle(f"{os.path.basename(path)}.bundle is too large; the limit is "
                        f"{MAX_BUNDLE_BYTES} bytes") from None
    except CallerFileError as exc:
        raise BadBundle(f"{os.path.basename(path)}.bundle: {exc.reason}") from None
    return data, bundle


def verify_tree(root: str | os.PathLike[str], policy: TrustPolicy, *,
                home: str | None = None,
                expect: tuple[int, int] | None = None) -> TrustReport:
    """Verify every file under ``root`` that ``policy`` includes, and every file its ``files``
    lists (``~`` is ``home``); report each outcome.

    Never raises for a file's failure: each one is an entry (``verified``, ``unsigned`` or
    ``failed`` with the error's code and message), blocking according to the enforcement mode.
    Raises :class:`TrustError` only when the root cannot be scanned, and
    :class:`TrustPolicyError` when files are included or listed but the policy trusts no keyed
    publisher. Call :meth:`TrustReport.check` to turn a blocked scan into the launch refusal.

    The root is opened once and walked and read through that descriptor, whatever its path
    names meanwhile. It must be ``expect`` (the ``(st_dev, st_ino)`` the policies were read
    from) if given, and what the path names again at the end: a directory renamed into its
    place (by whoever may rename in a directory above it) raises :class:`TrustError`.
    """
    try:
        real_root = _resolved(os.fspath(root))
    except OSError as exc:
        raise TrustError(f"cannot scan {os.fspath(root)}: {exc.strerror}") from None
    if not os.path.isdir(real_root):
        raise TrustError(f"scan root {os.fspath(root)} is not a directory")
    try:
        fd = os.open(real_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TrustError(f"cannot scan {os.fspath(root)}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        first = (info.st_dev, info.st_ino)
        if expect is not None and first != expect:
            raise TrustError(_replaced(root))
        report = _verify_open(real_root, fd, policy, home)
    finally:
        os.close(fd)
    if _identity(real_root, root) != first:
        raise TrustError(_replaced(root))
    return dataclasses.replace(report, root_identity=first)


def _verify_open(real_root: str, fd: int, policy: TrustPolicy,
                 home: str | None) -> TrustReport:
    """:func:`verify_tree`'s scan of the root ``real_root`` open as ``fd``."""
    walk_root = f"/proc/self/fd/{fd}"  # (this process's own: no permission is asked)
    matcher = _Matcher(policy.globs())
    enforcement = policy.enforcement
    if (policy.includes or policy.files) and not policy.keyed_publishers():
        raise TrustPolicyError(
            f"{policy.source} includes files but trusts no keyed publisher",
            hint="add your key with `nonoctl trust init` / `nonoctl trust export-key`",
        )

    def failed(path: str, error: TrustError, real_path: str | None,
               listed: bool = False, identity: tuple[int, int] | None = None) -> FileOutcome:
        status: Status = "unsigned" if error.code == "trust.unsigned" else "failed"
        blocking = enforcement == "deny" or error.code == "trust.blocked"
        return FileOutcome(
            path=path,
            status=status,
            blocking=blocking,
            code=error.code,
            reason=error.message,
            real_path=real_path,
            listed=listed,
            identity=identity,
        )

    entries: list[FileOutcome] = []
    kept = 0  # bytes of the verified files so far (:data:`MAX_VERIFIED_BYTES`)
    manifest = _read_manifest(fd, policy)
    if isinstance(manifest, TrustError):
        entries.append(failed(MULTI_SUBJECT_BUNDLE, manifest, None))
        manifest = None
    reached: set[str] = set()  # subjects of the multi-subject bundle the walk found
    by_real = _subjects_by_real_path(manifest, real_root, walk_root)
    for found in _walk(real_root, matcher, walk_root):
        subject = None
        if manifest is not None and found.rel in manifest.subjects:
            subject = found.rel
        elif found.real_rel is not None:
            subject = by_real.get(os.path.join(real_root, found.real_rel))
        if subject is not None:
            reached.add(subject)
        if found.real_rel is None:
            refusal = TrustError(f"{shown_name(found.rel)}: {found.refusal}")
            entries.append(failed(found.rel, refusal, None))
            continue
        real_path = os.path.join(real_root, found.real_rel)
        try:
            data = _read_file(fd, found.real_rel, MAX_VERIFIED_BYTES - kept)
            bundle = _read_bundle(walk_root, found.directory, found.entry_name + ".bundle",
                                  fd)
            verified = _verify_signed(data, found.entry_name, subject, bundle, manifest,
                                      policy)
        except TrustPolicyError:
            raise
        except TrustError as exc:
            if exc.code == "trust.failed":
                exc = TrustError(f"{shown_name(found.rel)}: {exc.message}")
            entries.append(failed(found.rel, exc, real_path, identity=found.identity))
            continue
        kept += len(data)
        entries.append(FileOutcome(path=found.rel, status="verified", blocking=False,
                                   real_path=real_path, verified=verified,
                                   identity=found.identity))
    # Every subject of the multi-subject bundle is verified, as nono does, whether or not
    # an include pattern reaches it (those the walk found are done).
    done = {entry.real_path for entry in entries if entry.real_path is not None}
    for path in manifest.subjects if manifest is not None else ():
        if path in reached or manifest is None:
            continue
        subject_real: str | None = None
        try:
            subject_real, real_rel = _subject_path(real_root, walk_root, path)
            data = _read_subject(fd, path, real_rel, MAX_VERIFIED_BYTES - kept)
            bundle = _read_bundle(walk_root, walk_root, path + ".bundle", fd)
            verified = _verify_signed(data, os.path.basename(path), path, bundle, manifest,
                                      policy)
        except TrustPolicyError:
            raise
        except TrustError as exc:
            entries.append(dataclasses.replace(failed(path, exc, subject_real),
                                               subject_only=True))
            continue
        if subject_real in done:  # the same real file, verified under another name
            continue
        done.add(subject_real)
        kept += len(data)
        entries.append(FileOutcome(path=path, status="verified", blocking=False,
                                   real_path=subject_real, verified=verified,
                                   subject_only=True))
    # A file already verified (included, signed together, or listed under another name)
    # is not read again: one outcome and one pin per real file.
    done = {entry.real_path for entry in entries if entry.real_path is not None}
    for listed in policy.files:
        shown = listed
        listed_real: str | None = None
        try:
            shown = expand_listed(listed, real_root, home)
            try:
                listed_real = _resolved(shown)
            except OSError as exc:
                raise TrustError(f"{shown_name(shown)}: {exc.strerror}") from None
            if listed_real in done:
                continue
            done.add(listed_real)
            data, bundle = _read_listed(shown, listed_real, MAX_VERIFIED_BYTES - kept)
            verified = verify_file(data, os.path.basename(shown), bundle, policy)
        except TrustPolicyError:
            raise
        except TrustError as exc:
            entries.append(failed(shown, exc, listed_real, listed=True))
            continue
        kept += len(data)
        entries.append(FileOutcome(path=shown, status="verified", blocking=False,
                                   real_path=listed_real, verified=verified, listed=True))
    return TrustReport(
        root=real_root,
        enforcement=enforcement,
        authoritative=policy.authoritative,
        entries=tuple(entries),
        warnings=policy.warnings,
    )


def _identity(real_root: str, root: str | os.PathLike[str]) -> tuple[int, int]:
    try:
        info = os.stat(real_root)
    except OSError as exc:
        raise TrustError(f"cannot scan {os.fspath(root)}: {exc.strerror}") from None
    return info.st_dev, info.st_ino


def _replaced(root: str | os.PathLike[str]) -> str:
    return (f"the working directory {os.fspath(root)} was replaced while its instruction "
            "files were verified (renamed in a directory above it)")
