"""Red team, nineteenth pass: a denied name's link, removed from a learn session. ``nonoctl
learn``'s recording session may write every directory outside the system trees (added after
resolution, so resolution's refusal of a link in a writable grant never saw them). With
``~/.aws -> dotfiles/aws`` (a dotfile manager), its program removed the link, and the next
session of any profile that reads ``~/dotfiles`` resolved the always-on denial of ``~/.aws``
to a name that no longer existed: ``~/dotfiles/aws/credentials`` was readable to it. The
links a denial was resolved through are now bound onto themselves in the session
(``_mounts.LINK_ANCHOR``), and the directories on their way anchored."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import msgspec
import pytest
import trio

from nonod.learn import learn
from nonod.policy import Access, Denial, Grant
from nonod.profiles import ResolveContext, parse_profile, resolve
from nonod.sandbox._mounts import LINK_ANCHOR, compile_mounts

from ..conftest import SandboxUser
from ..learn.conftest import needs_tools
from ..learn.conftest import scratch as scratch  # the fixture
from ..sandbox.test_createguard import layout as layout  # the fixture
from ..sandbox.test_createguard import layout_policy
from ..sandbox.test_sandbox import probe

pytestmark = needs_tools()

#: The program tries to take the link away, and the way to it.
TAKES_THE_LINK = r'''
import errno, os, sys
home = os.environ["HOME"]
out = []
def t(name, f):
    try:
        f()
        out.append(f"{name} OK")
    except OSError as e:
        out.append(f"{name} {errno.errorcode[e.errno]}")
t("unlink", lambda: os.unlink(f"{home}/.aws"))
t("rename", lambda: os.rename(f"{home}/.aws", f"{home}/aws.old"))
os.symlink("/nowhere", f"{home}/decoy")
t("over", lambda: os.rename(f"{home}/decoy", f"{home}/.aws"))
t("home", lambda: os.rename(home, home + ".moved"))
t("other", lambda: open(f"{home}/notes.txt", "w").write("written"))
open(sys.argv[1], "w").write("\n".join(out) + "\n")
'''


async def test_a_learn_session_cannot_remove_a_denied_names_link(scratch: Path) -> None:
    """Before: ``unlink OK`` and the link gone; now the link and the way to it are mount
    points (``EBUSY``), and the rest of ``$HOME`` stays writable."""
    home = scratch / "home"
    (home / "dotfiles" / "aws").mkdir(parents=True)
    (home / "dotfiles" / "aws" / "credentials").write_text("aws secret\n")
    (home / ".aws").symlink_to("dotfiles/aws")
    work = scratch / "work"
    work.mkdir()
    (work / "takes.py").write_text(TAKES_THE_LINK)
    with trio.fail_after(120):
        result = await learn(["/usr/bin/python3", "-I", "takes.py", str(work / "out.txt")],
                             cwd=str(work), env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                             timeout=60, base_profile=None)
    assert result.exit_code == 0
    assert (work / "out.txt").read_text().splitlines() == [
        "unlink EBUSY", "rename EBUSY", "over EBUSY", "home EBUSY", "other OK"]
    assert (home / ".aws").is_symlink() and (home / "notes.txt").read_text() == "written"


def test_the_links_a_denial_was_resolved_through_are_bound_in_a_writable_grant(
        tmp_path: Path) -> None:
    """Resolution records the link; the plan binds it onto itself where a grant added after
    resolution (the learn run's whole tree) makes its directory writable."""
    home = tmp_path / "home"
    (home / "dotfiles" / "aws").mkdir(parents=True)
    (home / ".aws").symlink_to("dotfiles/aws")
    ctx = ResolveContext(home=str(home), workdir=str(tmp_path), uid=0)
    policy = resolve(parse_profile(b'{"meta": {"name": "t"}}', "t"), ctx)
    assert str(home / ".aws") in policy.denial_links
    writable = msgspec.structs.replace(
        policy, grants=(*policy.grants, Grant(path=str(home), access=Access.READWRITE)))
    ops = compile_mounts(writable, home=str(home)).ops
    assert [op.target for op in ops if op.kind == LINK_ANCHOR] == [str(home / ".aws")]


def test_a_bound_link_holds_for_root_and_another_user(sandbox_user: SandboxUser,
                                                      layout: tuple[Path, Path]) -> None:
    """The engine's part, for root and uid 65534 (the mount is made in the session's own user
    namespace): a link named in ``denial_links`` in a writable ``$HOME`` cannot be removed,
    renamed or replaced, and still leads where it led; its target stays masked."""
    home, work = layout
    (home / "dotfiles" / "aws").mkdir(parents=True)
    (home / "dotfiles" / "aws" / "credentials").write_text("aws secret\n")
    (home / ".aws").symlink_to("dotfiles/aws")
    sandbox_user.chown(home / "dotfiles", home / "dotfiles" / "aws")
    os.lchown(home / ".aws", sandbox_user.uid, sandbox_user.uid)
    policy = msgspec.structs.replace(
        layout_policy(home, work), denial_links=(str(home / ".aws"),),
        denials=(Denial(path=str(home / "dotfiles" / "aws")),))
    r = sandbox_user.run(policy, probe(
        f"h = {str(home)!r}\n"
        "t(lambda: os.unlink(h + '/.aws'))\n"
        "t(lambda: os.rename(h + '/.aws', h + '/aws.old'))\n"
        "os.symlink('/nowhere', h + '/decoy')\n"
        "t(lambda: os.rename(h + '/decoy', h + '/.aws'))\n"
        "t(lambda: os.readlink(h + '/.aws'))\n"
        "t(lambda: open(h + '/.aws/credentials').read())\n"), cwd=str(work),
        env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["EBUSY", "EBUSY", "EBUSY", "OK dotfiles/aws", "EACCES"]
    assert (home / ".aws").is_symlink()


#: What a learn run's program tries to leave for the host where the caller's environment
#: moved its start-up files and caches.
PLANTS = r'''
import os, sys
out = []
for p in sys.argv[2:]:
    try:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "a").write("touch /tmp/pwned\n")
        out.append(f"{os.path.basename(p)} WRITTEN")
    except OSError as e:
        out.append(f"{os.path.basename(p)} {type(e).__name__}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
'''


async def test_a_learn_session_keeps_the_moved_start_up_files_and_caches(scratch: Path) -> None:
    """The recording policy is built anew from its resolution, and kept only the grants and
    denials: the start-up files and caches the caller's environment moved (``BASH_ENV``,
    ``XDG_CONFIG_HOME``'s git configuration, ``GOMODCACHE``) were written on the host by the
    learn run's program. Now they are kept as in any session."""
    home = scratch / "home"
    for directory in ("env", "dotconfig/git", "gomod/example.com"):
        (home / directory).mkdir(parents=True)
    (home / "gomod/example.com/m.go").write_text("HOST\n")
    work = scratch / "work"
    work.mkdir()
    (work / "plants.py").write_text(PLANTS)
    targets = [home / "env/bash_env.sh", home / "dotconfig/git/config",
               home / "gomod/example.com/m.go", home / "env/ok.txt"]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "BASH_ENV": str(home / "env/bash_env.sh"),
           "XDG_CONFIG_HOME": str(home / "dotconfig"), "GOMODCACHE": str(home / "gomod")}
    with trio.fail_after(120):
        result = await learn(["/usr/bin/python3", "-I", "plants.py", str(work / "out.txt"),
                              *map(str, targets)], cwd=str(work), env=env, timeout=60,
                             base_profile=None)
    assert result.exit_code == 0
    lines = (work / "out.txt").read_text().splitlines()
    # EACCES (the creation guard) for the absent file, EROFS in the existing git directory
    assert [line.split()[1] for line in lines] == [
        "PermissionError", "OSError", "WRITTEN", "WRITTEN"], lines
    assert not (home / "env/bash_env.sh").exists()
    assert not (home / "dotconfig/git/config").exists()
    assert (home / "gomod/example.com/m.go").read_text() == "HOST\n"  # its own copy
    assert (home / "env/ok.txt").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd, a root learn run")
async def test_a_root_learn_session_cannot_read_another_accounts_credentials(
        scratch: Path) -> None:
    """A root learn run sees the whole host, other accounts' homes read-only; the always-on
    deny groups were placed in the caller's home only, so its program read another user's
    private key and shell history. Now they are masked there too."""
    victim = scratch / "victim"
    (victim / ".ssh").mkdir(parents=True)
    (victim / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (victim / ".bash_history").write_text("mysql -p hunter2\n")
    (victim / "notes.txt").write_text("plain\n")
    name = f"nonol18{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(victim), name],
                   check=True, capture_output=True)
    work = scratch / "work"
    work.mkdir()
    reads = ("import sys\nout = []\nfor p in sys.argv[2:]:\n    try:\n"
             "        out.append(open(p).read().strip() or 'EMPTY')\n"
             "    except OSError as e:\n        out.append(type(e).__name__)\n"
             "open(sys.argv[1], 'w').write('\\n'.join(out) + '\\n')\n")
    try:
        with trio.fail_after(120):
            result = await learn(
                ["/usr/bin/python3", "-I", "-c", reads, str(work / "out.txt"),
                 *(str(victim / n) for n in (".ssh/id_ed25519", ".bash_history", "notes.txt"))],
                cwd=str(work), env={"HOME": str(scratch / "home"), "PATH": "/usr/bin:/bin"},
                timeout=60, base_profile=None)
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
    assert result.exit_code == 0
    lines = (work / "out.txt").read_text().splitlines()
    assert lines[2] == "plain" and not {"PRIVATE KEY", "mysql -p hunter2"} & set(lines), lines
