"""Red team, the caller's ``TMPDIR`` shared into every session: the base group
``system_write_linux`` grants ``$TMPDIR``, which nonod took from the client's environment.
Where it is set (``/tmp/user/UID`` with pam_tmpdir, ``~/tmp``), that host directory was bound
read-write into every session of that user, beside the private ``/tmp``: a session read the
temporary files of the user's host programs and of its other sessions, and planted files
there for them, although its own program gets no ``TMPDIR`` at all. On Linux ``$TMPDIR`` is
now the session's own ``/tmp``."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT, READ


def test_the_callers_tmpdir_is_not_shared_into_sessions(run: CLI, short_tmp: Path) -> None:
    host_tmp = Path(f"{short_tmp}-tmpdir")
    host_tmp.mkdir()
    (host_tmp / "editor-swap").write_text("secret from a host program\n")
    (short_tmp / "read.py").write_text(READ)
    (short_tmp / "plant.py").write_text(PLANT)
    run.env["TMPDIR"] = str(host_tmp)
    try:
        read = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
                   "read.py", str(host_tmp / "editor-swap"))
        assert read.returncode == 0, read.stderr
        assert read.stdout.split()[-1] == "FileNotFoundError", read.stdout
        planted = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
                      "plant.py", str(host_tmp), "planted")
        assert planted.returncode == 0, planted.stderr
        assert sorted(p.name for p in host_tmp.iterdir()) == ["editor-swap"]
    finally:
        for path in host_tmp.iterdir():
            path.unlink()
        host_tmp.rmdir()
