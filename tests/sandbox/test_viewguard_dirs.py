"""The view guard's record of what it watches: after a rewatch, nothing differs (else the
launcher would rewatch forever); a directory made on the way to a missing guarded path shows
as a difference (so it is watched before what is made in it is missed)."""

from __future__ import annotations

import os
from pathlib import Path

from nonod.sandbox._mounts import MASK_DIR, MountOp
from nonod.sandbox._viewguard import ViewGuard


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
