"""Red team, ``nonoctl trust sign --all`` in a repository another user may write (a shared
work tree, a session's writable project): the files the trust scan found were opened again
by name to be signed, following links and blocking, so what the other user put there
meanwhile was read: a FIFO (the command waited until interrupted; with the FIFO made before
the command, every time) or a link (another file hashed and signed under this name). Now each
is read once, from one open beneath the repository with no symlink on the way, never
blocking, a regular file only, and only if it is the file the scan found."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod import trust
from nonod.protocol import MAX_TRUST_SIGN_BYTES
from tests.daemon.conftest import DaemonThread
from tests.daemon.localusers import LocalUser, local_users
from tests.daemon.test_cli import CLI, cli_env

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

POLICY = {"GEMINI.md": "# rules\n", "AGENTS.md": "# more rules\n"}


@pytest.fixture
def shared_repo() -> Iterator[tuple[Path, LocalUser]]:
    """A repository any user may write (mode 0777), with the two included files, and the
    other user who writes it."""
    repo = Path(tempfile.mkdtemp(prefix="nono-shared-", dir="/tmp"))
    try:
        repo.chmod(0o777)
        for name, text in POLICY.items():
            (repo / name).write_text(text)
        with local_users(repo, 1) as (other,):
            yield repo, other
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def _as(user: LocalUser, *command: str) -> None:
    subprocess.run([*user.prefix(), *command], check=True, cwd="/", capture_output=True)


def _signer(daemon_thread: DaemonThread, short_tmp: Path, repo: Path) -> CLI:
    """``nonoctl`` in ``repo`` with a key and a signed policy including its two files."""
    config = short_tmp / "cfg"
    (config / "nono").mkdir(parents=True)
    keyref = f"file://{config}/nono/default.key"
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), repo)
    for words in (("trust", "keygen", "--keyref", keyref),
                  ("trust", "init", "--user", "--key", keyref),
                  ("trust", "sign-policy", "--user", "--key", keyref),
                  ("trust", "init", "--include", "GEMINI.md", "--include", "AGENTS.md",
                   "--key", keyref),
                  ("trust", "sign-policy", "--key", keyref)):
        done = run(*words)
        assert done.returncode == 0, (words, done.stderr)
    run.env["NONO_TEST_KEYREF"] = keyref
    return run


def test_a_fifo_put_in_the_repository_is_refused_not_waited_on(
        daemon_thread: DaemonThread, short_tmp: Path,
        shared_repo: tuple[Path, LocalUser]) -> None:
    repo, other = shared_repo
    run = _signer(daemon_thread, short_tmp, repo)
    (repo / "AGENTS.md").unlink()
    _as(other, "mkfifo", str(repo / "AGENTS.md"))
    signing = run.popen("trust", "sign", "--all", "--key", run.env["NONO_TEST_KEYREF"])
    try:
        _, err = signing.communicate(timeout=60)  # (on main: waits on the FIFO for good)
    finally:
        signing.kill()
        signing.wait()
    assert signing.returncode == 1, err
    assert b"AGENTS.md" in err and b"a FIFO" in err, err
    assert not (repo / "GEMINI.md.bundle").exists(), "nothing is signed when one is refused"


@pytest.mark.parametrize("swap", ["symlink", "fifo", "another file"])
def test_a_file_swapped_after_the_scan_is_not_read(
        shared_repo: tuple[Path, LocalUser], swap: str) -> None:
    """Between the scan and the read (the window a session writing the repository races),
    the other user swaps the included file: for a link to a file of its own, a FIFO, or
    another regular file renamed over it."""
    repo, other = shared_repo
    policy = trust.parse_policy(trust.init_policy(includes=["AGENTS.md"],
                                                  key=trust.generate_key("default")))
    report = trust.verify_tree(repo, policy)
    (entry,) = report.entries
    assert trust.read_scanned(report, entry, MAX_TRUST_SIGN_BYTES) == b"# more rules\n"
    target = repo / "AGENTS.md"
    planted = repo / "planted"
    _as(other, "sh", "-c", 'printf "injected" > "$1"', "-", str(planted))
    if swap == "symlink":
        _as(other, "ln", "-sfn", str(planted), str(repo / "link"))
        _as(other, "mv", "-f", str(repo / "link"), str(target))
        expected = "symbolic link"
    elif swap == "fifo":
        _as(other, "mkfifo", str(repo / "pipe"))
        _as(other, "mv", "-f", str(repo / "pipe"), str(target))
        expected = "a FIFO"
    else:
        _as(other, "mv", "-f", str(planted), str(target))
        expected = "replaced since the scan"
    with pytest.raises(trust.TrustError, match=expected):
        trust.read_scanned(report, entry, MAX_TRUST_SIGN_BYTES)

