"""How ``nonoctl`` starts and ends: what it imports for the hot verbs, and its exit.

Each check runs ``nonoctl`` in a fresh interpreter against a socket where no daemon listens
(it fails to connect: exit 122, after reading its command line and importing what it uses).
The interpreter finds the packages as a wheel install does, without running the dev venv's
``.pth`` files: its editable finder imports pathlib itself (``-S``, the tree and the
dependencies on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import nonoctl

#: The tree and the dependencies' site-packages, as a wheel install's ``sys.path`` has them.
_PATH = os.pathsep.join(str(Path(package.__file__).parents[1]) for package in (nonoctl, msgspec))

#: Runs ``nonoctl.__main__.main`` as the console script does, after ``prelude``.
_RUN = "{prelude}\nfrom nonoctl.__main__ import main\nmain()\n"


def _nonoctl(tmp_path: Path, *words: str, prelude: str = "pass"
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NONO_SOCKET": str(tmp_path / "none.sock"), "NONO_NO_AUTOSTART": "1",
           "PYTHONPATH": _PATH}
    code = _RUN.format(prelude=prelude)
    return subprocess.run([sys.executable, "-S", "-c", code, *words], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=60)


#: What argparse pulls in; pathlib with what it imports (~10 ms: the socket paths are str);
#: ``signal`` (its enums), which only an attached launch needs.
_ARGPARSE = ("argparse", "gettext", "shutil")
_PATHLIB = ("pathlib", "urllib.parse", "ipaddress", "fnmatch")
_UNUSED = (*_ARGPARSE, *_PATHLIB, "signal")


@pytest.mark.parametrize(("words", "unused"), [
    (("ps",), _UNUSED),
    (("launch", "--allow-cwd", "--", "/bin/true"), (*_ARGPARSE, *_PATHLIB)),
    (("stop", "bot"), _UNUSED),
    (("inspect", "bot"), _UNUSED),
    (("wait", "bot"), _UNUSED),
    (("--version",), _UNUSED),
])
def test_the_hot_verbs_import_only_what_they_use(words: tuple[str, ...], unused: tuple[str, ...],
                                                 tmp_path: Path) -> None:
    done = _nonoctl(tmp_path, *words, prelude=(
        "import atexit, sys\natexit.register(lambda: print(sorted(\n"
        f"    m for m in sys.modules if m in {unused!r})))"))
    if words == ("--version",):
        assert (done.returncode, done.stdout.splitlines()[1:]) == (0, ["[]"]), done.stderr
    else:
        assert done.returncode == 122, done.stderr
        assert "cannot connect to nonod" in done.stderr
        assert done.stdout == "[]\n"


def test_a_finished_command_skips_the_interpreter_teardown(tmp_path: Path) -> None:
    """An object's finalizer that would run at teardown does not; the output is complete."""
    done = _nonoctl(tmp_path, "ps", prelude=(
        "class Held:\n    def __del__(self) -> None:\n        print('torn down')\n"
        "held = Held()\nprint('started', flush=False)"))
    assert done.returncode == 122
    assert done.stdout == "started\n"
    assert done.stderr.startswith("nonoctl: cannot connect to nonod")


def test_exit_handlers_still_run(tmp_path: Path) -> None:
    done = _nonoctl(tmp_path, "ps", prelude="import atexit\natexit.register(print, 'bye')")
    assert done.returncode == 122
    assert done.stdout == "bye\n"


def test_the_protocol_annotations_are_types_not_strings() -> None:
    """Strings would make every decoder's creation evaluate them (nonod/protocol.py)."""
    import msgspec

    from nonod import protocol as p

    structs = [cls for cls in vars(p).values()
               if isinstance(cls, type) and issubclass(cls, msgspec.Struct)]
    assert len(structs) > 50
    strings = [(cls.__name__, name) for cls in structs
               for name, hint in vars(cls).get("__annotations__", {}).items()
               if isinstance(hint, str)]
    assert strings == []


def test_ps_leaves_the_collector_as_it_found_it(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # ps turns the collector off for its thousand rows; a program that calls the CLI in
    # process (tests, scripts) gets it back on, even when the command fails.
    import gc

    from nonoctl._cli import main

    monkeypatch.setenv("NONO_NO_AUTOSTART", "1")
    assert main(["--socket", str(tmp_path / "none.sock"), "ps"]) == 122
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["--socket", str(tmp_path / "none.sock"), "ps"]) == 122
        assert not gc.isenabled()
    finally:
        gc.enable()
