"""Red team, a verified instruction file swapped inside the session through its name: the
scan follows a symbolic link inside the root (``GEMINI.md -> prompts/v2.md``; the link's name
is what is signed) and pins the verified bytes over the link's *target*. The link itself, in
the working directory the session may write, was not kept: the session renamed a link of its
own over ``GEMINI.md`` and the agent's next read of its instructions got the session's text,
unverified, while the launch had said they were verified. Such a launch is now refused; a
link whose directory the session cannot write is pinned as before."""

from __future__ import annotations

from pathlib import Path

from nonod import trust
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env
from tests.redteam._trust import signed_project

SIGNED = b"# rules\n"
SWAP = ("echo '# INJECTED' > evil.md; ln -s evil.md new && mv -T new GEMINI.md "
        "&& echo swapped; cat GEMINI.md")


def _project(short_tmp: Path) -> tuple[Path, Path]:
    work, config, key = signed_project(short_tmp, ["GEMINI.md"])
    (work / "prompts").mkdir()
    (work / "prompts" / "v2.md").write_bytes(SIGNED)
    (work / "GEMINI.md").symlink_to("prompts/v2.md")
    (work / "GEMINI.md.bundle").write_bytes(trust.sign_file(SIGNED, "GEMINI.md", key))
    return work, config


def test_an_instruction_file_named_by_a_link_the_session_can_replace_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, config = _project(short_tmp)
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    done = run("launch", "--allow-cwd", "--", "/bin/sh", "-c", SWAP)
    assert "INJECTED" not in done.stdout, done.stdout  # before: "swapped", "# INJECTED"
    assert done.returncode != 0
    assert "GEMINI.md" in done.stderr and "symbolic link" in done.stderr, done.stderr
    read_only = run("launch", "--workdir", str(work), "-r", str(work), "--", "/bin/cat",
                    "GEMINI.md")
    assert (read_only.returncode, read_only.stdout) == (0, SIGNED.decode()), read_only.stderr


def test_a_project_policy_named_by_a_link_the_session_can_write_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """The project policy kept read-only in the session is a file; as a link (to a file in
    the project) the session could rewrite its target or re-point it, and choose what the
    next launch verifies."""
    work, config = _project(short_tmp)
    (work / "GEMINI.md").unlink()
    (work / "GEMINI.md").write_bytes(SIGNED)
    (work / "conf").mkdir()
    (work / "trust-policy.json").rename(work / "conf" / "trust-policy.json")
    (work / "trust-policy.json").symlink_to("conf/trust-policy.json")
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    done = run("launch", "--allow-cwd", "--", "/bin/echo", "ran")
    assert done.returncode != 0 and "ran" not in done.stdout
    assert "symbolic link" in done.stderr and "trust-policy.json" in done.stderr, done.stderr
