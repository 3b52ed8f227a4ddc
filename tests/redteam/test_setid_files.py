"""Red team, set-id files planted on the host: a session owns what it writes in a writable
grant, and an owner may set the set-user-ID bit of its own file without any capability
(Landlock does not check ``chmod``). A root daemon's session copied ``/bin/sh`` into its
working directory and made it ``04755``: on the host, any local user who ran it got
``euid=0``. A session of another uid made a set-uid shell of that uid, for every other user.
The bit is refused by seccomp wherever a mode is given (``chmod`` family, file creation);
the host's file system shows the file without it."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.daemon.conftest import NOBODY, as_user
from tests.daemon.test_cli import CLI
from tests.redteam._programs import ATTEMPT

pytestmark = pytest.mark.root

PLANT = ATTEMPT + r'''
import os, shutil, stat
AT_FDCWD = -100
def raw(nr, *args):
    if libc.syscall(nr, *args) < 0:
        raise OSError(ctypes.get_errno(), "")
shutil.copy("/bin/sh", "sh-chmod")
for name in ("sh-fchmod", "sh-fchmodat", "sh-fchmodat2", "sh-setgid"):
    shutil.copy("/bin/sh", name)
attempt("chmod", lambda: os.chmod("sh-chmod", 0o4755))
fd = os.open("sh-fchmod", os.O_RDONLY)
attempt("fchmod", lambda: os.fchmod(fd, 0o4755))
attempt("fchmodat", lambda: raw(268, AT_FDCWD, b"sh-fchmodat", 0o4755))
attempt("fchmodat2", lambda: raw(452, AT_FDCWD, b"sh-fchmodat2", 0o4755, 0))
attempt("setgid", lambda: os.chmod("sh-setgid", 0o2755))
attempt("open", lambda: os.close(os.open("made-setuid", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("mknod", lambda: os.mknod("node-setuid", 0o4755 | stat.S_IFREG))
attempt("plain", lambda: os.chmod("sh-chmod", 0o755))
'''

NAMES = ["sh-chmod", "sh-fchmod", "sh-fchmodat", "sh-fchmodat2", "sh-setgid", "made-setuid",
         "node-setuid"]


def test_a_session_cannot_leave_a_set_id_program_on_the_host(run: CLI,
                                                             short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py")
    assert done.returncode == 0, done.stderr
    answers = dict(line.split() for line in done.stdout.splitlines())
    assert answers == {"chmod": "EPERM", "fchmod": "EPERM", "fchmodat": "EPERM",
                       "fchmodat2": "EPERM", "setgid": "EPERM", "open": "EPERM",
                       "mknod": "EPERM", "plain": "ok"}
    for name in NAMES:
        path = short_tmp / name
        if path.exists():
            assert not path.stat().st_mode & (stat.S_ISUID | stat.S_ISGID), name
    # What the attack was for: another user runs the program the session left.
    shell = short_tmp / "sh-chmod"
    assert shell.stat().st_uid == os.geteuid() == 0
    ran = subprocess.run([*as_user(NOBODY), str(shell), "-p", "-c", "id -u; id -ru"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert ran.stdout.split() == [str(NOBODY), str(NOBODY)], ran
