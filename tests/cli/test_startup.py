"""How ``nonoctl`` starts and ends: what it imports for the hot verbs, and its exit.

Each check runs ``nonoctl`` in a fresh interpreter against a socket where no daemon listens
(it fails to connect: exit 122, after reading its command line and importing what it uses).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Runs ``nonoctl.__main__.main`` as the console script does, after ``prelude``.
_RUN = "{prelude}\nfrom nonoctl.__main__ import main\nmain()\n"


def _nonoctl(tmp_path: Path, *words: str, prelude: str = "pass"
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NONO_SOCKET": str(tmp_path / "none.sock"), "NONO_NO_AUTOSTART": "1"}
    code = _RUN.format(prelude=prelude)
    return subprocess.run([sys.executable, "-c", code, *words], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=60)


#: What argparse pulls in; ``signal`` (its enums), which only an attached launch needs.
_ARGPARSE = ("argparse", "gettext", "shutil")


@pytest.mark.parametrize(("words", "unused"), [
    (("ps",), (*_ARGPARSE, "signal")),
    (("launch", "--allow-cwd", "--", "/bin/true"), _ARGPARSE),
])
def test_the_hot_verbs_import_only_what_they_use(words: tuple[str, ...], unused: tuple[str, ...],
                                                 tmp_path: Path) -> None:
    done = _nonoctl(tmp_path, *words, prelude=(
        "import atexit, sys\natexit.register(lambda: print(sorted(\n"
        f"    m for m in sys.modules if m in {unused!r})))"))
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
