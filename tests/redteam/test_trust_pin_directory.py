"""Red team, a pinned instruction file in a subdirectory, swapped inside the session by
moving its directory aside: the pin is a mount on ``docs/GEMINI.md``, and a mount point
cannot be renamed, but the directory holding it could. The session renamed ``docs`` away,
made a new ``docs`` with a ``GEMINI.md`` of its own and read it before the view guard
covered the new file (its window is the session's for the taking: a rename, a mkdir and a
write), so the agent's next read of its instructions got the session's text. Now the
directories on the way to each pin inside a writable grant are anchored, as those on the way
to the persistence files are (a mount point: ``EBUSY``); files beside the pin stay
writable."""

from __future__ import annotations

from pathlib import Path

from nonod import trust
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env
from tests.redteam._trust import signed_project

SIGNED = b"# rules\n"
SWAP = r'''
import os
try:
    os.rename("docs/sub", "docs/sub.old")
    os.mkdir("docs/sub")
    with open("docs/sub/GEMINI.md", "w") as f:
        f.write("# INJECTED\n")
except OSError as exc:
    print("refused", exc.errno)
with open("docs/notes.md", "w") as f:
    f.write("mine\n")
print(open("docs/sub/GEMINI.md").read().strip())
'''


def test_a_pinned_files_directory_cannot_be_moved_aside(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, config, key = signed_project(short_tmp, ["docs/sub/GEMINI.md"])
    pinned = work / "docs" / "sub" / "GEMINI.md"
    pinned.parent.mkdir(parents=True)
    pinned.write_bytes(SIGNED)
    pinned.with_name("GEMINI.md.bundle").write_bytes(trust.sign_file(SIGNED, "GEMINI.md", key))
    (work / "swap.py").write_text(SWAP)
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    for _ in range(3):  # the first launch is cold, the next ones normally warm
        done = run("launch", "--allow-cwd", "--", "/usr/bin/python3", "-S", "swap.py")
        assert (done.returncode, done.stdout) == (0, "refused 16\n# rules\n"), done.stderr
        assert not (work / "docs" / "sub.old").exists()
    assert pinned.read_bytes() == SIGNED
    assert (work / "docs" / "notes.md").read_text() == "mine\n"
