"""Red team, twenty-fourth pass: lines of ``nonoctl`` drawn by values a session or a
repository chose.

``nonoctl`` escapes every control character it prints, but in *free text* (a line of its own
that embeds values: ``out.line(f"OK   {path}")``) it kept line breaks and carriage returns,
since its own lines need them. A value that holds one draws on the user's terminal: a
carriage return returns to the line's start and what follows overwrites what came before;
a line break adds a line of the value's making. Two places where the person reads before
deciding:

* ``nonoctl approvals`` and ``approvals inspect``: a held tool call's arguments are the
  agent's; an argument ``"x\\n<id>  agent ... deployer status ..."`` added a second, benign
  looking approval line to the list, and one holding ``"\\r"`` redrew its own;
* ``nonoctl trust verify --all`` / ``trust list`` / ``trust sign --all``: the names are the
  repository's; a directory named ``"x\\rOK   docs"`` made ``FAIL x<CR>OK   docs/CLAUDE.md``
  show as ``OK   docs/CLAUDE.md ...``, and ``"a\\nOK   b"`` a line ``OK   b/CLAUDE.md``.

A bare carriage return is now escaped in free text (``\\x0d``; a CR that ends a line, as in
CRLF, stays), and the values these commands embed are shown as fields (every non-printable
character escaped, line breaks included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nonod import trust
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox.test_call_rules import AGENT, _agent_of
from tests.toolsandbox.test_daemon_tools import _pending

FORGED = "deployer status"
DRAWS = r'''
import subprocess
subprocess.run(["deployer", "api", "x\n  forged  deployer status  pid 1  99s left",
                "y\r  command: deployer status            "], timeout=120)
'''


def test_a_held_calls_arguments_draw_no_lines_in_approvals(short_tmp: Path) -> None:
    invocation = {"default": "deny", "approve": [{"argv": {"prefix": ["api"]}}]}
    with _agent_of(short_tmp, DRAWS, invocation) as (run, profile):
        agent = run.popen("launch", "--profile", str(profile), "--allow-cwd", "--", *AGENT)
        asked = _pending(run, set())
        listed = _raw(run, "approvals")
        inspected = _raw(run, "approvals", "inspect", str(asked["id"]))
        assert run("deny", str(asked["id"])).returncode == 0
        agent.communicate(timeout=120)
    assert "\r" not in listed + inspected
    # One approval: one line (before: two, the second the agent's).
    assert len(listed.splitlines()) == 1, listed
    # Its own four lines (before: five, one of them the agent's "forged" approval line).
    assert len(inspected.splitlines()) == 4, inspected
    assert "\\x0a" in listed and "\\x0d" in inspected


def _raw(run: CLI, *args: str) -> str:
    """``nonoctl args``'s standard output as written: carriage returns kept."""
    done = subprocess.run([sys.executable, "-m", "nonoctl", *args], env=run.env, cwd=run.cwd,
                          capture_output=True, timeout=60, check=False)
    return done.stdout.decode()


#: Directories of a cloned repository, each holding an unsigned ``CLAUDE.md``.
DRAWING_NAMES = ("x\rOK   docs", "a\nOK   b")


def _repository(short_tmp: Path) -> CLI:
    """A cloned repository with its own (self-signed) trust policy and a directory of each
    of :data:`DRAWING_NAMES`; ``nonoctl`` run in it."""
    repo = short_tmp / "repo"
    repo.mkdir()
    key = trust.generate_key("repo")
    policy = trust.init_policy(includes=["**/CLAUDE.md"], key=key)
    (repo / "trust-policy.json").write_bytes(policy)
    (repo / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))
    for name in DRAWING_NAMES:
        (repo / name).mkdir()
        (repo / name / "CLAUDE.md").write_text("unsigned\n")
    home = short_tmp / "home"
    home.mkdir()
    return CLI(cli_env(short_tmp / "no.sock", short_tmp, HOME=str(home),
                       XDG_CONFIG_HOME=str(home / ".config")), repo)


def _no_line_drawn(out: str) -> None:
    assert "\r" not in out, out
    assert not [line for line in out.splitlines() if line.lstrip().startswith("OK")], out


def test_a_repositorys_file_names_draw_no_lines_in_trust_output(short_tmp: Path) -> None:
    """``trust verify --all`` and ``trust list`` in the repository. Before: an ``OK`` line
    for each unsigned file."""
    run = _repository(short_tmp)
    verified = _raw(run, "trust", "verify", "--all")
    listed = _raw(run, "trust", "list")
    for out in (verified, listed):
        _no_line_drawn(out)
    # Two unsigned files: two lines (before: three, shown as one FAIL and two OK).
    assert len(verified.splitlines()) == 2, verified
    assert "x\\x0dOK   docs/CLAUDE.md" in verified and "a\\x0aOK   b/CLAUDE.md" in verified


def test_file_names_given_to_trust_verify_draw_no_lines(short_tmp: Path) -> None:
    """``trust verify FILE...`` with the repository's names (a shell's ``*/CLAUDE.md``):
    each name is shown as a field, as with ``--all``. Before: ``FAIL a`` and a line
    ``OK   b/CLAUDE.md: ...`` of the name's making."""
    run = _repository(short_tmp)
    verified = _raw(run, "trust", "verify", *(f"{name}/CLAUDE.md" for name in DRAWING_NAMES),
                    "missing\nOK   c/CLAUDE.md")
    _no_line_drawn(verified)
    assert len(verified.splitlines()) == 3, verified  # one FAIL line each
    assert "x\\x0dOK   docs/CLAUDE.md" in verified and "a\\x0aOK   b/CLAUDE.md" in verified
