"""Landlock against the real kernel: each case forks a child that sets no_new_privs, applies a
plan, attempts operations and reports each one's errno (0 = allowed) through a pipe.

The child must not import anything once restricted (the stdlib is outside its grants), so
everything the operations use is imported here at module level.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import socket
import termios
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec
import pytest

from nonod.errors import EnforcementUnavailable
from nonod.policy import Access, Grant
from nonod.sandbox import _landlock as ll
from nonod.sandbox._landlock import LandlockPlan, apply_plan, compile_plan, probe_abi

ABI = probe_abi()
needs_landlock = pytest.mark.skipif(ABI < 1, reason="kernel without Landlock")

_PR_SET_NO_NEW_PRIVS = 38
_OP_FAILED = -1  # an operation raised something other than OSError


class Outcome(NamedTuple):
    apply_error: str  # "" when the plan was applied
    results: list[int | None]  # errno per operation, 0 = allowed, None = never reported
    status: int  # waitpid status of the child


def _child(w: int, plan: LandlockPlan, ops: tuple[Callable[[], object], ...]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os.write(w, f"apply {ctypes.get_errno()} prctl(PR_SET_NO_NEW_PRIVS)\n".encode())
        return
    try:
        apply_plan(plan)
    except OSError as exc:
        os.write(w, f"apply {exc.errno} {exc}\n".encode())
        return
    os.write(w, b"applied\n")
    for op in ops:
        try:
            op()
            result = 0
        except OSError as exc:
            result = exc.errno if exc.errno is not None else _OP_FAILED
        except Exception:
            result = _OP_FAILED
        os.write(w, f"{result}\n".encode())


def sandboxed(plan: LandlockPlan, *ops: Callable[[], object]) -> Outcome:
    """Run ``ops`` in a forked child restricted by ``plan``."""
    r, w = os.pipe()  # both ends close on exec, so a successful execve reads as EOF
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _child(w, plan, ops)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    lines = b"".join(chunks).decode().splitlines()
    if not lines:
        pytest.fail(f"child reported nothing (status {status:#x})")
    if lines[0] != "applied":
        return Outcome(lines[0].removeprefix("apply "), [], status)
    results: list[int | None] = [int(line) for line in lines[1:]]
    results += [None] * (len(ops) - len(results))
    return Outcome("", results, status)


def allowed(plan: LandlockPlan, *ops: Callable[[], object]) -> list[int | None]:
    outcome = sandboxed(plan, *ops)
    assert outcome.apply_error == "", outcome.apply_error
    return outcome.results


def plan_for(
    *grants: Grant,
    abi: int = ABI,
    connect: list[int] | None = None,
    bind: list[int] | None = None,
    signals: bool = False,
    abstract_unix: bool = False,
) -> LandlockPlan:
    return compile_plan(
        grants,
        abi=abi,
        net_connect_ports=connect,
        net_bind_ports=bind,
        scope_signals=signals,
        scope_abstract_unix=abstract_unix,
        required=frozenset(),
    )


def grant(path: Path | str, access: Access, *, is_file: bool = False) -> Grant:
    return Grant(path=str(path), access=access, is_file=is_file)


# Operations, as closures the child calls.


def read(path: Path) -> Callable[[], object]:
    return lambda: path.read_bytes()


def write(path: Path) -> Callable[[], object]:
    def op() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)

    return op


def listdir(path: Path) -> Callable[[], object]:
    return lambda: os.listdir(path)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """``allowed/`` and ``outside/`` with one file each."""
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "file").write_bytes(b"ok")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    yield tmp_path


# --- the real kernel ---------------------------------------------------------------------------


@needs_landlock
def test_read_grant_allows_reading_inside_and_nothing_outside(tree: Path) -> None:
    plan = plan_for(grant(tree / "allowed", Access.READ))
    assert allowed(
        plan,
        read(tree / "allowed" / "file"),
        listdir(tree / "allowed"),
        read(tree / "outside" / "secret"),
        listdir(tree / "outside"),
        listdir(tree),
    ) == [0, 0, errno.EACCES, errno.EACCES, errno.EACCES]


@needs_landlock
def test_read_only_grant_refuses_every_kind_of_write(tree: Path) -> None:
    d = tree / "allowed"
    plan = plan_for(grant(d, Access.READ))
    assert allowed(
        plan,
        write(d / "file"),
        write(d / "new"),
        lambda: os.mkdir(d / "sub"),
        lambda: os.unlink(d / "file"),
        lambda: os.symlink("file", d / "link"),
        lambda: os.mkfifo(d / "fifo"),
    ) == [errno.EACCES] * 6
    assert (d / "file").read_bytes() == b"ok"


@needs_landlock
def test_write_grant_without_read_creates_but_cannot_read(tree: Path) -> None:
    d = tree / "allowed"
    plan = plan_for(grant(d, Access.WRITE))
    assert allowed(
        plan, write(d / "new"), read(d / "new"), read(d / "file"), listdir(d)
    ) == [0, errno.EACCES, errno.EACCES, errno.EACCES]
    assert (d / "new").read_bytes() == b"x"


@needs_landlock
def test_file_grant_covers_that_file_only(tree: Path) -> None:
    d = tree / "allowed"
    (d / "sibling").write_bytes(b"no")
    plan = plan_for(grant(d / "file", Access.READ, is_file=True))
    assert allowed(
        plan, read(d / "file"), read(d / "sibling"), write(d / "file"), listdir(d)
    ) == [0, errno.EACCES, errno.EACCES, errno.EACCES]


@needs_landlock
def test_readwrite_file_grant_cannot_create_siblings(tree: Path) -> None:
    d = tree / "allowed"
    plan = plan_for(grant(d / "file", Access.READWRITE, is_file=True))
    assert allowed(plan, write(d / "file"), read(d / "file"), write(d / "other")) == [
        0,
        0,
        errno.EACCES,
    ]


@needs_landlock
def test_dotdot_does_not_leave_the_grant(tree: Path) -> None:
    plan = plan_for(grant(tree / "allowed", Access.READWRITE))
    escape = Path(f"{tree}/allowed/../outside/secret")
    assert allowed(plan, read(escape), write(escape)) == [errno.EACCES, errno.EACCES]


@needs_landlock
def test_symlink_inside_grant_pointing_outside_is_denied(tree: Path) -> None:
    (tree / "allowed" / "link").symlink_to(tree / "outside" / "secret")
    (tree / "allowed" / "dirlink").symlink_to(tree / "outside")
    plan = plan_for(grant(tree / "allowed", Access.READWRITE))
    assert allowed(
        plan,
        read(tree / "allowed" / "link"),
        read(tree / "allowed" / "dirlink" / "secret"),
        write(tree / "allowed" / "dirlink" / "planted"),
        read(tree / "allowed" / "file"),
    ) == [errno.EACCES, errno.EACCES, errno.EACCES, 0]
    assert not (tree / "outside" / "planted").exists()


@needs_landlock
def test_rename_and_link_out_of_the_grant_fail(tree: Path) -> None:
    src = tree / "allowed"
    ro = tree / "readonly"
    ro.mkdir()
    plan = plan_for(grant(src, Access.READWRITE), grant(ro, Access.READ))
    results = allowed(
        plan,
        lambda: os.rename(src / "file", ro / "file"),
        lambda: os.link(src / "file", ro / "hard"),
        lambda: os.rename(src / "file", tree / "outside" / "file"),
        lambda: os.link(src / "file", tree / "outside" / "hard"),
        lambda: os.rename(src / "file", src / "renamed"),
    )
    assert all(res in (errno.EXDEV, errno.EACCES) for res in results[:4]), results
    assert results[4] == 0
    assert sorted(os.listdir(ro)) == []
    assert sorted(os.listdir(tree / "outside")) == ["secret"]


@needs_landlock
def test_rename_and_link_into_another_writable_grant_work(tree: Path) -> None:
    if ABI < 2:
        pytest.skip("REFER needs ABI 2")
    other = tree / "other"
    other.mkdir()
    plan = plan_for(grant(tree / "allowed", Access.READWRITE), grant(other, Access.READWRITE))
    assert allowed(
        plan,
        lambda: os.link(tree / "allowed" / "file", other / "hard"),
        lambda: os.rename(tree / "allowed" / "file", other / "moved"),
    ) == [0, 0]


@needs_landlock
def test_truncate_denied_on_read_only_file(tree: Path) -> None:
    if ABI < 3:
        pytest.skip("TRUNCATE needs ABI 3")
    target = tree / "allowed" / "file"
    plan = plan_for(grant(tree / "allowed", Access.READ))
    assert allowed(
        plan,
        lambda: os.truncate(target, 0),
        lambda: os.close(os.open(target, os.O_RDONLY | os.O_TRUNC)),
    ) == [errno.EACCES, errno.EACCES]
    assert target.read_bytes() == b"ok"
    writable = plan_for(grant(tree / "allowed", Access.READWRITE))
    assert allowed(writable, lambda: os.truncate(target, 0)) == [0]
    assert target.read_bytes() == b""


@needs_landlock
def test_plan_for_older_abi_handles_only_its_rights(tree: Path) -> None:
    """A plan compiled for ABI 1 on a newer kernel leaves truncate(2) unhandled: this proves
    the trimming and the 8-byte attr reach the kernel as they should."""
    if ABI < 3:
        pytest.skip("needs a kernel that knows TRUNCATE")
    target = tree / "allowed" / "file"
    plan = plan_for(grant(tree / "allowed", Access.READ), abi=1)
    assert plan.report.state == "partial"
    assert allowed(plan, lambda: os.truncate(target, 0), write(target)) == [0, errno.EACCES]


@pytest.fixture
def true_copy(tmp_path: Path) -> Path:
    binary = tmp_path / "bin" / "true"
    binary.parent.mkdir()
    shutil.copy(shutil.which("true") or "/bin/true", binary)
    binary.chmod(0o755)
    return binary


def execute(binary: Path) -> Callable[[], object]:
    return lambda: os.execv(binary, [str(binary)])


@needs_landlock
def test_execute_denied_with_write_only_grant(true_copy: Path) -> None:
    usr = os.path.realpath("/usr")
    plan = plan_for(grant(true_copy.parent, Access.WRITE), grant(usr, Access.READ))
    assert allowed(plan, execute(true_copy)) == [errno.EACCES]


@needs_landlock
def test_execute_allowed_with_read_grant(true_copy: Path) -> None:
    usr = os.path.realpath("/usr")
    plan = plan_for(grant(true_copy.parent, Access.READ), grant(usr, Access.READ))
    outcome = sandboxed(plan, execute(true_copy))
    assert outcome.apply_error == ""
    assert outcome.results == [None]  # execve replaced the child: nothing came back
    assert os.waitstatus_to_exitcode(outcome.status) == 0


@needs_landlock
def test_device_ioctl_needs_write(tree: Path) -> None:
    if ABI < 5:
        pytest.skip("IOCTL_DEV needs ABI 5")

    def tcgets() -> None:
        fd = os.open("/dev/null", os.O_RDONLY)
        try:
            fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        finally:
            os.close(fd)

    # /dev/null is no terminal: ENOTTY means the ioctl reached the driver.
    assert allowed(plan_for(grant("/dev", Access.READ)), tcgets) == [errno.EACCES]
    assert allowed(plan_for(grant("/dev", Access.READWRITE)), tcgets) == [errno.ENOTTY]


@pytest.fixture
def listeners() -> Iterator[tuple[int, int]]:
    socks = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        socks.append(sock)
    yield socks[0].getsockname()[1], socks[1].getsockname()[1]
    for sock in socks:
        sock.close()


def connect(port: int) -> Callable[[], object]:
    def op() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.connect(("127.0.0.1", port))

    return op


def bind_any() -> Callable[[], object]:
    def op() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))

    return op


@needs_landlock
def test_connect_only_to_allowed_port(listeners: tuple[int, int]) -> None:
    if ABI < 4:
        pytest.skip("TCP rules need ABI 4")
    good, bad = listeners
    plan = plan_for(connect=[good])
    # bind is not handled when its list is None.
    assert allowed(plan, connect(good), connect(bad), bind_any()) == [0, errno.EACCES, 0]


@needs_landlock
def test_empty_bind_list_denies_bind(listeners: tuple[int, int]) -> None:
    if ABI < 4:
        pytest.skip("TCP rules need ABI 4")
    good, _ = listeners
    plan = plan_for(bind=[])
    assert allowed(plan, bind_any(), connect(good)) == [errno.EACCES, 0]


@needs_landlock
def test_signal_scope_blocks_signalling_outside() -> None:
    if ABI < 6:
        pytest.skip("scopes need ABI 6")
    parent = os.getpid()
    to_parent = lambda: os.kill(parent, 0)  # noqa: E731
    to_self = lambda: os.kill(os.getpid(), 0)  # noqa: E731
    assert allowed(plan_for(signals=True), to_parent, to_self) == [errno.EPERM, 0]
    assert allowed(plan_for(), to_parent) == [0]


@needs_landlock
def test_abstract_unix_scope_blocks_connecting_outside() -> None:
    if ABI < 6:
        pytest.skip("scopes need ABI 6")
    name = b"\0nono-test-" + os.urandom(8).hex().encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(4)

        def op() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(name)

        assert allowed(plan_for(abstract_unix=True), op) == [errno.EPERM]
        assert allowed(plan_for(), op) == [0]


@needs_landlock
def test_probe_reports_this_kernel() -> None:
    assert ABI >= 1
    assert probe_abi() == ABI


@needs_landlock
def test_a_rule_path_gone_since_the_plan_grants_nothing(tree: Path) -> None:
    # An entry of a split grant or a temporary directory removed between plan and apply: the
    # ruleset is still enforced, without that rule (no access there, never more).
    plan = plan_for(grant(tree / "gone", Access.READ))
    outcome = sandboxed(plan, read(tree / "allowed" / "file"))
    assert not outcome.apply_error
    assert outcome.results == [errno.EACCES]


@needs_landlock
@pytest.mark.parametrize(
    ("make", "is_file", "code"),
    [
        ("dir", True, errno.EISDIR),
        ("file", False, errno.ENOTDIR),
        ("symlink", False, errno.ELOOP),
        ("parent_symlink", False, errno.ELOOP),
    ],
)
def test_rule_path_of_the_wrong_kind_aborts(
    tree: Path, make: str, is_file: bool, code: int
) -> None:
    target = tree / "target"
    if make == "dir":
        target.mkdir()
    elif make == "file":
        target.write_bytes(b"")
    elif make == "symlink":
        target.symlink_to(tree / "outside")
    else:
        (tree / "via").symlink_to(tree / "outside")
        target = tree / "via" / "secret"
        is_file = True
    plan = plan_for(grant(target, Access.READ, is_file=is_file))
    outcome = sandboxed(plan)
    assert outcome.apply_error.startswith(f"{code} "), outcome.apply_error


@needs_landlock
def test_unavailable_plan_applies_nothing(tree: Path) -> None:
    plan = plan_for(grant(tree / "allowed", Access.READ), abi=0)
    assert plan.report.state == "unavailable"
    assert allowed(plan, read(tree / "outside" / "secret")) == [0]


# --- compile_plan, no kernel needed ----------------------------------------------------------


def test_required_net_on_abi3_is_refused() -> None:
    with pytest.raises(EnforcementUnavailable, match=r"landlock_net\) requires Landlock ABI v4\+"):
        compile_plan(
            [grant("/srv", Access.READ)],
            abi=3,
            net_connect_ports=[8080],
            scope_signals=False,
            scope_abstract_unix=False,
            required=frozenset({"landlock", "landlock_net"}),
        )


def test_required_landlock_without_landlock_is_refused() -> None:
    with pytest.raises(EnforcementUnavailable, match="no Landlock") as info:
        compile_plan(
            [], abi=0, scope_signals=False, scope_abstract_unix=False,
            required=frozenset({"landlock"}),
        )
    assert info.value.step == "landlock"


def test_every_lacking_feature_is_named() -> None:
    with pytest.raises(EnforcementUnavailable) as info:
        compile_plan(
            [], abi=2, scope_signals=True, scope_abstract_unix=True,
            required=frozenset({"landlock_truncate", "landlock_scopes", "seccomp"}),
        )
    assert "v3+" in info.value.message and "v6+" in info.value.message
    assert info.value.detail == "landlock_truncate,landlock_scopes"


def test_unknown_landlock_feature_is_an_error() -> None:
    with pytest.raises(ValueError, match="landlock_nett"):
        compile_plan(
            [], abi=7, scope_signals=False, scope_abstract_unix=False,
            required=frozenset({"landlock_nett"}),
        )


@pytest.mark.parametrize("abi", range(1, 8))
@pytest.mark.parametrize("access", list(Access))
def test_file_grants_carry_no_directory_rights(abi: int, access: Access) -> None:
    plan = plan_for(grant("/etc/hosts", access, is_file=True), abi=abi)
    ((_, mask, is_file),) = plan.rules
    assert is_file
    assert mask & ~ll.FS_FILE_RIGHTS == 0
    assert mask & ~ll.fs_rights_for_abi(abi) == 0
    assert mask != 0


def test_masks_are_trimmed_to_the_abi() -> None:
    expected = {
        1: (1 << 13) - 1,
        2: (1 << 14) - 1,
        3: (1 << 15) - 1,
        4: (1 << 15) - 1,
        5: (1 << 16) - 1,
        6: (1 << 16) - 1,
        7: (1 << 16) - 1,
    }
    for abi, rights in expected.items():
        plan = plan_for(grant("/srv", Access.READWRITE), abi=abi)
        assert plan.handled_access_fs == rights
        assert plan.rules == ((b"/srv", rights, False),)
    assert plan_for(abi=12).abi == ll.KNOWN_ABI


def test_access_modes_map_to_rights() -> None:
    (_, r, _), (_, w, _), (_, rw, _) = plan_for(
        grant("/a", Access.READ), grant("/b", Access.WRITE), grant("/c", Access.READWRITE), abi=7
    ).rules
    assert r == ll.FS_READ_FILE | ll.FS_READ_DIR | ll.FS_EXECUTE
    assert w & (ll.FS_READ_FILE | ll.FS_READ_DIR | ll.FS_EXECUTE) == 0
    assert w & ll.FS_IOCTL_DEV and w & ll.FS_REFER and w & ll.FS_TRUNCATE
    assert rw == r | w == ll.fs_rights_for_abi(7)


def test_duplicate_grants_merge() -> None:
    plan = plan_for(grant("/a", Access.READ), grant("/a", Access.WRITE), abi=7)
    assert plan.rules == ((b"/a", ll.fs_rights_for_abi(7), False),)


def test_relative_path_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        plan_for(grant("relative/dir", Access.READ), abi=7)


def test_network_is_handled_only_for_given_lists() -> None:
    assert plan_for(abi=7).handled_access_net == 0
    plan = plan_for(connect=[443, 80], abi=7)
    assert plan.handled_access_net == ll.NET_CONNECT_TCP
    assert plan.net_rules == ((80, ll.NET_CONNECT_TCP), (443, ll.NET_CONNECT_TCP))
    both = plan_for(connect=[8080], bind=[8080], abi=7)
    assert both.net_rules == ((8080, ll.NET_CONNECT_TCP | ll.NET_BIND_TCP),)
    with pytest.raises(ValueError, match="port"):
        plan_for(connect=[70000], abi=7)


def test_missing_optional_features_make_the_report_partial() -> None:
    net = plan_for(connect=[443], abi=3)
    assert net.handled_access_net == 0 and net.net_rules == ()
    assert net.report.state == "partial" and "v4+" in net.report.reason
    scopes = plan_for(signals=True, abstract_unix=True, abi=5)
    assert scopes.scoped == 0
    assert scopes.report.state == "partial" and "v6+" in scopes.report.reason
    full = plan_for(connect=[443], signals=True, abstract_unix=True, abi=7)
    assert full.report.state == "applied", full.report.reason
    assert full.scoped == ll.SCOPE_SIGNAL | ll.SCOPE_ABSTRACT_UNIX_SOCKET
    assert "tcp_connect=443" in full.report.detail


def test_ruleset_attr_size_follows_the_abi() -> None:
    sizes = [ll.ruleset_attr_size(abi) for abi in range(1, 8)]
    assert sizes == [8, 8, 8, 16, 16, 24, 24]


def test_plan_survives_the_fork_server_pipe() -> None:
    plan = plan_for(grant("/srv", Access.READ), connect=[443], signals=True, abi=7)
    data = msgspec.msgpack.encode(plan)
    assert msgspec.msgpack.decode(data, type=LandlockPlan) == plan
