"""Red team, the files ``nonoctl`` writes into a repository (``trust sign``'s bundles, ``trust
init``'s policy, ``learn --save``'s profile), through a name the repository planted: each is
written to a temporary name beside it (``.NAME.PID.tmp``), then renamed into place, and the
temporary file was opened by name, following links. A repository that ships
``.GEMINI.md.bundle.PID.tmp -> ~/.bashrc`` for the pid the command gets (a few thousand
links cover the likely ones) had the user's file overwritten with the bundle, and
``GEMINI.md.bundle`` left a link to it. The temporary file is now made anew, never through
a link."""

from __future__ import annotations

import os
from pathlib import Path

from nonoctl._cli import _write_file


def test_a_planted_link_at_the_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "bashrc"
    victim.write_text("# the user's\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    bundle = repo / "GEMINI.md.bundle"
    (repo / f".{bundle.name}.{os.getpid()}.tmp").symlink_to(victim)
    _write_file(bundle, b'{"bundle": 1}\n')
    assert victim.read_text() == "# the user's\n"  # before: the bundle's bytes
    assert not bundle.is_symlink() and bundle.read_bytes() == b'{"bundle": 1}\n'
    assert sorted(p.name for p in repo.iterdir()) == ["GEMINI.md.bundle"]
