"""Red team, thirty-third pass: a hard link to a bound token (review23's open class, kept as
``tests/credentials/test_secret_hosts.py::test_a_hard_link_to_a_bound_file_is_the_same_secret``,
``xfail``). The binding names a path, and a hard link is another path: to ``SecretHosts``
alone, another secret. Through a real daemon it gets no further: a secret file with a
second link refuses the launch (``policy.secret_file``, ``_secretfiles``: a mask hides one
name only), whichever name the profile uses, so the upstream of the other name's route is
never sent anything. Held, not closed at the binding: this test keeps it held."""

from __future__ import annotations

import os

from tests.daemon.test_cli import CLI
from tests.redteam.conftest import RecordingUpstream
from tests.redteam.test_profile_hands_out import SECRET, _launch
from tests.redteam.test_secret_hosts import _bound, _theirs, pinned, two_users

__all__ = ["pinned", "two_users"]  # the fixtures, used by name


def test_a_hard_link_to_a_bound_token_sends_nothing(pinned: tuple[CLI, int]) -> None:
    cli, upstream = pinned
    key = _bound(cli, upstream)
    seen = len(RecordingUpstream.seen)
    (cli.cwd / "repo").mkdir()
    os.link(key.removeprefix("file://"), cli.cwd / "repo" / "token")
    theirs = _theirs(cli, upstream, f"file://{cli.cwd}/repo/token")
    refused = _launch(cli, theirs, "theirs")
    assert refused.returncode != 0 and "STATUS" not in refused.stdout, refused.stdout
    assert "hard links" in refused.stderr, refused.stderr
    assert len(RecordingUpstream.seen) == seen
    assert SECRET not in refused.stdout + refused.stderr
