"""The session's filesystem view: a new root built from the policy's grants.

``compile_mounts`` runs in the parent: it looks at the host (what exists, what is a file, where
symlinks are) and returns a flat, ordered tuple of ``MountOp``. ``apply_mounts`` runs in the
launcher child, inside fresh user and mount namespaces, and only executes those operations:

1. the host root goes private, a tmpfs becomes the new root, the host moves to ``/oldroot``;
2. each grant is bind-mounted at its own path (read-only unless it grants write), parents first;
3. files that could run code outside the sandbox later (``.git/hooks``, rc files...) are
   re-bound read-only inside writable grants;
4. denied paths under visible grants are masked: an empty mode-000 tmpfs over a directory, an
   empty mode-000 file over a file, so access fails with EACCES; a denied path that does not
   exist yet but could be created (its parent is writable) gets a placeholder first, so that
   what the program creates later is masked too;
5. fresh ``/proc`` (own pid namespace), a minimal ``/dev``, private ``/tmp`` and ``/dev/shm``;
6. the host tree is detached and the new root made read-only.

Paths not granted do not exist in the session at all (ENOENT), which also closes what Landlock
does not check: ``stat``, ``chmod``, ``chown``, ``utime``, ``setxattr``, pathname sockets.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence

import msgspec

from ..policy import Denial, Grant, ResolvedPolicy
from . import _libc

BIND_DIR = 1
BIND_FILE = 2
TMPFS = 3
SYMLINK = 4
READONLY = 5
MASK_DIR = 6
MASK_FILE = 7
PIN = 8  # a verified file's bytes (plan.pinned[int(source)]) mounted read-only over target

OLD = "/oldroot"
PIN_DIR = "/.nono-pins"
EMPTY_FILE = "/.nono-empty"
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# What the sandbox's own /dev provides: grants of these are already satisfied.
PROVIDED_DEV = frozenset({*(f"/dev/{n}" for n in DEV_NODES), "/dev/pts", "/dev/ptmx",
                          "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"})
# Files that run code outside the sandbox when someone later uses the directory.
PERSISTENCE_NAMES = (".git/hooks", ".git/config", ".gitmodules", ".envrc", ".vscode", ".idea")
HOME_RC_FILES = (
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc",
    ".zprofile", ".zshenv", ".zlogin", ".config/fish", ".gitconfig", ".config/git",
    ".config/autostart", ".config/systemd", ".local/share/applications", ".ssh/rc",
)


class MountOp(msgspec.Struct, frozen=True, array_like=True):
    kind: int
    target: str
    source: str = ""
    writable: bool = False
    create: bool = False  # MASK_*: make a placeholder at target first
    device: bool = False  # BIND_*: device nodes stay usable (no nodev)


class MountPlan(msgspec.Struct, frozen=True, kw_only=True):
    ops: tuple[MountOp, ...]
    masked: tuple[str, ...]  # denials that are masked in this session
    skipped: tuple[str, ...]  # denials not visible in the session anyway
    protected: tuple[str, ...]  # persistence files made read-only


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _anchors(parents: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """``parents`` prepared for :func:`_under_any` (one C-level ``startswith`` per path
    instead of a Python call per parent: compile_mounts asks this thousands of times)."""
    parents = list(parents)
    return frozenset(parents), tuple(p.rstrip("/") + "/" for p in parents)


def _under_any(path: str, anchors: tuple[frozenset[str], tuple[str, ...]]) -> bool:
    """``any(_under(path, p) for p in parents)``."""
    return path in anchors[0] or path.startswith(anchors[1])


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _symlink_ops(paths: Sequence[str], taken: set[str]) -> list[MountOp]:
    """Recreate host symlinks that lie on the way to the bound paths (``/lib64``, ...)."""
    ops: list[MountOp] = []
    candidates: set[str] = set()
    for entry in os.listdir("/"):
        candidates.add("/" + entry)
    for path in paths:
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            candidates.add("/".join(parts[:i]))
    for link in sorted(candidates, key=_depth):
        if link in taken or not os.path.islink(link):
            continue
        if any(_under(link, t) and link != t for t in taken):
            continue  # already visible through a bound parent
        ops.append(MountOp(SYMLINK, link, os.readlink(link)))
        taken.add(link)
    return ops


def compile_mounts(
    policy: ResolvedPolicy,
    *,
    home: str,
    aliases: Sequence[tuple[str, str]] = (),
) -> MountPlan:
    """Turn the policy into ordered mount operations. Looks at the host; does not change it.

    ``aliases`` are (path as written, canonical path) pairs; each symlink on the written path
    is recreated so that e.g. ``/etc/resolv.conf`` still leads to its target.
    """
    binds: dict[str, MountOp] = {}
    tmp_writable: dict[str, bool] = {p: p == "/dev/shm" for p in PRIVATE_TMP}
    denied = _anchors(d.path for d in policy.denials)
    for grant in expand_root(policy.grants):
        path = grant.path
        writes = grant.access.writes
        if path in tmp_writable:
            tmp_writable[path] = tmp_writable[path] or writes
            continue
        if path in ("/proc", "/dev") or _under(path, "/proc") or path in PROVIDED_DEV:
            continue  # provided fresh by the sandbox
        if _under_any(path, denied):
            continue  # deny wins over a grant inside it
        try:
            st = os.stat(path)
        except OSError:
            continue
        kind = BIND_DIR if stat.S_ISDIR(st.st_mode) else BIND_FILE
        prev = binds.get(path)
        binds[path] = MountOp(kind, path, path, writes or bool(prev and prev.writable),
                              device=_under(path, "/dev"))

    # Parents before children, private tmp mounts among them (a /var grant comes before
    # the private /var/tmp on top of it).
    tmp_ops = [MountOp(TMPFS, path, "", writable) for path, writable in tmp_writable.items()]
    ops: list[MountOp] = sorted([*tmp_ops, *binds.values()],
                                key=lambda op: (_depth(op.target), op.target))

    taken = set(binds) | set(PRIVATE_TMP) | {"/proc", "/dev"}
    alias_paths = [a for a, _ in aliases]
    ops[:0] = _symlink_ops(list(binds) + alias_paths, taken)

    writable_dirs = [op.target for op in binds.values() if op.writable and op.kind == BIND_DIR]
    protected: list[str] = []
    allowed_persistence = set(policy.writable_persistence)
    for wdir in writable_dirs:
        names = list(PERSISTENCE_NAMES)
        if _under(home, wdir):
            names += [os.path.relpath(os.path.join(home, rc), wdir) for rc in HOME_RC_FILES]
        for name in names:
            path = os.path.normpath(os.path.join(wdir, name))
            if path in allowed_persistence or path in protected or not os.path.lexists(path):
                continue
            if os.path.islink(path):
                continue  # the link target is what matters, and it is checked on its own
            protected.append(path)
            ops.append(MountOp(READONLY, path, path))

    visible = [(op.target.rstrip("/") + "/", op)
               for op in sorted(binds.values(), key=lambda op: _depth(op.target))]
    masked: list[str] = []
    skipped: list[str] = []
    for denial in sorted(policy.denials, key=lambda d: _depth(d.path)):
        if masked and _under_any(denial.path, _anchors(masked)):
            continue  # inside a path already masked: hidden with it
        op = _mask_op(denial, visible)
        if op is None:
            skipped.append(denial.path)
        else:
            masked.append(denial.path)
            ops.append(op)
    return MountPlan(ops=tuple(ops), masked=tuple(masked), skipped=tuple(skipped),
                     protected=tuple(protected))


def expand_root(grants: Sequence[Grant]) -> list[Grant]:
    """A grant of ``/`` becomes one grant per top-level entry: the session's root itself must
    stay the sandbox's own (a bind of the host root over it would undo every other mount)."""
    out: list[Grant] = []
    for grant in grants:
        if grant.path != "/":
            out.append(grant)
            continue
        for entry in sorted(os.listdir("/")):
            path = "/" + entry
            if path in ("/proc", "/dev") or os.path.islink(path):
                continue  # fresh in the sandbox; top-level links are recreated
            out.append(msgspec.structs.replace(grant, path=path,
                                               is_file=not os.path.isdir(path)))
    return out


