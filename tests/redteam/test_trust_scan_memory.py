"""Red team, the daemon's memory, filled by the files a repository's trust policy includes:
the scan kept the bytes of every verified file (each up to 16 MiB, with no bound on their
number or sum) to pin them, and the launch plan that carries pins to the session is one
message of at most 1 MiB. A repository with its own policy (no user-level policy is needed:
a project policy alone is enforced) and one signed 16 MiB file under 24 names (hard links,
costing no disk) raised the daemon's peak memory by 760 MiB for one launch before it failed
with "Message too long"; a single signed 2 MiB file could never launch and failed so too.
A scan now keeps at most ``MAX_VERIFIED_BYTES`` in all and refuses the file that would pass
it, unread, with the reason."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from nonod import trust
from nonod.trust._scan import MAX_VERIFIED_BYTES
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env


def _signed_tree(work: Path, names: int, size: int) -> None:
    """A self-signed project policy including ``**/GEMINI.md``, and one signed file of
    ``size`` bytes under ``names`` directories (hard links)."""
    key = trust.generate_key("default")
    policy = trust.init_policy(includes=["**/GEMINI.md"], key=key)
    (work / "trust-policy.json").write_bytes(policy)
    (work / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))
    data = b"# rules\n" + b"x" * (size - 8)
    first = work / "d0"
    first.mkdir()
    (first / "GEMINI.md").write_bytes(data)
    (first / "GEMINI.md.bundle").write_bytes(trust.sign_file(data, "GEMINI.md", key))
    for index in range(1, names):
        (work / f"d{index}").mkdir()
        for name in ("GEMINI.md", "GEMINI.md.bundle"):
            os.link(first / name, work / f"d{index}" / name)


def _peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # the daemon's, here


def test_a_scan_keeps_a_bounded_sum_of_verified_bytes(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    big = short_tmp / "big"
    big.mkdir()
    _signed_tree(big, 24, 16 << 20)
    before = _peak_mib()
    refused = CLI(cli_env(daemon_thread.socket, short_tmp), big)(
        "launch", "--allow-cwd", "--", "/bin/echo", "ran")
    assert refused.returncode != 0 and "ran" not in refused.stdout
    assert "d0/GEMINI.md (too large to pin)" in refused.stderr, refused.stderr  # not
    # "Message too long", after every name was read
    assert _peak_mib() - before < 64  # before: 760 MiB more
    # Verified files up to the bound together launch, and the session reads them.
    fits = short_tmp / "fits"
    fits.mkdir()
    _signed_tree(fits, 4, MAX_VERIFIED_BYTES // 4)  # the whole bound
    done = CLI(cli_env(daemon_thread.socket, short_tmp), fits)(
        "launch", "--allow-cwd", "--", "/bin/sh", "-c", "head -c 7 d3/GEMINI.md")
    assert (done.returncode, done.stdout) == (0, "# rules"), done.stderr
