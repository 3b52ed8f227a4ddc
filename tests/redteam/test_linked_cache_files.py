"""Red team, through the daemon: uv's cache hard-linked into the project a session writes.

uv installs a virtual environment by hard-linking ``~/.cache/uv`` (its default link mode on
Linux). A session that may write its working directory rewrote
``.venv/lib/python3.12/site-packages/<pkg>/__init__.py`` in place, and the cache's inode
changed with it: every later ``uv sync`` on the host, in any project, linked the session's
bytes. Left open by the eighth session's review and the fifteenth red-team pass; closed by
branch ``hardlink`` (``nonod/sandbox/_linkscan.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.daemon.test_cli import CLI

SITE = ".venv/lib/python3.12/site-packages/requests"

ATTACK = """
import errno, os, sys
def t(f):
    try:
        f()
        print('WRITTEN')
    except OSError as e:
        print(errno.errorcode[e.errno])
site = sys.argv[1]
t(lambda: open(site + '/__init__.py', 'w').write('import os; os.system("evil")\\n'))
t(lambda: open(site + '/api.py', 'r+').write('POISON'))
t(lambda: os.truncate(site + '/api.py', 0))
t(lambda: open('notes.txt', 'w').write('mine'))
"""


def test_a_session_cannot_rewrite_a_cache_file_through_the_projects_link(
        run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    cache = home / ".cache/uv/archive-v0/aB3dE/requests"
    cache.mkdir(parents=True)
    site = short_tmp / SITE
    site.mkdir(parents=True)
    (short_tmp / ".venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    (site.parent / "requests-2.32.3.dist-info").mkdir()
    (site.parent / "requests-2.32.3.dist-info/INSTALLER").write_text("uv\n")
    for name in ("__init__.py", "api.py"):
        (cache / name).write_text(f"# {name} as PyPI shipped it\n")
        os.link(cache / name, site / name)
    before = {name: os.stat(cache / name) for name in ("__init__.py", "api.py")}
    (short_tmp / "attack.py").write_text(ATTACK)
    done = run("launch", "--allow-cwd", "--block-net", "--",
               "/usr/bin/python3", "-S", "attack.py", str(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["EROFS", "EROFS", "EROFS", "WRITTEN"], done.stdout
    for name, st in before.items():
        assert (cache / name).read_text() == f"# {name} as PyPI shipped it\n"
        after = os.stat(cache / name)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
            (st.st_ino, st.st_size, st.st_mtime_ns)
    assert (short_tmp / "notes.txt").read_text() == "mine"
