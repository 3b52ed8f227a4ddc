"""``nonoctl``: the command line of nono's daemon.

The hot path imports only the standard library, msgspec, the protocol module and the
error hierarchy: never trio, structlog or the daemon (``nonoctl ps`` must answer in well under
100 ms). Everything else (terminal handling, subprocess, doctor probes) is imported inside the
command that needs it.

Exit statuses (also in ``docs/cli.md``):

====  ===============================================================================
0     success; for ``launch`` (attached), ``attach`` and ``wait``: the program exited 0
1-    for those three: the program's own exit status
128+N the program was killed by signal N
1     a request failed (no such session, ...); ``audit verify``: the file was tampered with
2     bad command line (or ``usage.*`` from the daemon)
2     ``audit verify``: the audit file is incomplete (no final record)
3     ``daemon status``/``daemon stop``: no daemon is running
122   nonod unreachable, refused the connection (``auth.*``) or broke the protocol
123   launch refused: credentials (``credentials.*``)
124   launch refused: trust verification failed (``trust.*``)
125   launch refused: profile, policy, sandbox setup or session limits
126   launch refused: the command exists but cannot be executed
127   launch refused: the command was not found
====  ===============================================================================
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

from nonod import protocol as p
from nonod.control._socketdir import plain_path
from nonod.errors import NonoError

from . import _fastargs, _lean, _nono
from ._flags import GLOBAL, JSON, LAUNCH_FLAGS, LAUNCH_OWN, PS, STOP, Flag
from ._output import Output
from ._sanitize import OutputFilter, field
from .client import (
    ClientError,
    Connection,
    ConnectionLost,
    RemoteError,
    check,
    connect,
    launch_environment,
    working_directory,
)

if TYPE_CHECKING:
    import argparse
    from pathlib import Path  # imported where used: ~10 ms that the hot verbs do not need

    from nonod import audit, trust

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_RUNNING: Final = 3
EXIT_DAEMON: Final = 122
EXIT_CREDENTIALS: Final = 123
EXIT_TRUST: Final = 124
EXIT_REFUSED: Final = 125
EXIT_CANNOT_EXEC: Final = 126
EXIT_NOT_FOUND: Final = 127
EXIT_INTERRUPTED: Final = 130

DETACH_KEY: Final = 0x1D  # Ctrl-]

Handler = Callable[["argparse.Namespace", list[str], Output], int]


class _Verbs(Protocol):
    """Adds one verb (its own parser) to a command: name, help, and shared option parsers."""

    def __call__(self, name: str, help: str,
                 *parents: argparse.ArgumentParser) -> argparse.ArgumentParser: ...


def exit_code_for(error: p.ErrorReply, *, launching: bool) -> int:
    """The exit status for a daemon error (see the module docstring)."""
    code = error.code
    family = code.split(".", 1)[0]
    if family in ("auth", "protocol", "client", "daemon"):
        return EXIT_DAEMON
    if family == "usage":
        return EXIT_USAGE
    if not launching:
        return EXIT_FAILURE
    if family in ("credentials", "credential"):
        return EXIT_CREDENTIALS
    if family == "trust":
        return EXIT_TRUST
    if family == "launch" and error.details.get("step") == "exec":
        err = error.details.get("errno", "")
        if err == str(errno.ENOENT):
            return EXIT_NOT_FOUND
        if err in (str(errno.EACCES), str(errno.ENOEXEC), str(errno.EPERM)):
            return EXIT_CANNOT_EXEC
    return EXIT_REFUSED


def shell_status(exited: p.Exited) -> int:
    if exited.signal is not None:
        return 128 + exited.signal
    return exited.exit_code if exited.exit_code is not None else EXIT_FAILURE


# ------------------------------------------------------------------------------- parsing


_abs = _lean.absolute
_profile_arg = _lean.profile_arg


def _add_launch_flags(parser: argparse.ArgumentParser) -> None:
    """nono's ``run`` flags."""
    for title, flags in LAUNCH_FLAGS:
        _add_flags(parser.add_argument_group(title), flags)


def _add_flags(parser: argparse._ActionsContainer, flags: Sequence[Flag]) -> None:
    """``flags`` (``nonoctl._flags``) as argparse options."""
    for flag in flags:
        how: dict[str, Any] = {"dest": flag.dest, "help": flag.help}
        if flag.kind == "flag":
            how["action"] = "store_true"
        elif flag.kind == "append":
            how.update(action="append", default=[])
        if flag.convert is not None:
            how["type"] = flag.convert
        if flag.metavar is not None:
            how["metavar"] = flag.metavar
        parser.add_argument(*flag.names, **how)


def _options(args: argparse.Namespace) -> p.LaunchOptions:
    return p.LaunchOptions(**_lean.option_values(vars(args)))


