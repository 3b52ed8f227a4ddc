"""Red team, the profile file rewritten from inside: a launch may name its profile by path,
and a project keeps its agent's profile beside its code, in the directory that profile grants
read-write. The session rewrote the file (every grant, the network, the limits), and the next
launch with the same command ran under the session's choice. The profile file a launch
names is read-only in that session now, wherever it lies (as the project's trust policy is)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import ATTEMPT

#: Tries to widen, replace and remove the profile it runs under; reads it last.
REWRITE = ATTEMPT + r'''
import json, os, sys
path = sys.argv[1]
wider = {"meta": {"name": "agent"}, "filesystem": {"allow": ["/"]}}
def append():
    with open(path, "a") as f:
        f.write(" ")
def replace():
    with open(path + ".new", "w") as f:
        json.dump(wider, f)
    os.rename(path + ".new", path)
attempt("append", append)
attempt("replace", replace)
attempt("remove", lambda: os.unlink(path))
attempt("read", lambda: json.load(open(path)))
'''


def test_a_session_cannot_rewrite_the_profile_it_was_launched_with(
        run: CLI, short_tmp: Path) -> None:
    project = short_tmp / "project"
    project.mkdir()
    profile = project / "agent.json"
    original = json.dumps({"meta": {"name": "agent"}, "workdir": {"access": "readwrite"},
                           "network": {"block": True}})
    profile.write_text(original)
    (project / "rewrite.py").write_text(REWRITE)
    run.cwd = project
    done = run("launch", "--profile", str(profile), "--", "/usr/bin/python3", "-S",
               "rewrite.py", str(profile))
    assert done.returncode == 0, done.stderr
    answers = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert answers["read"] == "ok", answers
    # (a rename over it is EACCES since the thirty-first pass: the creation guard refuses
    # names that existed at launch too, before the kernel's EBUSY on the mount point)
    assert {answers[k] for k in ("append", "replace", "remove")} <= {
        "EROFS", "EBUSY", "EACCES"}, answers
    assert profile.read_text() == original
