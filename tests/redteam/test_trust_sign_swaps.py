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
import sys
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



#: Runs the command given and prints its peak resident size (KiB) last on stderr: measured
#: from a small process of its own, since a child's peak counts its parent's size at the
#: fork (the test process's, with its daemon).
_PEAK = ("import resource, subprocess, sys\n"
         "done = subprocess.run(sys.argv[1:])\n"
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
         "sys.exit(done.returncode)\n")


def _signing_peak_kib(run: CLI) -> int:
    """The peak resident size of one ``trust sign --all`` (KiB), which must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, sys.executable, "-m", "nonoctl", "trust", "sign", "--all",
         "--key", run.env["NONO_TEST_KEYREF"]], env=run.env, cwd=run.cwd, capture_output=True,
        check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"signed ") >= 1, done.stdout
    return int(done.stderr.splitlines()[-1])


def test_signing_many_included_files_holds_one_at_a_time(
        daemon_thread: DaemonThread, short_tmp: Path,
        shared_repo: tuple[Path, LocalUser]) -> None:
    """All included files were read before the first was signed, each up to 512 KiB and
    with no bound on their number: a repository with an included file in each of many
    directories made ``trust sign --all`` hold all of them (5 GB for 10,000). Now each is
    read to be checked before any is signed, and again at its turn, one held at a time.
    Measured: the peak resident size with 200 such files against that with 1."""
    repo, _ = shared_repo
    run = _signer(daemon_thread, short_tmp, repo)
    big = b"#" * (MAX_TRUST_SIGN_BYTES - 1024)
    (repo / "AGENTS.md").write_bytes(big)
    one = _signing_peak_kib(run)
    for index in range(200):
        (repo / f"d{index:03}").mkdir()
    done = run("trust", "init", "--force", "--include", "GEMINI.md", "--include", "AGENTS.md",
               "--include", "d*/AGENTS.md", "--key", run.env["NONO_TEST_KEYREF"])
    assert done.returncode == 0, done.stderr
    assert run("trust", "sign-policy", "--key", run.env["NONO_TEST_KEYREF"]).returncode == 0
    for index in range(200):
        (repo / f"d{index:03}" / "AGENTS.md").write_bytes(big)
    many = _signing_peak_kib(run)
    assert (repo / "d199" / "AGENTS.md.bundle").exists()
    # On main: 200 x 511 KiB more (about 110 MiB); now about 12 MiB.
    assert many - one < 40 * 1024, (one, many)
