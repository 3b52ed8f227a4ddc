"""Finding, reading and verifying a workdir's trust policies: the one loader of nonod and nonoctl.

Two levels: the user-level policy (``<nono config dir>/trust-policy.json``, see
``nonod._xdg``) and the project policy (``trust-policy.json`` at the top of the workdir),
each with its ``.bundle`` beside it. :func:`read_policy_files` reads them by the rules of
``nonod._callerfs`` (opened once, ``O_NONBLOCK``, regular files only, bounded; the project's
resolved beneath the workdir, so a symlink cannot lead out of it) with the identity of the
calling thread: the daemon calls it acting as its caller. The user-level policy is used only
if no user but the reader and root could have written, replaced or removed it
(``nonod._writers``). :func:`load_policies` verifies and merges them. Who anchors the
user-level policy is the one difference between the two programs and is a parameter: the
daemon passes the publishers made from its own keys, the CLI (which has no keys) checks the
policy against its own publishers, for consistency only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._callerfs import CallerFileError, FileMissing, acting_uid, read_optional, read_path
from .._writers import other_writers
from ._errors import TrustPolicyError
from ._limits import MAX_BUNDLE_BYTES, MAX_POLICY_BYTES, POLICY_FILE_NAME

# The parser and the verifier are imported where a policy was found: most launches find none.
if TYPE_CHECKING:
    from ._policy import Publisher, TrustPolicy

_READ_HINT = "a trust policy and its bundle must be regular files you can read"
_OPEN_HINT = "the working directory must be a directory you can enter"
_WRITERS_HINT = ("keep your user-level trust policy in a directory only you (or root) may "
                 "write")

#: Given the user-level policy as declared (not yet verified), the publishers that may sign it.
Anchors = Callable[["TrustPolicy"], Sequence["Publisher"]]


@dataclass(frozen=True)
class PolicyFiles:
    """The bytes found at each level (None: no such file) and where they were looked for."""

    user_path: Path | None
    project_path: Path | None
    user: bytes | None = None
    user_bundle: bytes | None = None
    project: bytes | None = None
    project_bundle: bytes | None = None
    #: ``(st_dev, st_ino)`` of the workdir whose project policy was looked for, the same
    #: before and after the look (None: no workdir). What the daemon decides from the
    #: policies holds for that directory only: the session must run in it
    #: (``LaunchRequest.cwd_identity``), not in one renamed into its place since.
    workdir_identity: tuple[int, int] | None = None

    @property
    def found(self) -> bool:
        return self.user is not None or self.project is not None

    def looked_in(self) -> str:
        """Where the policies were looked for, for "none found" messages and audit records."""
        places = [str(p) for p in (self.user_path, self.project_path) if p is not None]
        return " and ".join(places) or "nowhere"


def _read(path: Path, *, max_bytes: int, beneath: str | int | None = None) -> bytes | None:
    name = path.name if beneath is not None else str(path)
    try:
        return read_optional(name, max_bytes=max_bytes, beneath=beneath)
    except CallerFileError as exc:
        raise TrustPolicyError(f"cannot read {path}: {exc.reason}", hint=_READ_HINT) from None


def _read_own(path: Path) -> bytes | None:
    """The user-level policy's bytes (None: there is none), read only if no user but the
    reader and root could have written it, or replaced or removed it in its directory
    (``nonod._writers``): it is signed, so no one else can forge it, but whoever may write
    there can take it away or put an older signed version back."""
    reader = acting_uid()
    try:
        opened = read_path(str(path), max_bytes=MAX_POLICY_BYTES)
    except FileMissing:
        found = _absent_writers(path, reader)
        if found is not None:
            raise TrustPolicyError(
                f"no user-level trust policy at {path}, and {found}: another user could have "
                "removed it", hint=_WRITERS_HINT) from None
        return None
    except CallerFileError as exc:
        raise TrustPolicyError(f"cannot read {path}: {exc.reason}", hint=_READ_HINT) from None
    found_file = other_writers(opened.real or os.path.realpath(path), opened.uid, opened.gid,
                               opened.mode, reader=reader)
    if found_file is not None:
        why, itself = found_file
        raise TrustPolicyError(
            f"{path} is not used: {why}, so another user could have "
            f"{'written' if itself else 'replaced'} it", hint=_WRITERS_HINT)
    return opened.data


def _absent_writers(path: Path, reader: int) -> str | None:
    """Who besides ``reader`` and root could have removed ``path`` (or a missing directory
    on the way to it): the nearest directory above that exists, and those above its real
    path."""
    directory = path.parent
    while True:
        try:
            info = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            if directory == directory.parent:
                return None
            directory = directory.parent
            continue
        except OSError as exc:
            return f"{directory} cannot be checked ({exc.strerror})"
        found = other_writers(os.path.realpath(directory), info.st_uid, info.st_gid,
                              info.st_mode, reader=reader)
        return None if found is None else found[0]


def user_policy_path(config_dir: Path) -> Path:
    """The user-level policy in a nono config directory (``nonod._xdg``)."""
    return config_dir / POLICY_FILE_NAME


def read_policy_files(user_path: Path | None, workdir: str | None) -> PolicyFiles:
    """Blocking: read the user-level policy at ``user_path`` and the project policy at the
    top of ``workdir`` (either may be skipped with None), as this thread may. The workdir is
    opened once and its policy read there (``PolicyFiles.workdir_identity`` says which
    directory: one renamed into its place afterwards, by whoever may rename in a directory
    above it, is not the one the policies hold for)."""
    project_path = Path(workdir) / POLICY_FILE_NAME if workdir is not None else None
    user = user_bundle = project = project_bundle = None
    identity = None
    if user_path is not None:
        user = _read_own(user_path)
        if user is not None:
            user_bundle = _read(user_path.with_name(user_path.name + ".bundle"),
                                max_bytes=MAX_BUNDLE_BYTES)
    if project_path is not None and workdir is not None:
        root = open_workdir(workdir)
        try:  # both read in the directory opened, whatever its path names meanwhile
            identity = directory_identity(root)
            project = _read(project_path, max_bytes=MAX_POLICY_BYTES, beneath=root)
            if project is not None:
                project_bundle = _read(project_path.with_name(project_path.name + ".bundle"),
                                       max_bytes=MAX_BUNDLE_BYTES, beneath=root)
        finally:
            os.close(root)
    return PolicyFiles(user_path=user_path, project_path=project_path, user=user,
                       user_bundle=user_bundle, project=project, project_bundle=project_bundle,
                       workdir_identity=identity)


def open_workdir(workdir: str) -> int:
    """Blocking: a descriptor (``O_PATH``) of the directory ``workdir`` names now, opened with
    this thread's identity (TrustPolicyError if it cannot be)."""
    try:
        return os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TrustPolicyError(f"cannot open the working directory {workdir}: "
                               f"{exc.strerror or exc}", hint=_OPEN_HINT) from None