def _mask_op(denial: Denial, visible: Sequence[tuple[str, MountOp]]) -> MountOp | None:
    """``visible``: the binds, each with its target as a prefix (``/a/``)."""
    path = denial.path
    parents = [op for prefix, op in visible if path == op.target or path.startswith(prefix)]
    if not parents:
        return None  # not in the session's view at all
    if os.path.lexists(path):
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        return MountOp(MASK_DIR if is_dir else MASK_FILE, path)
    # Missing: only maskable (and only worth it) if the program could create it.
    innermost = max(parents, key=lambda op: _depth(op.target))
    if not innermost.writable or innermost.kind != BIND_DIR:
        return None
    if not os.path.isdir(os.path.dirname(path)):
        return None  # would need several levels of placeholders; parent dir is masked instead
    return MountOp(MASK_FILE if denial.is_file else MASK_DIR, path, create=True)


# --- child side ----------------------------------------------------------------------------


def _mkdirs(path: str) -> None:
    parts = path.strip("/").split("/")
    cur = ""
    for part in parts:
        cur += "/" + part
        try:
            os.mkdir(cur, 0o755)
        except FileExistsError:
            pass


def _touch(path: str, mode: int = 0o644) -> None:
    _mkdirs(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, mode)
    os.close(fd)


def _bind(source: str, target: str, *, writable: bool, nodev: bool = True) -> None:
    _libc.mount(source, target, None, _libc.MS_BIND | _libc.MS_REC)
    attrs = _libc.MOUNT_ATTR_NOSUID | (_libc.MOUNT_ATTR_NODEV if nodev else 0)
    if not writable:
        attrs |= _libc.MOUNT_ATTR_RDONLY
    _libc.mount_setattr(target, attrs, recursive=True)


