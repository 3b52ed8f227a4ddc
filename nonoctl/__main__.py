"""``nonoctl`` entry point (``python -m nonoctl``)."""

from __future__ import annotations

import gc
import os
import sys


def _drop_working_directory() -> None:
    """``python -m nonoctl`` puts the working directory first on ``sys.path``, and nonoctl is
    run in directories the user did not write (a cloned repository): a ``nonod/`` or a
    ``msgspec.py`` planted there would run as the user at the first import. Our own package
    is already imported; nothing else of ours is looked up there (``nonod.__main__`` does the
    same for the daemon; it cannot be imported from here before this has run)."""
    if sys.flags.safe_path or not sys.path:
        return
    try:
        cwd = os.getcwd()
    except OSError:  # removed: ``-m`` made no entry for it (or "")
        cwd = ""
    if sys.path[0] in ("", cwd):
        del sys.path[0]


def main() -> None:
    # An attached ``launch``/``run`` with a plain command line runs with the standard library
    # alone (``_lean``: none of the imports below); anything else declines, having done
    # nothing, and runs below.
    from . import _lean

    code = _lean.run(sys.argv[1:])
    if code is not None:
        _exit(code)
        return
    # msgspec imports typing_extensions only to improve type-hint introspection we do not use,
    # and falls back to ``typing`` without it; skipping it saves ~10 ms of every command's
    # startup. This process never needs it otherwise.
    sys.modules.setdefault("typing_extensions", None)  # type: ignore[arg-type]
    # The imports make tens of thousands of objects and no garbage: collecting while they run
    # is wasted (~1.5 ms). Frozen afterwards, they are never scanned again either.
    gc.disable()
    try:
        from ._cli import main as run
    finally:
        gc.freeze()
        gc.enable()
    _exit(run())


def _exit(code: int) -> None:
    """Exit with ``code``. The interpreter's own teardown (clearing every module, collecting
    what they held) takes ~7 ms, a tenth of a command, and does nothing a command needs once
    its output is flushed: unless something registered an exit handler or a thread still
    runs, the process ends at once."""
    if "threading" in sys.modules and sys.modules["threading"].active_count() > 1:
        sys.exit(code)
    import atexit

    if getattr(atexit, "_ncallbacks", lambda: 1)() > 0:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the interpreter reports it as it always did
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    _drop_working_directory()
    main()