def directory_identity(fd: int) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the directory open as ``fd``."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def self_anchored(declared: TrustPolicy) -> Sequence[Publisher]:
    """Anchors for a policy checked against its own publishers (consistency, not authority)."""
    return declared.publishers


def load_policies(files: PolicyFiles, *, user_anchors: Anchors) -> TrustPolicy | None:
    """Verify each level against its anchor and merge them; None when neither exists.

    The user-level policy must be signed by one of ``user_anchors(declared)``. A project
    policy must be signed by a publisher of the user-level policy; without one it is checked
    against its own publishers, which proves only consistency, and the merge marks it not
    authoritative.
    """
    from ._policy import merge_policies, parse_policy
    from ._verify import load_policy

    user = None
    if files.user is not None and files.user_path is not None:
        source = str(files.user_path)
        declared = parse_policy(files.user, source=source)
        user = load_policy(files.user, files.user_bundle, trusted=user_anchors(declared),
                           name=files.user_path.name)
    project = None
    if files.project is not None and files.project_path is not None:
        trusted: TrustPolicy | Sequence[Publisher] = user if user is not None else (
            parse_policy(files.project, source=str(files.project_path)).publishers)
        project = load_policy(files.project, files.project_bundle, trusted=trusted,
                              name=files.project_path.name)
    if user is None and project is None:
        return None
    return merge_policies(user, project)