_command_word = _fastargs.command_word


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's subparser (faster: startup matters)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="nonoctl",
        description="Run programs in kernel-enforced sandboxes, supervised by nonod.",
        epilog="Exit statuses and every flag: docs/cli.md. `nonoctl COMMAND --help` for more.",
    )
    parser.add_argument("--socket", type=plain_path, metavar="PATH",
                        help="nonod's control socket (default: $NONO_SOCKET, else the user "
                        "daemon's)")
    _add_flags(parser, GLOBAL)
    parser.set_defaults(func=_cmd_help, parser=parser)
    json_flag = argparse.ArgumentParser(add_help=False)
    _add_flags(json_flag, [JSON])
    # A verb's --json must not reset a --json given before the verb (`daemon --json status`).
    verb_json = argparse.ArgumentParser(add_help=False)
    verb_json.add_argument(*JSON.names, action="store_true", default=argparse.SUPPRESS,
                           help=JSON.help)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    # What the commands not run here fill (their options may clash: the last one wins).
    unused = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")

    def command(name: str, func: Handler, help: str, *, aliases: Sequence[str] = (),
                json: bool = True) -> argparse.ArgumentParser:
        if only is not None and only != name and only not in aliases:
            return unused  # not needed for this run
        cmd = sub.add_parser(name, aliases=list(aliases), help=help, description=help,
                             parents=[json_flag] if json else [])
        cmd.set_defaults(func=func, parser=cmd)
        if not json:
            cmd.set_defaults(json=False)
        return cmd

    def actions(group: argparse.ArgumentParser,
                common: Sequence[argparse.ArgumentParser] = ()) -> _Verbs:
        """``group``'s verbs, each its own parser (so options go anywhere after it), with
        --json and the ``common`` options, and the options of the ``parents`` it is given."""
        if group is unused:  # building verb parsers costs startup time: only for the command
            return lambda name, help, *parents: unused
        verbs = group.add_subparsers(dest="action", metavar="ACTION", required=True)

        def action(name: str, help: str,
                   *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
            return verbs.add_parser(name, help=help, description=help,
                                    parents=[verb_json, *common, *parents])
        return action

    def option(*names: str, **how: Any) -> argparse.ArgumentParser:
        """One option, to share between verbs (as an argparse parent)."""
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument(*names, **how)
        return parent

    launch = command("launch", _cmd_launch, "start a sandboxed session (-- CMD ARGS)",
                     aliases=["run"])
    launch.add_argument("profile_name", nargs="?", metavar="PROFILE",
                        help="profile name or file (same as --profile)")
    _add_flags(launch, LAUNCH_OWN)
    _add_launch_flags(launch)

    _add_flags(command("ps", _cmd_ps, "list sessions"), PS)

    top = command("top", _cmd_top, "live resource usage of your sessions (like docker stats)")
    top.add_argument("-n", "--interval", type=float, default=2.0, metavar="S",
                     help="seconds between refreshes (default 2)")
    top.add_argument("--once", action="store_true",
                     help="print one frame (CPU%% over one interval) and exit")

    inspect = command("inspect", _cmd_inspect, "show one session in detail")
    inspect.add_argument("session", metavar="ID", help="session id, name or id prefix")

    stop = command("stop", _cmd_stop, "stop a session (SIGTERM, grace, SIGKILL)")
    stop.add_argument("session", metavar="ID")
    _add_flags(stop, STOP)

    wait = command("wait", _cmd_wait, "wait for a session to end; exit with its status")
    wait.add_argument("session", metavar="ID")

    logs = command("logs", _cmd_logs,
                   "print a session's audit events (--output: its program's output)")
    logs.add_argument("session", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new events (output) until the session ends")
    logs.add_argument("--kind", action="append", metavar="K",
                      help="only events of kind K (network, fs_denied, signal...; repeatable)")
    logs.add_argument("--output", action="store_true",
                      help="the detached program's terminal output instead of its events")
    logs.add_argument("-n", "--tail", type=int, metavar="N",
                      help="--output: only the last N lines")
    logs.add_argument("--raw", action="store_true",
                      help="--output on a terminal: the bytes as written, escape sequences "
                           "and all (by default only colours act; other control sequences "
                           "are shown, not obeyed)")

    approvals = command("approvals", _cmd_approvals,
                        "pending approvals of your sessions (`inspect ID`: one in detail)")
    approvals.add_argument("action", nargs="?", choices=["list", "inspect"], default="list")
    approvals.add_argument("id", nargs="?", metavar="ID", help="approval id (inspect)")
    approvals.add_argument("--session", metavar="ID", help="only this session's")

    approve = command("approve", _cmd_approve,
                      "let a held request through (--once: this request only, the default; "
                      "--session: this host for the rest of the session)")
    approve.add_argument("id", metavar="ID", help="approval id (`nonoctl approvals`)")
    scope = approve.add_mutually_exclusive_group()
    scope.add_argument("--once", dest="answer", action="store_const", const="once")
    scope.add_argument("--session", dest="answer", action="store_const", const="session")
    scope.add_argument("--save-to-profile", dest="answer", action="store_const",
                       const="save", help="--session, and add the host to the profile file")
    approve.set_defaults(answer="once")

    deny = command("deny", _cmd_deny, "refuse a held request (the program gets 403)")
    deny.add_argument("id", metavar="ID", help="approval id (`nonoctl approvals`)")

    events = command("events", _cmd_events,
                     "print the audit events of every session you may see, live")
    events.add_argument("-f", "--follow", action="store_true",
                        help="follow live (always: there is no history across sessions)")
    events.add_argument("--session", metavar="ID", help="only this session")
    events.add_argument("--kind", action="append", metavar="K",
                        help="only events of kind K (repeatable)")

    attach = command("attach", _cmd_attach,
                     "connect the terminal to a detached session (detach: Ctrl-] d)", json=False)
    attach.add_argument("session", metavar="ID")

    command("prune", _cmd_prune, "forget ended sessions (records and logs)")

    daemon = command("daemon", _cmd_daemon, "start, stop or query the user daemon")
    daemon_actions = actions(daemon)
    daemon_actions("start", "start the user daemon (nonod --daemonize) unless one runs")
    daemon_actions("stop", "stop the daemon and its sessions")
    daemon_actions("status", "the daemon's pid, version, socket and sessions")

    profile = command("profile", _cmd_profile, "list, show or validate profiles")
    profile.set_defaults(target=None, resolved=False)
    profile_actions = actions(profile)
    profile_actions("list", "the profiles the daemon finds (user, then built-in)")
    show = profile_actions("show", "a profile as written, or (--resolved) as enforced here")
    show.add_argument("target", metavar="PROFILE", help="name or file")
    show.add_argument("--resolved", action="store_true",
                      help="the policy the sandbox would enforce here")
    _add_launch_flags(show)
    validate = profile_actions("validate", "check a profile; print its problems")
    validate.add_argument("target", metavar="PROFILE", help="name or file")

    secret = command("secret", _cmd_secret,
                     "store, list, test or delete secrets in the daemon's keychain, and say "
                     "which hosts each may be sent to")
    secret.set_defaults(name=None)
    secret_actions = actions(secret)
    for action, text in (("set", "store a secret: the value is read from a no-echo prompt, "
                          "or from stdin when it is not a terminal; never from argv"),
                         ("test", "whether the daemon's keychain holds NAME"),
                         ("delete", "remove NAME from the daemon's keychain")):
        secret_actions(action, text).add_argument(
            "name", nargs="?", metavar="NAME", help="the credential's name")
    secret_actions("list", "the names (never the values) in the daemon's keychain")
    hosts = secret_actions("hosts", "the upstreams a secret may be sent to: its first route "
                           "binds it; a route elsewhere is refused until added here")
    hosts.add_argument("name", nargs="?", metavar="NAME",
                       help="the secret as a route names it (credential_key): github_token, "
                       "env://VAR, file:///path")
    hosts.add_argument("--add", action="append", default=[], metavar="URL",
                       help="allow this upstream too (https://host[:port]); repeatable")
    hosts.add_argument("--clear", action="store_true",
                       help="forget every upstream: the next route binds it again")

    trust_cmd = command("trust", _cmd_trust,
                        "keys, signatures and policies for instruction files (keys live in "
                        "the daemon)")
    trust_cmd.set_defaults(files=[], key="default", force=False, pem=False, user=False,
                           include=[], policy=None, all=False)
    trust_actions = actions(trust_cmd)

    key = option("--key", "--keyref", "--id", dest="key", default="default", metavar="NAME",
                 help="key name in the keychain, or a file:///abs/path key ref (default: "
                 "default)")
    user = option("--user", action="store_true",
                  help="the user-level policy ($XDG_CONFIG_HOME/nono/trust-policy.json)")
    policy = option("--policy", type=Path, metavar="FILE",
                    help="the policy (default: the user-level policy merged with "
                    "./trust-policy.json)")
    every = option("--all", action="store_true",
                   help="every file ./trust-policy.json includes (under the current directory)")
    trust_actions("keygen", "make a signing key in the daemon's keychain", key).add_argument(
        "--force", action="store_true", help="replace an existing key")
    trust_actions("export-key", "print a key's public half", key).add_argument(
        "--pem", action="store_true", help="PEM, not base64")
    init = trust_actions("init", "write a trust policy whose publisher is KEY", key, user)
    init.add_argument("--force", action="store_true", help="replace an existing policy")
    init.add_argument("--include", action="extend", nargs="+", default=[], metavar="PATTERN",
                      help="globs of files to verify (repeatable; several after one "
                      "--include, as in nono)")
    sign = trust_actions("sign", "sign files (FILE.bundle beside each)", key, every)
    sign.add_argument("files", nargs="*", metavar="FILE", help="the files to sign")
    sign.add_argument("--multi-subject", action="store_true",
                      help="one ./.nono-trust.bundle over all the files (nono's), not a "
                      "FILE.bundle beside each")
    trust_actions("sign-policy", "sign a trust policy", key, user).add_argument(
        "files", nargs="*", metavar="FILE", help="the policy (default ./trust-policy.json)")
    trust_actions("verify", "check files against their bundles and the policy", policy,
                  every).add_argument("files", nargs="*", metavar="FILE",
                                      help="the files to check")
    trust_actions("list", "the policy's publishers and each included file", policy)

    command("doctor", _cmd_doctor, "check what this machine can enforce, and what to fix")

    audit = command("audit", _cmd_audit,
                    "verify, show, list or prune audit files (read locally)")
    audit.set_defaults(session=None, allow_incomplete=False, no_ledger=False, key=None,
                       older_than=None, keep=None, dry_run=False, envelope=None)
    state_dir = option("--state-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                       help="the daemon's state directory (default: the user daemon's, or the "
                       "system daemon's with --system)")
    audit.add_argument("--state-dir", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    audit_actions = actions(audit, [state_dir])
    audit_verify = audit_actions("verify", "check a session's audit file (chain, seal, "
                                 "ledger, signature)")
    audit_verify.add_argument("session", metavar="ID", nargs="?",
                              help="session id, name or unique id prefix")
    audit_verify.add_argument("--envelope", type=Path, metavar="FILE",
                              help="check a shipped envelope (records, chain, seal, signature) "
                              "instead of a session in the state directory")
    audit_verify.add_argument("--allow-incomplete", action="store_true",
                              help="accept a file with no final record (a live session)")
    audit_verify.add_argument("--no-ledger", action="store_true",
                              help="do not check the session against the ledger")
    audit_verify.add_argument("--key", type=Path, metavar="PUB",
                              help="the signature must verify with this public key (PEM, or "
                              "base64 DER as `trust export-key` prints); default: the "
                              "publishers of your user-level trust policy")
    audit_actions("show", "print a session's audit records").add_argument(
        "session", metavar="ID", help="session id, name or unique id prefix")
    audit_actions("list", "the sessions whose audit files are in the state directory")
    prune = audit_actions("prune", "remove sealed sessions' audit files")
    prune.add_argument("--older-than", metavar="AGE",
                       help="sealed sessions older than AGE (30d, 12h, 90m)")
    prune.add_argument("--keep", type=int, metavar="N",
                       help="keep only the N most recently sealed sessions")
    prune.add_argument("--dry-run", action="store_true",
                       help="list what would be removed; remove nothing")

    learn = command("learn", _cmd_learn,
                    "trace a run of a program and propose its profile (-- CMD ARGS); runs "
                    "here, not in the daemon")
    learn.add_argument("--timeout", type=float, metavar="S",
                       help="end the run S seconds after the program is traced (SIGTERM, grace, "
                            "SIGKILL)")
    learn.add_argument("--all", action="store_true",
                       help="also list what needed no entry (built-in groups, the sandbox)")
    learn.add_argument("-p", "--profile", metavar="BASE",
                       help="propose only what this profile (name or file) lacks")
    learn_dest = learn.add_mutually_exclusive_group()
    learn_dest.add_argument("--save", metavar="NAME",
                            help="write the profile to the user profile dir as NAME")
    learn_dest.add_argument("--output", "-o", type=Path, metavar="FILE",
                            help="write the profile to FILE")
    learn.add_argument("--force", action="store_true", help="--save: replace an existing one")
    learn.add_argument("--listen-port", action="append", type=int, default=[], metavar="P",
                       help="forward host 127.0.0.1:P into the run (repeatable)")

    completion = command("completion", _cmd_completion, "print a shell completion script",
                         json=False)
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


# ------------------------------------------------------------------------------ commands


def _connect(args: argparse.Namespace, *, autostart: bool = True) -> Connection:
    """A connection whose ``hello`` goes out with its first request (``Connection.open``:
    one round trip fewer). Every command sends that request as soon as it is connected (a
    prompt or local work comes before the connection): a ``hello`` held while waiting would
    run into the daemon's handshake timeout."""
    return connect(
        args.socket, system=args.system, autostart=autostart and not args.no_autostart,
        defer_hello=True,
    )


_R = TypeVar("_R")


def _expect(reply: p.AnyReply, kind: type[_R]) -> _R:
    if not isinstance(reply, kind):
        raise ConnectionLost(f"unexpected `{type(reply).__name__}` from nonod")
    return reply


def _cmd_help(args: argparse.Namespace, command: list[str], out: Output) -> int:
    if args.version:
        from nonod import __version__

        out.line(f"nonoctl {__version__} (protocol {p.PROTOCOL_VERSION})")
        return EXIT_OK
    out.line(args.parser.format_help().rstrip("\n"))
    return EXIT_USAGE


def _term_size() -> p.TermSize | None:
    size = _lean.terminal_size()
    return None if size is None else p.TermSize(rows=size[0], cols=size[1])


def _nono_variables(args: argparse.Namespace, out: Output, *, with_profile: bool) -> bool:
    """nono's ``NONO_*`` variables into the launch flags ``args`` (``_nono``); False (and
    the error said) when one cannot be honoured."""
    try:
        _nono.apply_environment(vars(args), os.environ, with_profile=with_profile,
                                note=out.note)
    except _nono.NonoVariableError as exc:
        out.error(str(exc))
        return False
    return True


def _cmd_launch(args: argparse.Namespace, command: list[str], out: Output) -> int:
    if not _nono_variables(args, out, with_profile=True):
        return EXIT_USAGE
    if args.profile and args.profile_name:
        out.error("give the profile once: as PROFILE or as --profile")
        return EXIT_USAGE
    profile = _profile_arg(args.profile or args.profile_name)
    detach = args.detach
    stdio: p.Stdio = "pty" if (detach or args.dry_run) else "passed"
    env, dropped = launch_environment()
    for name in dropped:
        out.note(f"nonoctl: warning: environment variable {name} left out: longer than a "
                 f"program can be given ({p.MAX_ARG_STRLEN} bytes with its name)")
    try:
        request = p.Launch(
            argv=tuple(command), profile=profile, cwd=working_directory(), env=env,
            options=_options(args), name=args.name, detach=detach, stdio=stdio,
            term=_term_size(), dry_run=args.dry_run,
        )
    except ValueError as exc:
        out.error(f"invalid launch: {exc}")
        return EXIT_USAGE
    if args.trust_override:
        out.note("nonoctl: WARNING: --trust-override: instruction files are NOT verified for "
                 "this session (recorded in its audit stream)")
    with _connect(args) as conn:
        if args.dry_run:
            reply = conn.request(request)
            if isinstance(reply, p.DryRun):
                out.dry_run(reply)
            return EXIT_OK
        if detach:
            reply = conn.request(request)
            if not isinstance(reply, p.Launched):
                raise ConnectionLost("unexpected reply to launch")
            out.launched(reply.session)
            out.enforcement_warning(reply.session)
            return EXIT_OK
        return _run_attached(conn, request, out)


_SignalPipe = _lean.SignalPipe
_signum = _lean.signum


def _run_attached(conn: Connection, request: p.Launch, out: Output) -> int:
    """Launch on our own terminal: pass stdio, forward signals, exit with the program
    (``_lean.attend``: the lean path's conversation, one for both)."""
    return _lean.attend(conn.sock, conn.codec, conn.frames_for(request), out)


def _cmd_ps(args: argparse.Namespace, command: list[str], out: Output) -> int:
    # A thousand sessions decode and render into ~20 000 objects and no cycle: the collector's
    # passes over them meanwhile are wasted (~0.25 ms, a tenth of that work).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _list_sessions(args, out)
    finally:
        if collecting:
            gc.enable()


def _list_sessions(args: argparse.Namespace, out: Output) -> int:
    with _connect(args) as conn:
        conn.expect_only(p.SessionList)
        # The table shows neither usage nor enforcement: the daemon need not gather them.
        try:
            reply = conn.request(p.ListSessions(all=args.all, brief=not out.json_mode))
        except RemoteError as exc:
            if exc.remote_code != "protocol.invalid" or out.json_mode:
                raise
            # a daemon started before `brief` existed (upgraded, not restarted)
            reply = conn.request(p.ListSessions(all=args.all))
    if not isinstance(reply, p.SessionList):
        raise ConnectionLost("unexpected reply to ps")
    if args.quiet and not out.json_mode:
        for info in reply.sessions:
            out.line(info.id)
        return EXIT_OK
    out.sessions(reply.sessions)
    return EXIT_OK


def _cmd_top(args: argparse.Namespace, command: list[str], out: Output) -> int:
    """Sample every live session's usage each interval; CPU% is CPU time over wall time
    between two samples (100% is one CPU)."""
    import time

    if not args.interval > 0:
        out.error("--interval must be positive")
        return EXIT_USAGE
    before: dict[str, tuple[float, int]] = {}
    with _connect(args) as conn:
        while True:
            reply = conn.request(p.ListSessions(all=False))
            if not isinstance(reply, p.SessionList):
                raise ConnectionLost("unexpected reply to ps")
            now = time.monotonic()
            rows: list[tuple[p.SessionInfo, float | None]] = []
            for info in reply.sessions:
                cpu = info.usage.cpu_ns if info.usage is not None else 0
                last = before.get(info.id)
                share = (None if last is None or now <= last[0]
                         else 100 * (cpu - last[1]) / 1e9 / (now - last[0]))
                before[info.id] = (now, cpu)
                rows.append((info, share))
            if args.once and all(share is None for _, share in rows) and rows:
                time.sleep(args.interval)  # a first sample: CPU% needs a second one
                continue
            if not args.once and not out.json_mode:
                out.raw(b"\x1b[H\x1b[2J")  # home, clear: a refreshing view
            out.top(rows)
            if args.once:
                return EXIT_OK
            time.sleep(args.interval)


def _cmd_inspect(args: argparse.Namespace, command: list[str], out: Output) -> int:
    with _connect(args) as conn:
        reply = conn.request(p.Inspect(session=args.session))
    if isinstance(reply, p.SessionReply):
        out.session(reply.session)
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace, command: list[str], out: Output) -> int:
    with _connect(args) as conn:
        reply = conn.request(p.Stop(session=args.session, timeout=args.timeout, force=args.force))
    if isinstance(reply, p.Exited):
        out.exited(reply)
    return EXIT_OK


def _cmd_wait(args: argparse.Namespace, command: list[str], out: Output) -> int:
    with _connect(args) as conn:
        reply = conn.request(p.Wait(session=args.session))
    if not isinstance(reply, p.Exited):
        raise ConnectionLost("unexpected reply to wait")
    out.exited(reply)
    return shell_status(reply)


def _kinds(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(k.strip() for v in values for k in v.split(",") if k.strip())


def _follow_audit(conn: Connection, request: p.AuditFollow, out: Output, *, as_json: bool,
                  wrap: bool, announce: str | None = None) -> int:
    """Print the records of an ``AuditFollow`` stream until it ends."""
    _expect(conn.request(request), p.Ok)
    if announce is not None:
        out.note(announce)
    while True:
        reply = check(conn.receive())
        if isinstance(reply, p.AuditRecord):
            out.audit_record(reply.session, bytes(reply.record), as_json=as_json, wrap=wrap)
        elif isinstance(reply, p.AuditDropped):
            out.audit_dropped(reply)
        elif isinstance(reply, p.EndOfOutput):
            if reply.reason == "refused":
                out.error(f"session {request.session} was refused before its program started "
                          "(its launch said why); nothing more will be written for it")
            return EXIT_FAILURE if reply.reason in ("lagged", "refused") else EXIT_OK
        else:
            raise ConnectionLost(f"unexpected `{type(reply).__name__}` in an audit stream")


def _cmd_events(args: argparse.Namespace, command: list[str], out: Output) -> int:
    try:
        request = p.AuditFollow(session=args.session, kinds=_kinds(args.kind))
    except ValueError as exc:
        out.error(f"invalid request: {exc}")
        return EXIT_USAGE
    as_json = out.json_mode or not sys.stdout.isatty()
    with _connect(args) as conn:
        return _follow_audit(conn, request, out, as_json=as_json, wrap=True,
                             announce="nonoctl: following audit events (Ctrl-C stops)")


def _approval_target(a: p.ApprovalInfo) -> str:
    """What is asked about: ``host:port`` (and ``method path``), or a tool call's command."""
    if a.mode == "tool":  # a tool sandbox's approve rule (docs/tool-sandboxes.md)
        return field(f"{a.host} {a.path}".rstrip())  # the agent's words: no lines of theirs
    return field(f"{a.host}:{a.port}" + (f" {a.method} {a.path}" if a.method else ""))


def _approval_line(a: p.ApprovalInfo) -> str:
    left = max(0, int((a.expires - dt.datetime.now(dt.UTC)).total_seconds()))
    return (f"{a.id}  {field(a.session_name)} ({a.session[:12]})  {a.mode} "
            f"{_approval_target(a)}"
            f"  pid {a.pid}  {left}s left")


def _cmd_approvals(args: argparse.Namespace, command: list[str], out: Output) -> int:
    with _connect(args) as conn:
        if args.action == "inspect":
            if not args.id:
                out.error("approvals inspect needs an approval ID")
                return EXIT_USAGE
            one = _expect(conn.request(p.ApprovalInspect(id=args.id)), p.ApprovalReply)
            if out.json_mode:
                out.json(one.approval)
            else:
                import shlex  # only here: nonoctl's start stays lean

                a = one.approval
                out.line(_approval_line(a))
                out.line(f"  command: {field(shlex.join(a.command))}")
                out.line(f"  backend: {a.backend}  profile: {field(a.profile or '-')}")
                out.line(f"  since {a.created.isoformat()}, denied at {a.expires.isoformat()}")
            return EXIT_OK
        listed = _expect(conn.request(p.ApprovalList(session=args.session)), p.Approvals)
    if out.json_mode:
        out.json(listed.approvals)
    elif not listed.approvals:
        out.line("no pending approvals")
    for a in () if out.json_mode else listed.approvals:
        out.line(_approval_line(a))
    return EXIT_OK


def _answer(args: argparse.Namespace, out: Output, request: p.ApprovalAnswer) -> int:
    with _connect(args) as conn:
        reply = _expect(conn.request(request), p.ApprovalReply)
    if out.json_mode:
        out.json(reply)
        return EXIT_OK
    a = reply.approval
    out.line(f"{reply.answer}: {_approval_target(a)} for session {a.session_name}")
    if reply.diff:
        out.line(f"saved to {reply.saved_to}:")
        out.line(reply.diff.rstrip("\n"))
    return EXIT_OK


def _cmd_approve(args: argparse.Namespace, command: list[str], out: Output) -> int:
    save = args.answer == "save"
    return _answer(args, out, p.ApprovalAnswer(
        id=args.id, answer="session" if save else args.answer, save_to_profile=save))


def _cmd_deny(args: argparse.Namespace, command: list[str], out: Output) -> int:
    return _answer(args, out, p.ApprovalAnswer(id=args.id, answer="deny"))


def _cmd_logs(args: argparse.Namespace, command: list[str], out: Output) -> int:
    if not args.output:
        if args.tail is not None:
            out.error("-n/--tail goes with --output (the program's output)")
            return EXIT_USAGE
        request = p.AuditFollow(session=args.session, kinds=_kinds(args.kind), from_start=True,
                                follow=args.follow)
        as_json = out.json_mode or not sys.stdout.isatty()
        with _connect(args) as conn:
            return _follow_audit(conn, request, out, as_json=as_json, wrap=False)
    if args.kind:
        out.error("--kind filters audit events; it does not go with --output")
        return EXIT_USAGE
    if args.tail is not None and args.tail < 0:
        out.error("--tail takes a number of lines >= 0")
        return EXIT_USAGE
    safe = None if args.raw or not sys.stdout.isatty() else OutputFilter()
    with _connect(args) as conn:
        conn.send(p.Logs(session=args.session, follow=args.follow, tail=args.tail))
        while True:
            reply = check(conn.receive())
            if isinstance(reply, p.Output):
                out.output_chunk(args.session, reply, safe)
            elif isinstance(reply, p.EndOfOutput):
                if safe is not None:
                    out.raw(safe.feed(b"", final=True))
                if reply.reason == "lagged":
                    out.error("output came faster than it could be read; some was skipped",
                              "use --tail to start from recent output")
                    return EXIT_FAILURE
                return EXIT_OK


def _cmd_attach(args: argparse.Namespace, command: list[str], out: Output) -> int:
    import select

    with _connect(args) as conn:
        reply = conn.request(p.Attach(session=args.session, term=_term_size()))
        if not isinstance(reply, p.Attached):
            raise ConnectionLost("unexpected reply to attach")
        stdin_open = True
        tty_state = _raw_mode(0)
        out.note(f"[attached to {reply.session}; detach with Ctrl-] d]\r")
        escape = False
        try:
            with _SignalPipe(("SIGWINCH", "SIGTERM", "SIGHUP")) as signals:
                while True:
                    sock = conn.fileno()
                    watch = [sock, signals.fd] + ([0] if stdin_open else [])
                    ready = [sock] if conn.has_buffered() else select.select(watch, [], [])[0]
                    if signals.fd in ready:
                        for signum in signals.read():
                            if signum == _signum("SIGWINCH"):
                                term = _term_size()
                                if term is not None:
                                    conn.send(p.Resize(term=term))
                            else:
                                conn.send(p.Detach())
                    if 0 in ready:
                        data = os.read(0, 4096)
                        if not data:
                            stdin_open = False
                            conn.send(p.Detach())
                        else:
                            keys, escape, detach = _scan_keys(data, escape)
                            for start in range(0, len(keys), p.MAX_INPUT_BYTES):
                                conn.send(p.Input(data=keys[start : start + p.MAX_INPUT_BYTES]))
                            if detach:
                                conn.send(p.Detach())
                    if sock not in ready:
                        continue
                    for message in conn.receive_available():
                        match message:
                            case p.Output(data=data):
                                out.raw(data)
                            case p.Detached():
                                _restore(tty_state)
                                out.note(f"[detached from {reply.session}]")
                                return EXIT_OK
                            case p.Exited():
                                _restore(tty_state)
                                return shell_status(message)
                            case p.EndOfOutput(reason="lagged"):
                                _restore(tty_state)
                                out.error("output came faster than the terminal read it")
                                return EXIT_FAILURE
                            case p.ErrorReply():
                                _restore(tty_state)
                                out.error(message.message, message.hint)
                                tty_state = _raw_mode(0)
                            case _:
                                pass
        finally:
            _restore(tty_state)


def _scan_keys(data: bytes, escape: bool) -> tuple[bytes, bool, bool]:
    """Split typed bytes into what goes to the session and the detach sequence (Ctrl-] d).

    Returns ``(bytes to send, escape pending, detach)``. Ctrl-] followed by anything but ``d``
    is sent as typed; Ctrl-] Ctrl-] sends one Ctrl-].
    """
    keys = bytearray()
    for index, byte in enumerate(data):
        if escape:
            escape = False
            if byte == ord("d"):
                return bytes(keys), False, True
            if byte != DETACH_KEY:
                keys.append(DETACH_KEY)
            keys.append(byte)
            continue
        if byte == DETACH_KEY:
            escape = True
            continue
        keys.append(byte)
        del index
    return bytes(keys), escape, False


def _raw_mode(fd: int) -> list[Any] | None:
    if not os.isatty(fd):
        return None
    import termios
    import tty

    saved: list[Any] = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    return saved


def _restore(saved: list[Any] | None) -> None:
    if saved is None:
        return
    import termios

    termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _cmd_prune(args: argparse.Namespace, command: list[str], out: Output) -> int:
    with _connect(args) as conn:
        reply = conn.request(p.Prune())
    if isinstance(reply, p.Pruned):
        if out.json_mode:
            out.json(reply.sessions)
        else:
            out.line(f"removed {len(reply.sessions)} ended session(s)")
    return EXIT_OK


def _cmd_daemon(args: argparse.Namespace, command: list[str], out: Output) -> int:
    from .client import DaemonUnreachable, start_daemon

    if args.action == "start":
        try:
            with _connect(args, autostart=False) as conn:
                reply = conn.request(p.Status())
        except DaemonUnreachable:
            if args.system:
                out.error("the system daemon is not running", "systemctl start nonod-system")
                return EXIT_FAILURE
            start_daemon(args.socket or _env_socket())
            with _connect(args, autostart=False) as conn:
                reply = conn.request(p.Status())
        if isinstance(reply, p.DaemonStatus):
            out.status(reply)
        return EXIT_OK
    try:
        conn = _connect(args, autostart=False)
    except DaemonUnreachable as exc:
        if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            raise
        if out.json_mode:
            out.json({"running": False})
        else:
            out.line("nonod is not running")
        return EXIT_NOT_RUNNING
    with conn:
        if args.action == "status":
            reply = conn.request(p.Status())
            if isinstance(reply, p.DaemonStatus):
                out.status(reply)
            return EXIT_OK
        conn.request(p.Shutdown())
        # The daemon closes every connection once it has stopped its sessions.
        try:
            while True:
                conn.receive()
        except ConnectionLost:
            pass
    out.line("nonod stopped")
    return EXIT_OK


def _env_socket() -> str | None:
    value = os.environ.get("NONO_SOCKET")
    return plain_path(value) if value else None


def _cmd_profile(args: argparse.Namespace, command: list[str], out: Output) -> int:
    if args.action != "list" and not args.target:
        out.error(f"`profile {args.action}` needs a profile name or file")
        return EXIT_USAGE
    # The environment a launch would carry: the daemon looks profiles up (XDG_CONFIG_HOME)
    # and resolves them (HOME, the XDG directories) with it, as it does for the launch.
    env, _ = launch_environment()
    with _connect(args) as conn:
        if args.action == "list":
            reply = conn.request(p.ProfileList(env=env))
            if isinstance(reply, p.Profiles):
                out.profiles(reply.profiles)
            return EXIT_OK
        target = _profile_arg(args.target) or ""
        if args.action == "show":
            if not _nono_variables(args, out, with_profile=False):
                return EXIT_USAGE
            reply = conn.request(p.ProfileShow(
                profile=target, resolved=args.resolved, cwd=working_directory(),
                options=_options(args), env=env,
            ))
            if isinstance(reply, p.ProfileDocument):
                out.profile_document(reply)
            return EXIT_OK
        reply = conn.request(p.ProfileValidate(profile=target, env=env))
        if isinstance(reply, p.ProfileValid):
            out.profile_valid(reply)
        return EXIT_OK


def _read_secret_value(name: str) -> str:
    """The value for ``secret set``: a no-echo prompt on a terminal, else all of stdin (one
    trailing newline removed, as ``echo value |`` adds it)."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"value for {name}: ")
    value = sys.stdin.read() if sys.stdin is not None else ""
    if value.endswith("\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith("\n") else value


def _cmd_secret(args: argparse.Namespace, command: list[str], out: Output) -> int:
    if args.action == "list":
        if args.name:
            out.error("`secret list` takes no name")
            return EXIT_USAGE
        with _connect(args) as conn:
            reply = conn.request(p.SecretList())
        if isinstance(reply, p.Secrets):
            out.secrets(reply.secrets)
        return EXIT_OK
    if not args.name:
        out.error(f"`secret {args.action}` needs a NAME")
        return EXIT_USAGE
    name: str = args.name
    if args.action == "hosts":
        with _connect(args) as conn:
            reply = conn.request(p.SecretBindings(reference=name, add=tuple(args.add),
                                                  clear=args.clear))
        if isinstance(reply, p.SecretBound):
            out.secret_hosts(reply)
        return EXIT_OK
    if args.action == "set":
        value = _read_secret_value(name)
        if not value:
            out.error("no value given (an empty secret is not stored)",
                      f"type it at the prompt, or: `printf %s VALUE | nonoctl secret set {name}`")
            return EXIT_USAGE
        with _connect(args) as conn:
            reply = conn.request(p.SecretSet(name=name, value=value))
        del value
        if isinstance(reply, p.SecretStored):
            out.secret_done("stored", reply)
        return EXIT_OK
    with _connect(args) as conn:
        if args.action == "delete":
            reply = conn.request(p.SecretDelete(name=name))
            if isinstance(reply, p.SecretStored):
                out.secret_done("deleted", reply)
            return EXIT_OK
        reply = conn.request(p.SecretTest(name=name))
    if isinstance(reply, p.SecretState):
        out.secret_state(reply)
        return EXIT_OK if reply.found else EXIT_FAILURE
    return EXIT_OK


_POLICY_FILE: Final = "trust-policy.json"  # nonod.trust.POLICY_FILE_NAME, without the import
_MAX_SUBJECTS: Final = 1000  # nonod.trust.MAX_SUBJECTS, without the import


def _user_trust_dir() -> Path:
    """The caller's nono config dir (trust policy, profiles), by the daemon's lookup."""
    from nonod._xdg import own_config_dir

    return own_config_dir()


def _write_file(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed into place). The
    temporary file is made anew (``O_EXCL``, never through a link): these are written into
    repositories (bundles, policies), where a name planted as a link to one of the user's
    files (``.GEMINI.md.bundle.PID.tmp -> ~/.bashrc``) was written through."""
    if not replace and path.exists():
        raise NonoError(f"{path} already exists", hint="pass --force to replace it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        tmp.unlink(missing_ok=True)  # our name: whatever is there is a leftover or a plant
        fd = os.open(tmp, flags, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NonoError(f"cannot write {path}: {exc.strerror}") from exc


def _read_for_signing(path: Path) -> bytes:
    """A FILE named to ``trust sign``: opened once, never blocking (a FIFO is refused, not
    waited on), a regular file of at most the bytes a signing request takes."""
    from nonod import _callerfs

    try:
        return _callerfs.read_path(str(path), max_bytes=p.MAX_TRUST_SIGN_BYTES).data
    except _callerfs.FileTooLarge:
        raise NonoError(f"{path} is larger than the limit for signing, "
                        f"{p.MAX_TRUST_SIGN_BYTES} bytes") from None
    except _callerfs.CallerFileError as exc:
        raise NonoError(f"cannot read {path}: {exc.reason}") from None


def _trust_key(ref: str) -> str:
    """A key option's value as the daemon names keys: nono's ``keystore://NAME`` is the
    keychain key NAME."""
    return ref[len("keystore://"):] if ref.startswith("keystore://") else ref


def _cmd_trust(args: argparse.Namespace, command: list[str], out: Output) -> int:
    from pathlib import Path

    action: str = args.action
    files: list[str] = args.files
    key = _trust_key(args.key)
    takes_files = {"sign": "FILE...", "verify": "FILE...", "sign-policy": "[FILE]"}
    if action not in takes_files and files:
        out.error(f"`trust {action}` takes no FILE")
        return EXIT_USAGE
    if args.all and action not in ("sign", "verify"):
        out.error(f"`trust {action}` takes no --all")
        return EXIT_USAGE
    if args.all and files:
        out.error(f"`trust {action} --all` takes no FILE")
        return EXIT_USAGE
    if action in ("sign", "verify") and not files and not args.all:
        out.error(f"`trust {action}` needs at least one FILE, or --all")
        return EXIT_USAGE
    if action == "list":
        return _trust_list(args, out)
    if action == "sign-policy" and (len(files) > 1 or (files and args.user)):
        out.error("`trust sign-policy` takes one FILE, or --user")
        return EXIT_USAGE
    if action == "verify":
        return _trust_verify(args, files, out)
    if action in ("keygen", "export-key"):
        with _connect(args) as conn:
            if action == "keygen":
                reply = conn.request(p.TrustKeygen(key=key, force=args.force))
            else:
                reply = conn.request(p.TrustExportKey(key=key, pem=args.pem))
        if not isinstance(reply, p.TrustKey):
            return EXIT_FAILURE
        if out.json_mode:
            out.json(reply)
        elif action == "keygen":
            out.line(f"key id:      {reply.key_id}")
            out.line(f"fingerprint: {reply.fingerprint}")
            out.line(f"public key:  {reply.public_key}")
        else:
            out.line(reply.public_key.rstrip("\n"))
        return EXIT_OK
    if action == "init":
        target_dir = _user_trust_dir() if args.user else Path.cwd()
        target = target_dir / _POLICY_FILE
        if target.exists() and not args.force:
            out.error(f"{target} already exists", "pass --force to replace it")
            return EXIT_FAILURE
        with _connect(args) as conn:
            reply = conn.request(p.TrustInit(key=key, includes=tuple(args.include)))
        if not isinstance(reply, p.TrustPolicyDocument):
            return EXIT_FAILURE
        target_dir.mkdir(parents=True, exist_ok=True)
        _write_file(target, reply.policy, replace=args.force)
        out.line(f"wrote {target}")
        return EXIT_OK
    # sign, sign-policy
    if args.all:
        contents = _included_files()
        if not contents:
            out.note(f"nonoctl: {_POLICY_FILE} includes no file here")
            return EXIT_OK
    else:
        if action == "sign-policy":
            paths = [_user_trust_dir() / _POLICY_FILE] if args.user else [
                Path(files[0]) if files else Path(_POLICY_FILE)]
        else:
            paths = [Path(f) for f in files]
        contents = [(path, functools.partial(_read_for_signing, path)) for path in paths]
    # One file's bytes held at a time, not every file's (a repository may include thousands
    # of 512 KiB files): each is read once to be checked before anything is signed (a
    # refusal signs nothing), and again, checked again, at its turn to be signed.
    for _, read in contents:
        read()
    if action == "sign" and args.multi_subject:
        return _sign_together(args, key, contents, out)
    with _connect(args) as conn:
        for path, read in contents:
            reply = conn.request(p.TrustSign(key=key, name=path.name, data=read(),
                                             policy=action == "sign-policy"))
            if not isinstance(reply, p.TrustSigned):
                return EXIT_FAILURE
            bundle = path.with_name(path.name + ".bundle")
            _write_file(bundle, reply.bundle)
            if out.json_mode:
                out.json({"file": str(path), "bundle": str(bundle), "key_id": reply.key_id,
                          "fingerprint": reply.fingerprint})
            else:
                out.line(f"signed {field(str(path))} -> {field(str(bundle))}")
    return EXIT_OK


def _subject_name(path: Path, cwd: Path) -> str:
    """A file's name in a multi-subject bundle written in ``cwd``: its path relative to it
    (nono's), refused when it cannot be below it."""
    name = str(path)
    if path.is_absolute():
        try:
            name = str(path.relative_to(cwd))
        except ValueError:
            raise NonoError(f"{path} is not below the current directory",
                            hint="a multi-subject bundle names files below the directory it "
                            "is in: sign from a directory above them") from None
    if ".." in name.split("/"):
        raise NonoError(f"{path}: a name with '..' cannot be a subject",
                        hint="sign from a directory above the file") from None
    return name


def _sign_together(args: argparse.Namespace, key: str,
                   contents: list[tuple[Path, Callable[[], bytes]]], out: Output) -> int:
    """``trust sign --multi-subject``: one ``.nono-trust.bundle`` in the current directory
    over every file, each named by its path relative to it, as nono writes it. Only the
    digests go to the daemon."""
    import hashlib
    from pathlib import Path

    cwd = Path.cwd()
    subjects = tuple(p.TrustSubject(name=_subject_name(path, cwd),
                                    sha256=hashlib.sha256(read()).hexdigest())
                     for path, read in contents)
    if len(subjects) > _MAX_SUBJECTS:
        raise NonoError(f"{len(subjects)} files: one bundle signs at most {_MAX_SUBJECTS}")
    with _connect(args) as conn:
        reply = conn.request(p.TrustSign(key=key, name=p.MULTI_SUBJECT_BUNDLE, data=b"",
                                         subjects=subjects))
    if not isinstance(reply, p.TrustSigned):
        return EXIT_FAILURE
    bundle = cwd / p.MULTI_SUBJECT_BUNDLE
    _write_file(bundle, reply.bundle)
    if out.json_mode:
        out.json({"files": [s.name for s in subjects], "bundle": str(bundle),
                  "key_id": reply.key_id, "fingerprint": reply.fingerprint})
    else:
        for subject in subjects:
            out.line(f"signed {field(subject.name)}")
        out.line(f"-> {field(str(bundle))} ({len(subjects)} files)")
    return EXIT_OK


def _included_files() -> list[tuple[Path, Callable[[], bytes]]]:
    """The files ./trust-policy.json includes under the current directory, found by the same
    scan the daemon runs at launch (the policy is parsed, not verified: this only lists),
    and how to read each: the file the scan found, from one open (``trust.read_scanned``)."""
    from pathlib import Path

    from nonod import trust

    files = trust.read_policy_files(None, os.getcwd())
    if files.project is None:
        raise NonoError(f"no {_POLICY_FILE} here", hint="run `nonoctl trust init`")
    policy = trust.parse_policy(files.project, source=str(files.project_path))
    report = trust.verify_tree(Path.cwd(), policy)
    return [(Path(entry.path), functools.partial(trust.read_scanned, report, entry,
                                                 p.MAX_TRUST_SIGN_BYTES))
            for entry in report.entries
            if entry.real_path is not None and not entry.listed and not entry.subject_only]


def _load_trust_policy(args: argparse.Namespace, out: Output) -> trust.TrustPolicy | None:
    """``--policy FILE``, or the user-level policy merged with ./trust-policy.json, by the
    daemon's loader (``nonod.trust.load_policies``). Each policy must verify against its own
    bundle; the project policy against the user-level one's publishers. The user-level
    policy's anchor (the daemon's own key) is checked at launch, not here. ``None``
    (reported) when there is no policy."""
    from pathlib import Path

    from nonod import trust

    if args.policy is not None:
        files = trust.read_policy_files(Path(args.policy), None)
        policy = trust.load_policies(files, user_anchors=trust.self_anchored)
        if policy is None:
            out.error(f"{args.policy} not found")
        return policy
    files = trust.read_policy_files(trust.user_policy_path(_user_trust_dir()), os.getcwd())
    policy = trust.load_policies(files, user_anchors=trust.self_anchored)
    if policy is None:
        out.error("no trust policy found", "run `nonoctl trust init`, or pass --policy")
    return policy


#: The largest FILE ``trust verify`` reads (the client's memory; a launch pins far less).
_MAX_VERIFY_BYTES = 64 << 20


def _trust_verify(args: argparse.Namespace, files: list[str], out: Output) -> int:
    """Client-side: each FILE (or, with --all, each included file) against FILE.bundle and
    the policy (no keys needed)."""
    from pathlib import Path

    from nonod import _callerfs, trust

    policy = _load_trust_policy(args, out)
    if policy is None:
        return EXIT_USAGE if args.policy is not None else EXIT_FAILURE
    if args.all:
        report = trust.verify_tree(Path.cwd(), policy, home=os.path.expanduser("~"))
        for entry in report.entries:
            # The repository's names: shown as fields, they draw no lines of their own.
            if entry.status == "verified":
                out.line(f"OK   {field(entry.path)}")
            else:
                out.line(f"FAIL {field(entry.path)}: {field(entry.reason or entry.label)}")
        return EXIT_FAILURE if report.failures() else EXIT_OK
    failed = 0
    for name in files:
        path = Path(name)
        shown = field(name)  # a repository's name (a shell's glob): no lines of its own
        if path.name == trust.MULTI_SUBJECT_BUNDLE:
            failed += _verify_together(path, policy, out)
            continue
        # Each opened once, never blocking, a regular file only (a FIFO among a shell
        # glob's names in a hostile repository is refused, not waited on for good), and
        # bounded (a launch pins at most 512 KiB of them; this only checks).
        try:
            data = _callerfs.read_path(name, max_bytes=_MAX_VERIFY_BYTES).data
        except _callerfs.CallerFileError as exc:
            out.line(f"FAIL {shown}: cannot read: {field(exc.reason)}")
            failed += 1
            continue
        try:
            bundle = _callerfs.read_optional(str(path.with_name(path.name + ".bundle")),
                                             max_bytes=trust.MAX_BUNDLE_BYTES)
        except _callerfs.CallerFileError as exc:
            out.line(f"FAIL {shown}: cannot read its bundle: {field(exc.reason)}")
            failed += 1
            continue
        together = path.with_name(trust.MULTI_SUBJECT_BUNDLE)
        try:
            trust.verify_file(data, path.name, bundle, policy)
        except trust.TrustError as exc:
            # A file nono signed with its others has no FILE.bundle: say where to look.
            also = (f" (a multi-subject bundle is beside it: `nonoctl trust verify "
                    f"{together}` checks the files it names)"
                    if bundle is None and os.path.lexists(together) else "")
            out.line(f"FAIL {shown}: {field(exc.message)}{field(also)}")
            failed += 1
        else:
            out.line(f"OK   {shown}")
    return EXIT_FAILURE if failed else EXIT_OK


def _verify_together(path: Path, policy: trust.TrustPolicy, out: Output) -> int:
    """``trust verify DIR/.nono-trust.bundle`` (nono's): the bundle and each file it names,
    relative to its directory, and nothing else there. Returns how many failed."""
    import dataclasses

    from nonod import trust

    if not os.path.lexists(path):
        out.line(f"FAIL {field(str(path))}: no such file")
        return 1
    report = trust.verify_tree(path.parent, dataclasses.replace(policy, includes=(), files=()))
    prefix = "" if str(path.parent) == "." else f"{path.parent}/"
    for entry in report.entries:
        shown = field(prefix + entry.path)
        if entry.status == "verified":
            out.line(f"OK   {shown}")
        else:
            out.line(f"FAIL {shown}: {field(entry.reason or entry.label)}")
    return len(report.failures())


def _trust_list(args: argparse.Namespace, out: Output) -> int:
    """Client-side: the policy's mode and publishers, and each included file's status."""
    from pathlib import Path

    from nonod import trust

    policy = _load_trust_policy(args, out)
    if policy is None:
        return EXIT_USAGE if args.policy is not None else EXIT_FAILURE
    report = trust.verify_tree(Path.cwd(), policy, home=os.path.expanduser("~"))
    publishers: list[dict[str, str | None]] = []
    for pub in policy.publishers:
        fingerprint = None
        if pub.public_key is not None:
            try:
                fingerprint = pub.key().fingerprint
            except trust.TrustError:
                fingerprint = None
        publishers.append({"name": pub.name, "key_id": pub.key_id or pub.issuer,
                           "fingerprint": fingerprint})
    files = [{"path": e.path, "status": e.status, "label": e.label, "reason": e.reason}
             for e in report.entries]
    if out.json_mode:
        out.json({"enforcement": policy.enforcement, "authoritative": policy.authoritative,
                  "publishers": publishers, "files": files,
                  "warnings": list(policy.warnings)})
        return EXIT_OK
    out.line(f"enforcement: {policy.enforcement}"
             + ("" if policy.authoritative else " (not authoritative: no user-level policy)"))
    for warning in policy.warnings:
        out.note(f"nonoctl: warning: {warning}")
    out.line("publishers:")
    for pub_info in publishers:
        line = f"  {field(str(pub_info['name']))}  {field(str(pub_info['key_id'] or '-'))}"
        if pub_info["fingerprint"]:
            line += f"  {pub_info['fingerprint']}"
        out.line(line)
    out.line("files:" if files else "files: (none included)")
    for entry in report.entries:
        if entry.status == "failed":
            out.line(f"  {field(entry.path)}  failed: {field(entry.reason or entry.label)}")
        else:
            out.line(f"  {field(entry.path)}  {entry.status}")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace, command: list[str], out: Output) -> int:
    from ._doctor import run_doctor

    return run_doctor(out, socket=args.socket, system=args.system)


def _cmd_learn(args: argparse.Namespace, command: list[str], out: Output) -> int:
    """Learn runs in this process: it needs no keys or secrets, so not the daemon's."""
    if not command:
        out.error("`learn` needs a command after `--`")
        return EXIT_USAGE
    if args.save is not None and (not args.save or "/" in args.save or args.save[0] == "."):
        out.error(f"bad profile name {args.save!r}", "a plain name, as in `--save myapp`")
        return EXIT_USAGE
    import signal
    from pathlib import Path

    import trio

    from nonod import learn as learning
    from nonod import profiles

    env = dict(os.environ)
    user_dir = _user_trust_dir() / "profiles"  # the daemon's lookup (nonod._xdg)
    base = None
    if args.profile:
        base = profiles.load_profile(_profile_arg(args.profile) or args.profile,
                                     user_dir=user_dir)
    tty = sys.stderr.isatty()

    def show(progress: learning.LearnProgress) -> None:
        sys.stderr.write("\r" + progress.line() + "\x1b[K")
        sys.stderr.flush()

    async def run() -> learning.LearnResult:
        stop = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def on_signal() -> None:
                    async for _ in signals:
                        stop.set()  # the run ends cleanly; the profile is still made

                nursery.start_soon(on_signal)
                # With --json the program's stdout goes to stderr: stdout carries the JSON.
                result = await learning.learn(
                    command, cwd=working_directory(), env=env, timeout=args.timeout,
                    base_profile=base, listen_ports=tuple(args.listen_port),
                    progress=show if tty else None, stop=stop,
                    stdio=(0, 2 if args.json else 1, 2),
                    resolver=learning.operator_resolver())  # the daemon's [network] pins
                nursery.cancel_scope.cancel()
        return result

    try:
        result = trio.run(run)
    finally:
        if tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
    if args.json:
        out.raw(result.to_nono_json(include_covered=args.all) + b"\n")
    else:
        for line in result.summary_lines(include_covered=args.all):
            out.line(line)
        out.flush()
    extends = args.profile if args.profile and _profile_arg(args.profile) == args.profile \
        else None
    if args.output is not None:
        path = Path(_abs(str(args.output)))
        _write_file(path, result.to_profile(path.name.removesuffix(".json") or "learned",
                                            extends=extends))
        out.note(f"profile written to {path}")
    elif args.save is not None:
        try:
            user_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise NonoError(f"cannot create {user_dir}: {exc.strerror}") from exc
        path = user_dir / f"{args.save}.json"
        _write_file(path, result.to_profile(args.save, extends=extends), replace=args.force)
        out.note(f"profile saved as {args.save} ({path})")
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace, command: list[str], out: Output) -> int:
    from ._completion import script

    out.line(script(args.shell, build_parser()))
    return EXIT_OK


def _audit_state_dir(args: argparse.Namespace) -> Path:
    from pathlib import Path

    if args.state_dir is not None:
        return Path(_abs(str(args.state_dir)))
    from nonod._config import default_state_dir

    return default_state_dir(system=args.system)


def _audit_session(state: Path, wanted: str, out: Output) -> str | None:
    """The session whose audit file ``wanted`` names (its id or a unique prefix of it)."""
    from nonod.audit import AUDIT_FILE

    sessions = state / "sessions"
    try:
        names = sorted(n for n in os.listdir(sessions) if (sessions / n / AUDIT_FILE).is_file())
    except FileNotFoundError:
        names = []
    except OSError as exc:
        out.error(f"cannot list {sessions}: {exc.strerror}")
        return None
    if wanted in names:
        return wanted
    named = _sessions_named(sessions, names, wanted)
    if named:
        return named
    found = [n for n in names if n.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if found:
        out.error(f"{wanted!r} matches several sessions: {', '.join(found[:5])}"
                  + (", ..." if len(found) > 5 else ""), "give more of the id")
    else:
        out.error(f"no audit file for session {wanted!r} in {sessions}",
                  "`nonoctl audit list` shows the sessions there; --state-dir picks another")
    return None


def _sessions_named(sessions: Path, ids: list[str], name: str) -> str | None:
    """The most recent session called ``name`` among ``ids`` (from their session.json), as
    ``ps``/``stop``/``wait`` resolve a name; None if none has that name."""
    import json

    latest: tuple[str, str] | None = None
    for session_id in ids:
        try:
            record = json.loads((sessions / session_id / "session.json").read_bytes())
        except (OSError, ValueError):
            continue  # pruned (the audit file stays) or unreadable: not findable by name
        if not isinstance(record, dict) or record.get("name") != name:
            continue
        started = str(record.get("started_at", ""))
        if latest is None or started > latest[0]:
            latest = (started, session_id)
    return latest[1] if latest is not None else None


def _cmd_audit(args: argparse.Namespace, command: list[str], out: Output) -> int:
    if args.action == "verify" and args.envelope is not None:
        return _audit_verify_envelope(args, out)
    state = _audit_state_dir(args)
    if args.action == "list":
        return _audit_list(state, out)
    if args.action == "prune":
        return _audit_prune(args, state, out)
    if not args.session:
        out.error(f"`audit {args.action}` needs a session id")
        return EXIT_USAGE
    session = _audit_session(state, args.session, out)
    if session is None:
        return EXIT_FAILURE
    from nonod.audit import AUDIT_FILE, LEDGER_FILE

    path = state / "sessions" / session / AUDIT_FILE
    if args.action == "verify":
        return _audit_verify(args, state, session, path, out)
    return _audit_show(session, path, state / LEDGER_FILE, out)


def _audit_checker(args: argparse.Namespace, path: Path,
                   out: Output) -> audit.SignatureChecker | None:
    """``--key PUB``, else the user-level trust policy's publisher whose key signed the
    bundle beside ``path`` (None: no bundle, or no trusted key for it; the result then says
    ``absent``/``unchecked``)."""
    if args.key is not None:
        return _audit_key(args.key)
    try:
        sidecar = path.with_name(path.name + ".bundle").read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NonoError(f"cannot read the signature beside {path}: {exc.strerror}") from exc
    return _audit_trusted_checker(sidecar, out)


def _audit_key(path: Path) -> audit.SignatureChecker:
    from nonod import audit

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NonoError(f"cannot read {path}: {exc.strerror}") from exc
    return audit.EcdsaP256Checker.from_text(data)


def _audit_trusted_checker(sidecar: bytes, out: Output) -> audit.SignatureChecker | None:
    """The user-level trust policy's publisher whose key signed ``sidecar`` (a bundle)."""
    from nonod import audit

    hint = audit.bundle_key_hint(sidecar)
    if hint is None:
        return None
    from nonod import trust

    try:
        files = trust.read_policy_files(trust.user_policy_path(_user_trust_dir()), None)
        policy = trust.load_policies(files, user_anchors=trust.self_anchored)
    except trust.TrustError as exc:
        out.note(f"nonoctl: warning: the user-level trust policy is not usable to check the "
                 f"signature: {exc.message}")
        return None
    if policy is None:
        return None
    for publisher in policy.publishers:
        if publisher.keyed and publisher.key().fingerprint == hint:
            return audit.EcdsaP256Checker.from_der(publisher.key().der)
    out.note("nonoctl: note: the record is signed by a key none of your trust policy's "
             "publishers hold; pass --key PUB to check it")
    return None


def _audit_verify_envelope(args: argparse.Namespace, out: Output) -> int:
    """``audit verify --envelope FILE``: what a control plane runs on what it received."""
    from nonod.audit import AuditVerifyError, envelope_signature, verify_envelope

    path: Path = args.envelope
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NonoError(f"cannot read {path}: {exc.strerror}") from exc
    checker: audit.SignatureChecker | None = None
    if args.key is not None:
        checker = _audit_key(args.key)
    else:
        sidecar = envelope_signature(data)
        checker = _audit_trusted_checker(sidecar, out) if sidecar is not None else None
    try:
        result = verify_envelope(data, checker=checker, where=str(path))
    except AuditVerifyError as exc:
        if out.json_mode:
            out.json({"ok": False, "envelope": str(path), "code": exc.code, "reason": exc.reason})
        out.error(exc.message, exc.hint)
        return EXIT_FAILURE
    if out.json_mode:
        out.json(result)
        return EXIT_OK
    out.line(f"OK envelope {result.session}: {result.count} events, merkle root "
             f"{result.merkle_root} (signature {result.signature})")
    return EXIT_OK


def _audit_verify(args: argparse.Namespace, state: Path, session: str, path: Path,
                  out: Output) -> int:
    from nonod.audit import LEDGER_FILE, AuditIncomplete, AuditVerifyError, verify_session_file

    ledger = state / LEDGER_FILE
    use_ledger = not args.no_ledger
    if use_ledger and not ledger.exists():
        out.error(f"no ledger at {ledger}: the session's seal cannot be checked against it",
                  "--no-ledger checks the file alone")
        return EXIT_FAILURE
    checker = _audit_checker(args, path, out)
    try:
        result = verify_session_file(path, session=session, ledger=ledger if use_ledger else None,
                                     checker=checker, allow_incomplete=args.allow_incomplete)
    except AuditVerifyError as exc:
        incomplete = isinstance(exc, AuditIncomplete)
        if out.json_mode:
            out.json({"ok": False, "session": session, "code": exc.code, "path": exc.path,
                      "line": exc.line, "reason": exc.reason})
        out.error(exc.message, exc.hint)
        return EXIT_USAGE if incomplete else EXIT_FAILURE
    if out.json_mode:
        out.json(result)
        return EXIT_OK
    extra = [f"ledger line {result.ledger_line}" if result.ledger_line is not None
             else "ledger not checked", f"signature {result.signature}"]
    if result.sealed:
        head = f"OK {session}: {result.count} events, merkle root {result.merkle_root}"
    else:
        torn = f", {result.torn_bytes} bytes of a cut-short line" if result.torn_bytes else ""
        head = (f"INCOMPLETE (allowed) {session}: {result.count} events verified{torn}, "
                f"no final record, head {result.head}")
    out.line(f"{head} ({', '.join(extra)})")
    return EXIT_OK


def _audit_show(session: str, path: Path, ledger: Path, out: Output) -> int:
    from nonod.audit import AuditError, read_records, render_record, verify_session_file

    try:  # with the ledger when there is one: it tells a sealed file cut short
        verify_session_file(path, session=session, allow_incomplete=True,
                            ledger=ledger if ledger.exists() else None)
    except AuditError as exc:
        out.note(f"nonoctl: warning: this record does not verify: {exc.message}")
    if out.json_mode:
        data = path.read_bytes()
        out.raw(data[: data.rfind(b"\n") + 1])  # the stored lines, a cut-short one left out
        return EXIT_OK
    color = sys.stdout.isatty()
    for record in read_records(path):
        out.rendered(render_record(session, record, color=color, with_date=True))
    return EXIT_OK


def _parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or a number of days, in seconds."""
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    unit = units.get(text[-1:].lower())
    number = text[:-1] if unit is not None else text
    try:
        value = float(number)
    except ValueError:
        raise NonoError(f"--older-than {text!r}: expected an age such as 30d, 12h or 90m") \
            from None
    if value < 0:
        raise NonoError("--older-than must not be negative")
    return value * (unit if unit is not None else 86400.0)


def _audit_prune(args: argparse.Namespace, state: Path, out: Output) -> int:
    import datetime as dt

    from nonod.audit import prune_sessions

    if args.older_than is None and args.keep is None:
        out.error("`audit prune` needs --older-than AGE and/or --keep N")
        return EXIT_USAGE
    max_age = (dt.timedelta(seconds=_parse_age(args.older_than))
               if args.older_than is not None else None)
    removed = prune_sessions(state, max_age=max_age, max_count=args.keep,
                             dry_run=args.dry_run)
    if out.json_mode:
        out.json(removed)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for summary in removed:
        out.line(f"{verb} {summary.session} (sealed {summary.ended}, {summary.count} events)")
    out.line(f"{verb} {len(removed)} sealed sessions; their ledger lines stay")
    return EXIT_OK


def _audit_list(state: Path, out: Output) -> int:
    from nonod.audit import LEDGER_FILE, AuditVerifyError, list_sessions, verify_ledger_file

    sessions = list_sessions(state)
    if out.json_mode:
        out.json(sessions)
        return EXIT_OK
    out.table(
        ("SESSION", "SEALED", "EVENTS", "STARTED", "ENDED", "SIZE"),
        ((s.session, "yes" if s.sealed else "no", "-" if s.count is None else str(s.count),
          s.started or "-", s.ended or "-", str(s.size)) for s in sessions),
    )
    ledger = state / LEDGER_FILE
    if ledger.exists():
        try:
            view = verify_ledger_file(ledger)
        except AuditVerifyError as exc:
            out.error(exc.message, exc.hint)
            return EXIT_FAILURE
        out.line(f"ledger: {view.count} sealed sessions, head {view.head}")
    return EXIT_OK


# ---------------------------------------------------------------------------------- main

_COMMANDS: Final = frozenset({
    "launch", "run", "ps", "inspect", "stop", "wait", "logs", "attach", "prune", "daemon",
    "profile", "doctor", "completion", "audit", "secret", "trust", "learn", "events", "top",
    "approvals", "approve", "deny",
})


_FAST_VERBS: Final[dict[str, Handler]] = {
    "launch": _cmd_launch, "run": _cmd_launch, "ps": _cmd_ps, "inspect": _cmd_inspect,
    "stop": _cmd_stop, "wait": _cmd_wait, "prune": _cmd_prune, "": _cmd_help,  # "": --version
}


def _fast_args(words: Sequence[str]) -> argparse.Namespace | None:
    """What argparse would make of ``words``, read without it (``_fastargs``), or None."""
    read = _fastargs.parse(words)
    if read is None:
        return None
    verb, values = read
    if values["socket"] is not None:
        values["socket"] = plain_path(str(values["socket"]))
    from types import SimpleNamespace

    return cast("argparse.Namespace", SimpleNamespace(func=_FAST_VERBS[verb], parser=None,
                                                       **values))


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, command = words[:cut], words[cut + 1 :]
    if _command_word(words) in ("launch", "run", "profile"):
        refused = _nono.refused_flag(words)
        if refused is not None:
            Output(json=False).error(f"nono's {refused[0]} is not supported by nonoctl: "
                                     f"{refused[1]}")
            return EXIT_USAGE
        words = _nono.join_env_credential_map(words)
    args = _fast_args(words)
    if args is None:
        word = _command_word(words)
        args = build_parser(word if word in _COMMANDS else None).parse_args(words)
    out = Output(json=bool(getattr(args, "json", False)))
    if command and args.func not in (_cmd_launch, _cmd_learn):
        out.error("only `launch`/`run` and `learn` take a command after `--`")
        return EXIT_USAGE
    try:
        return int(args.func(args, command, out))
    except BaseException as exc:  # noqa: BLE001 - report() re-raises what it does not report
        return report(exc, out, launching=args.func is _cmd_launch)


def report(exc: BaseException, out: Output | None = None, *, launching: bool) -> int:
    """The exit status for ``exc`` raised by a command, once said on stderr; anything not
    ours (a bug) is raised again."""
    if out is None:
        out = Output(json=False)
    if isinstance(exc, RemoteError):
        out.error(exc.message, exc.hint)
        return exit_code_for(exc.reply, launching=launching)
    if isinstance(exc, ClientError):
        out.error(exc.message, exc.hint)
        return EXIT_DAEMON
    if isinstance(exc, NonoError):
        out.error(exc.message, exc.hint)
        return EXIT_FAILURE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        # Our reader went away (`nonoctl logs x | head`): stop quietly, as a shell tool does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    raise exc