def prepare_root(new_root_base: str = "/tmp") -> None:
    """The policy-independent part: a tmpfs root with the host under /oldroot, fresh /proc
    and a minimal /dev. A warm launcher does this before any plan arrives."""
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("tmpfs", new_root_base, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=0755")
    os.chdir(new_root_base)
    os.mkdir("oldroot", 0o700)
    _libc.pivot_root(".", "oldroot")
    os.chdir("/")
    _touch(EMPTY_FILE, 0o000)
    _mkdirs("/proc")
    _libc.mount("proc", "/proc", "proc", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
    _setup_dev()


def apply_mounts(ops: Sequence[MountOp], *, prepared: bool = False,
                 pinned: Sequence[bytes] = ()) -> None:
    """Build the session's root. Runs in the launcher child; every failure raises OSError.

    ``pinned`` holds the bytes the daemon verified for each PIN operation: they are written to
    a file in the session's (private, soon read-only) root and that copy is mounted over the
    path, so changing the file on the host after verification changes nothing inside."""
    if not prepared:
        prepare_root()
    read_only_tmpfs: list[str] = []
    for op in ops:
        target = op.target
        if op.kind == BIND_DIR:
            _mkdirs(target)
            _bind(OLD + op.source, target, writable=op.writable, nodev=not op.device)
        elif op.kind == BIND_FILE:
            if not os.path.exists(target):
                _touch(target)
            _bind(OLD + op.source, target, writable=op.writable, nodev=not op.device)
        elif op.kind == TMPFS:
            _mkdirs(target)
            _libc.mount("tmpfs", target, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=1777")
            if not op.writable:
                read_only_tmpfs.append(target)  # after the binds that need mountpoints in it
        elif op.kind == SYMLINK:
            _mkdirs(os.path.dirname(target))
            if not os.path.lexists(target):
                os.symlink(op.source, target)
        elif op.kind == READONLY:
            _bind(target, target, writable=False)
        elif op.kind == MASK_DIR:
            if op.create:
                try:
                    os.mkdir(target, 0o700)
                except FileExistsError:
                    pass  # another session's launch made it first
            _libc.mount("tmpfs", target, "tmpfs",
                        _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC, "mode=000,size=4k")
            _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY, recursive=False)
        elif op.kind == PIN:
            _pin(target, pinned[int(op.source)], int(op.source))
        elif op.kind == MASK_FILE:
            if op.create and not os.path.lexists(target):
                _touch(target, 0o600)
            _libc.mount(EMPTY_FILE, target, None, _libc.MS_BIND)
            _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOEXEC,
                                recursive=False)
        else:
            raise OSError(22, "unknown mount operation", target)

    for target in read_only_tmpfs:
        _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY, recursive=False)
    _libc.umount2(OLD, _libc.MNT_DETACH)
    os.rmdir(OLD)
    _libc.mount_setattr("/", _libc.MOUNT_ATTR_RDONLY, recursive=False)


def _pin(target: str, data: bytes, index: int) -> None:
    if not os.path.isfile(target):
        raise OSError(2, "verified file is not in the session's view", target)
    _mkdirs(PIN_DIR)
    copy = f"{PIN_DIR}/{index}"
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    _libc.mount(copy, target, None, _libc.MS_BIND)
    _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID
                        | _libc.MOUNT_ATTR_NODEV, recursive=False)


def _setup_dev() -> None:
    _mkdirs("/dev/pts")
    for name in DEV_NODES:
        path = "/dev/" + name
        _touch(path)
        _bind(OLD + path, path, writable=True, nodev=False)
    _libc.mount("devpts", "/dev/pts", "devpts", _libc.MS_NOSUID | _libc.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", "/dev/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, "/dev/" + name)


def base_grants() -> tuple[Grant, ...]:
    """Landlock grants every session needs for the sandbox's own /proc and /dev."""
    from ..policy import Access

    rw = Access.READWRITE
    files = tuple(Grant(path="/dev/" + n, access=rw, is_file=True, source="base")
                  for n in DEV_NODES)
    return (
        Grant(path="/proc", access=Access.READ, source="base"),
        Grant(path="/dev/pts", access=rw, source="base"),
        Grant(path="/dev/shm", access=rw, source="base"),
        *files,
    )
