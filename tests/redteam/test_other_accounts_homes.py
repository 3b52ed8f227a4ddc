"""Red team, nineteenth pass: another account's home inside a root session's writable grant.
The persistence list and the always-on deny groups were placed in the caller's home only;
root may write every home, so a root session granted ``/home`` (or any directory holding
another account's home) wrote that user's ``.bashrc`` and ``.ssh/authorized_keys`` (run, and
let in, at that user's next login). The other accounts' homes (the password database) now
carry the same protections for a root caller (``ResolvedPolicy.other_homes``)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd, a root session")


@pytest.fixture
def victim(short_tmp: Path) -> Iterator[Path]:
    """A real account (``useradd``) whose home lies in ``short_tmp/homes``."""
    name = f"nonor18{secrets.token_hex(3)}"
    home = short_tmp / "homes" / name
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("# the user's\n")
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell",
                    "/bin/sh", name], check=True, capture_output=True)
    try:
        yield home
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


PLANTED = (".bashrc", ".profile", ".ssh/authorized_keys", ".ssh/rc",
           ".config/systemd/user/e.service",
           ".forward")


def test_another_accounts_start_up_files_are_kept_from_a_root_session(
        run: CLI, short_tmp: Path, victim: Path) -> None:
    """Before: all six written (``.bashrc`` appended to); now none, and an ordinary file in
    that home still is."""
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "-a", str(victim.parent), "--block-net", "--",
               "/usr/bin/python3", "-S", "plant.py", str(victim), *PLANTED, "notes.txt")
    assert done.returncode == 0, done.stderr
    written = [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")]
    assert written == ["notes.txt WRITTEN"], done.stdout
    assert (victim / ".bashrc").read_text() == "# the user's\n"
    assert sorted(p.relative_to(victim).as_posix() for p in victim.rglob("*")) == [
        ".bashrc", ".ssh", "notes.txt"]


def test_another_accounts_credentials_are_kept_from_a_root_session(
        run: CLI, short_tmp: Path, victim: Path) -> None:
    """The always-on deny groups name ``~/.ssh``, ``~/.aws``, shell history... in the
    caller's home. Before: a root session granted the directory of another user's home read
    that user's private key, cloud credentials and history; now they are masked there too,
    and the rest of that home still reads."""
    (victim / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (victim / ".aws").mkdir()
    (victim / ".aws" / "credentials").write_text("aws secret\n")
    (victim / ".bash_history").write_text("mysql -p hunter2\n")
    (victim / "notes.txt").write_text("plain\n")
    code = ("import sys\nfor p in sys.argv[1:]:\n"
            "    try:\n        print(open(p).read().strip() or 'EMPTY')\n"
            "    except OSError as e:\n        print(type(e).__name__)\n")
    done = run("launch", "--allow-cwd", "-r", str(victim.parent), "--block-net", "--",
               "/usr/bin/python3", "-S", "-c", code,
               *(str(victim / name) for name in (".ssh/id_ed25519", ".aws/credentials",
                                                 ".bash_history", "notes.txt")))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[3] == "plain", lines
    assert not {"PRIVATE KEY", "aws secret", "mysql -p hunter2"} & set(lines), lines


def test_an_account_made_after_a_kept_resolution_is_protected_at_once(
        run: CLI, short_tmp: Path) -> None:
    """review25: a root caller's resolution places the deny groups in every account's home
    (the password database), which is not a question the kept resolution's check asked
    again (``FsLook``: types and links). An account added after a launch (its home already
    there, as a home made before ``useradd``, or one restored) was unprotected in the next
    launches of the same command, served the kept resolution: its private key read."""
    name = f"nonor25{secrets.token_hex(3)}"
    home = short_tmp / "homes" / name
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / "notes.txt").write_text("plain\n")
    code = ("import sys\nfor p in sys.argv[1:]:\n"
            "    try:\n        print(open(p).read().strip())\n"
            "    except OSError as e:\n        print(type(e).__name__)\n")

    def read() -> list[str]:
        done = run("launch", "--allow-cwd", "-r", str(home.parent), "--block-net", "--",
                   "/usr/bin/python3", "-S", "-c", code, str(home / ".ssh" / "id_ed25519"),
                   str(home / "notes.txt"))
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert read() == ["PRIVATE KEY", "plain"]  # no account yet: a directory like any other
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell",
                    "/bin/sh", name], check=True, capture_output=True)
    try:
        lines = read()  # the same command: its resolution kept
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
    assert lines[1] == "plain", lines
    assert "PRIVATE KEY" not in lines, lines
