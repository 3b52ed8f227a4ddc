"""``nonod``: the nono supervisor daemon.

::

    nonod [--daemonize] [--system] [--socket PATH] [--config FILE]

It runs in the foreground, as a new-style daemon does (systemd's daemon(7)): ``nonod &``, a
supervisor, systemd (``Type=notify``) or launchd each hold the daemon's own pid. With
``--daemonize`` (what ``nonoctl daemon start`` and autostart use) it detaches (double fork, new
session, stdio to its log file) and returns once the socket accepts connections, exiting 0, or
1 with the reason on stderr. ``--foreground`` is accepted and does nothing (the default), so
unit files written for older versions keep working.

Exit statuses: 0 after a clean shutdown; 1 when the daemon could not start or failed; 2 for a
bad command line or configuration.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import final

import structlog
import trio

from . import _logging
from ._config import ConfigError, LoadedConfig, default_profile_dir, default_state_dir, load_config
from ._daemon import DaemonOptions, daemon_version, run_daemon
from .errors import NonoError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nonod",
        description="nono's supervisor daemon: runs sandboxed sessions for nonoctl.",
    )
    parser.add_argument("--socket", type=Path, help="control socket path (default: "
                        "$XDG_RUNTIME_DIR/nono/nonod.sock, or /run/nono/nonod.sock with --system)")
    parser.add_argument("--config", help="nonod.toml (default: $XDG_CONFIG_HOME/nono/nonod.toml, "
                        "or /etc/nono/nonod.toml with --system)")
    parser.add_argument("--system", action="store_true",
                        help="run as the system daemon (root): sessions run as their callers")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--daemonize", action="store_true",
                      help="detach into the background; exit 0 once the socket serves "
                      "(what `nonoctl daemon start` runs)")
    mode.add_argument("--foreground", action="store_true",
                      help="the default; accepted so older unit files keep working")
    parser.add_argument("--version", action="version", version=f"nonod {daemon_version()}")
    return parser


def _daemonize(log_file: Path) -> int | None:
    """Detach; returns the write end of the readiness pipe in the daemon, exits elsewhere.

    Called before trio starts (no threads yet), so forking is safe. The first parent waits
    for one line on the pipe: ``ok`` (exit 0) or an error message (printed, exit 1).
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        message = b"".join(chunks).decode("utf-8", "replace").strip()
        if message == "ok":
            os._exit(EXIT_OK)
        sys.stderr.write(f"nonod: {message or 'the daemon exited before it was ready'}\n")
        sys.stderr.flush()
        os._exit(EXIT_FAILED)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(EXIT_OK)  # the daemon is not a session leader: no terminal can adopt it
    os.chdir("/")
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                  | os.O_NOFOLLOW, 0o600)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.set_inheritable(write_end, False)
    return write_end


def _tell(ready_fd: int | None, message: str) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, message.encode("utf-8", "replace") + b"\n")
    except OSError:
        pass  # the waiting parent is gone: nobody to tell
    finally:
        os.close(ready_fd)


def main(argv: Sequence[str] | None = None) -> int:
    from ._descriptors import raise_limit
    from .sandbox._libc import forbid_core_dumps, keep_out_of_swap

    forbid_core_dumps()  # before a single secret is read
    raise_limit()  # sessions' traffic must not fill the daemon's table (``_descriptors``)
    args = _parser().parse_args(argv)
    log = structlog.get_logger()
    if args.system and os.geteuid() != 0:
        sys.stderr.write("nonod: --system needs root\n")
        return EXIT_USAGE
    reload = functools.partial(load_config, args.config, system=args.system)
    try:
        loaded: LoadedConfig = reload()
    except ConfigError as exc:
        sys.stderr.write(f"nonod: {exc.diagnostics()}\n")
        return EXIT_USAGE
    config = loaded.config
    ready_fd: int | None = None
    if args.daemonize:
        from ._statedir import StateDirError, claim_state_dir

        try:  # before its log is opened there
            state_dir = claim_state_dir(
                Path(config.daemon.state_dir or default_state_dir(system=args.system)))
        except StateDirError as exc:
            sys.stderr.write(f"nonod: {exc.diagnostics()}\n")
            return EXIT_FAILED
        ready_fd = _daemonize(state_dir / "nonod.log")
    _logging.configure_logging(level=config.daemon.log_level, fmt=config.daemon.log_format)
    # Still before a secret is read, and after --daemonize's forks (a lock is not inherited).
    log.info("memory locked out of swap" if keep_out_of_swap() else
             "memory not locked: without CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK, "
             "secrets in this daemon's memory may be written to swap")
    # Imported here: the engine and profile layers are only needed by a running daemon.
    from ._profile_source import ProfilePolicies
    from ._units import parse_duration
    from .sandbox import open_launcher

    profile_dir = config.daemon.profile_dir
    system_profiles = default_profile_dir(system=True) if args.system else None
    policies = ProfilePolicies(
        system=args.system,
        profile_dir=lambda: Path(profile_dir) if profile_dir else system_profiles,
    )
    options = DaemonOptions(system=args.system, socket=args.socket)

    ready = _Ready(ready_fd)
    failures: list[NonoError] = []
    interrupted = False
    try:
        trio.run(functools.partial(
            run_daemon, loaded, options=options, policies=policies,
            launcher_factory=functools.partial(
                open_launcher, config.sandbox.mode,
                warm_idle=parse_duration(config.sandbox.warm_idle)),
            reload=reload, task_status=ready,
        ))
    except* NonoError as group:
        failures = _leaves(group)
    except* KeyboardInterrupt:
        interrupted = True
    for failure in failures:
        log.error("nonod failed", code=failure.code, error=failure.message, hint=failure.hint)
    if failures or interrupted:
        ready.fail("; ".join(f.diagnostics() for f in failures) or "interrupted")
        return EXIT_FAILED
    return EXIT_OK

@final
class _Ready:
    """The ``task_status`` of the whole daemon: tells a detaching parent that we serve."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def started(self, value: object = None) -> None:
        del value
        self._say("ok")

    def fail(self, message: str) -> None:
        self._say(message)

    def _say(self, message: str) -> None:
        fd, self._fd = self._fd, None
        _tell(fd, message)


def _leaves(group: BaseExceptionGroup[NonoError]) -> list[NonoError]:
    out: list[NonoError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
