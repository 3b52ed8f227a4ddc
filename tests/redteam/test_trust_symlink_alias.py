"""Red team, an instruction file hidden from verification by a symbolic link: the pre-launch
scan visits each directory once, and a link to a directory was followed when the walk met
it. A session made ``a -> docs`` in its working directory; the next scan met ``a`` before
``docs``, matched the files there as ``a/GEMINI.md`` (which the policy's
``docs/GEMINI.md`` does not include) and skipped ``docs`` as already seen. So
``docs/GEMINI.md`` was neither verified nor pinned: the next session rewrote it and the one
after that read the injected instructions, no refusal. Now every real directory is walked
before any symbolic link to one."""

from __future__ import annotations

from pathlib import Path

from nonod import trust
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env
from tests.redteam._trust import signed_project

SIGNED = b"# rules\n"


def test_a_link_to_the_instructions_directory_does_not_hide_it_from_the_scan(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, config, key = signed_project(short_tmp, ["docs/GEMINI.md"])
    (work / "docs").mkdir()
    (work / "docs" / "GEMINI.md").write_bytes(SIGNED)
    (work / "docs" / "GEMINI.md.bundle").write_bytes(trust.sign_file(SIGNED, "GEMINI.md", key))
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    first = run("launch", "--allow-cwd", "--", "/bin/ln", "-s", "docs", "a")
    assert first.returncode == 0, first.stderr
    assert (work / "a").is_symlink()  # the session may make links in its directory
    second = run("launch", "--allow-cwd", "--", "/bin/sh", "-c",
                 "echo '# INJECTED' > docs/GEMINI.md || echo kept")
    assert (second.returncode, second.stdout) == (0, "kept\n"), second.stderr
    assert (work / "docs" / "GEMINI.md").read_bytes() == SIGNED
