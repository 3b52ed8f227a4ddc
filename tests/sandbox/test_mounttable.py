"""The host's mount table as a tree (``_mounttable``): where else it shows a directory, for
the creation guard's second paths (``tests/sandbox/test_createguard_alias.py`` runs them in
sessions)."""

from __future__ import annotations

from nonod.sandbox._mounttable import Table, parse

MOUNTINFO = """\
20 1 8:1 / / rw - ext4 /dev/sda1 rw
21 20 8:2 / /home rw - ext4 /dev/sda2 rw
22 21 8:2 /u/work /home/u/sub/alias rw - ext4 /dev/sda2 rw
23 21 8:2 /u /home/u/sub/up rw - ext4 /dev/sda2 rw
24 21 0:40 / /home/u/sub/hidden rw - tmpfs tmpfs rw
25 21 8:2 /u/work /home/u/sub/shadowed rw - ext4 /dev/sda2 rw
26 25 0:41 / /home/u/sub/shadowed rw - tmpfs tmpfs rw
27 21 8:2 /u/work//deleted /home/u/sub/gone rw - ext4 /dev/sda2 rw
28 23 8:2 /u/work /home/u/sub/up/work rw - ext4 /dev/sda2 rw
29 21 8:2 /u/w\\040x /home/u/sp rw - ext4 /dev/sda2 rw
"""


def test_the_table_shows_a_directory_at_each_visible_mount_of_it() -> None:
    """A bind of the directory (22), of an ancestor (23: ``up/work`` is not one, a mount
    is on it: 28 is), not one stacked under another (25 under 26), nor one of a directory
    removed since (27); escaped names (29)."""
    table = Table(parse(MOUNTINFO))
    assert table.at("/home/u/sub/shadowed").id == 26  # type: ignore[union-attr]
    assert table.at("/home/u/sub/up/work/x").id == 28  # type: ignore[union-attr]
    assert table.aliases("/home/u/work") == ("/home/u/sub/alias", "/home/u/sub/up/work")
    assert table.aliases("/home/u/work/.git") == ("/home/u/sub/alias/.git",
                                                  "/home/u/sub/up/work/.git")
    assert table.aliases("/home/u") == ("/home/u/sub/up",)
    assert table.aliases("/home/u/w x") == ("/home/u/sub/up/w x", "/home/u/sp")
    assert table.aliases("/srv") == ()
