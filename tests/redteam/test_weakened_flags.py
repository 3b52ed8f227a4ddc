"""Red team, thirty-third pass: a protection turned off on the command line. ``weakened``
(``inspect``, the audit's ``session_started``) is "the protections its profile or command
line turned off", but ``--trust-override`` (instruction files not verified) was said only
on the caller's own terminal and as a trust warning in the audit: ``inspect`` (root's, or
the user's later) showed nothing turned off, and ``session_started.weakened`` was absent."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI

SAID = "instruction files not verified (--trust-override)"


def test_trust_override_is_said_with_what_else_is_turned_off(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    done = run("launch", "--trust-override", "--allow-cwd", "--block-net", "--name", "over",
               "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    detail = json.loads(run("inspect", "over", "--json").stdout)
    # before: []
    assert SAID in detail["weakened"], detail["weakened"]
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    first = json.loads(audit.read_text().splitlines()[0])["event"]
    assert first["type"] == "session_started" and SAID in first["weakened"], first
    plain = run("launch", "--allow-cwd", "--block-net", "--name", "plain", "--", "/bin/true")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(run("inspect", "plain", "--json").stdout)["weakened"] == []


def test_what_nonos_variables_add_to_a_launch_is_said() -> None:
    """compat2 reads nono's ``NONO_*`` variables as nono does, and said so only for those it
    does not act on: a ``NONO_ALLOW=$HOME`` exported for nono long ago (or by a
    repository's ``.envrc``) granted every later ``nonoctl launch`` the home, read-write,
    with no word; ``NONO_PROFILE`` chose the profile, ``NONO_ALLOW_DOMAIN`` and
    ``NONO_CREDENTIAL`` added a host and a route. Each one that widens the launch is now a
    note on its standard error; ``NONO_BLOCK_NET`` (which only narrows) is not."""
    from tests.cli.test_nono_cli import _with_env

    environ = {"NONO_ALLOW": "/home/u", "NONO_ALLOW_DOMAIN": "x.example",
               "NONO_CREDENTIAL": "github", "NONO_PROFILE": "gitbot",
               "NONO_NETWORK_PROFILE": "developer", "NONO_BLOCK_NET": "0"}
    args, notes = _with_env(["launch"], environ)
    assert args.allow == ["/home/u"]  # acted on, as before
    said = "\n".join(notes)
    # before: no note at all
    for name, value in (("NONO_ALLOW", "/home/u"), ("NONO_ALLOW_DOMAIN", "x.example"),
                        ("NONO_CREDENTIAL", "github"), ("NONO_PROFILE", "gitbot"),
                        ("NONO_NETWORK_PROFILE", "developer")):
        assert f"nonoctl: note: {name}={value} from the environment" in said, said
    assert "NONO_BLOCK_NET" not in said
    # A command line that names its own leaves the variable unused, and unsaid.
    args, notes = _with_env(["launch", "--allow", "/srv"], {"NONO_ALLOW": "/home/u"})
    assert args.allow == ["/srv"] and notes == []
