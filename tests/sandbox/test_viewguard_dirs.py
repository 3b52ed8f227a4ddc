"""The view guard's record of what it watches: after a rewatch, nothing differs (else the
launcher would rewatch forever); a directory made on the way to a missing guarded path shows
as a difference (so it is watched before what is made in it is missed). What it guards: not
the masks of the session's own procfs, which nothing outside can take away."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonod.sandbox._mounts import BIND_DIR, MASK_DIR, MASK_FILE, PIN, MountOp
from nonod.sandbox._viewguard import ViewGuard, guarded


def test_identities_match_what_was_opened_until_the_way_changes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    view = ViewGuard([MountOp(MASK_DIR, f"{home}/.kube/config", absent=True),
                      MountOp(MASK_DIR, f"{home}/.aws", absent=True)])
    assert f"{home}/.kube" in view.dirs and str(home) in view.dirs
    names, fds = view.open_dirs()
    for fd in fds:
        os.close(fd)
    assert f"{home}/.kube" not in names  # missing: its parent's watch covers its creation
    assert view.identities() == view.watched
    (home / ".kube").mkdir()
    assert view.identities() != view.watched
    names, fds = view.open_dirs()
    for fd in fds:
        os.close(fd)
    assert f"{home}/.kube" in names
    assert view.identities() == view.watched


def test_masks_at_the_top_of_the_sessions_own_procfs_are_not_guarded() -> None:
    """Nothing outside the session can take those away (procfs has no rename or unlink):
    a root session's root-only /proc files and /proc/keys need no guard, and no hub watch."""
    proc = [MountOp(MASK_FILE, "/proc/kmsg"), MountOp(MASK_FILE, "/proc/keys")]
    home = [MountOp(MASK_FILE, "/home/u/.netrc"), MountOp(PIN, "/home/u/.bashrc", "0"),
            MountOp(MASK_FILE, "/proc/sys/kernel/x")]
    assert guarded([*proc, *home]) == tuple(home)
    # Something mounted on /proc itself (a host directory): its masks are the guard's again.
    bound = [MountOp(BIND_DIR, "/proc", "/srv/proc"), *proc]
    assert guarded(bound) == tuple(proc)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="what not even root may do in procfs")
@pytest.mark.parametrize("name", ["kmsg", "keys", "slabinfo"])
def test_procfs_refuses_to_rename_or_remove_its_top_files(name: str, tmp_path: Path) -> None:
    """What the guard's omission rests on, asked of the kernel as root: neither a rename
    nor an unlink of one of /proc's own files, nor a rename over it."""
    path = f"/proc/{name}"
    if not os.path.lexists(path):
        pytest.skip(f"no {path} here")
    with pytest.raises(OSError):
        os.rename(path, f"/proc/{name}.moved")
    with pytest.raises(OSError):
        os.unlink(path)
    other = tmp_path / "other"
    other.write_text("")
    with pytest.raises(OSError):
        os.rename(other, path)
    assert os.path.lexists(path)
