"""The options of the hot verbs (``launch``/``run``, ``ps``, ``inspect``, ``stop``,
``wait``, ``prune``), declared once as data.

``_cli.build_parser`` turns them into argparse options (help, usage, errors) and ``_fastargs``
reads a command line made only of them without importing or building argparse, which costs a
third of those commands' start-up. One declaration serves both, so the two cannot disagree
about a name, a destination, a default or a conversion.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no ``typing`` at run time: ``_lean`` reads the options too
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, Literal, TypeAlias

    Kind: TypeAlias = Literal["flag", "store", "append"]


class Flag:
    """One option: ``flag`` is ``store_true``; ``store`` keeps the last value (default None);
    ``append`` collects every value (default ``[]``). ``convert`` is argparse's ``type``."""

    __slots__ = ("convert", "dest", "help", "kind", "metavar", "names")

    def __init__(self, names: tuple[str, ...], dest: str, kind: Kind, help: str, *,
                 metavar: str | None = None,
                 convert: Callable[[str], object] | None = None) -> None:
        self.names = names
        self.dest = dest
        self.kind = kind
        self.help = help
        self.metavar = metavar
        self.convert = convert

    def default(self) -> object:
        return False if self.kind == "flag" else [] if self.kind == "append" else None


def _memory(text: str) -> int:
    from nonod._units import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        import argparse

        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    from nonod._units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        import argparse

        raise argparse.ArgumentTypeError(str(exc)) from None


#: nono's ``run`` flags, by help section (``launch`` and ``profile show`` take them).
LAUNCH_FLAGS: Final[tuple[tuple[str, tuple[Flag, ...]], ...]] = (
    ("filesystem (as nono)", (
        Flag(("--allow-cwd",), "allow_cwd", "flag", "grant the current directory read and write"),
        Flag(("-a", "--allow"), "allow", "append",
             "grant a directory read and write (repeatable)", metavar="DIR"),
        Flag(("-r", "--read"), "read", "append", "grant a directory read-only", metavar="DIR"),
        Flag(("-w", "--write"), "write", "append", "grant a directory write-only",
             metavar="DIR"),
        Flag(("--allow-file",), "allow_file", "append", "grant one file read and write",
             metavar="FILE"),
        Flag(("--read-file",), "read_file", "append", "grant one file read-only",
             metavar="FILE"),
        Flag(("--write-file",), "write_file", "append", "grant one file write-only",
             metavar="FILE"),
        Flag(("--workdir",), "workdir", "store", "the session's working directory "
             "(what the profile's `workdir` refers to)", metavar="DIR"),
    )),
    ("network and credentials (as nono)", (
        Flag(("--block-net", "--net-block"), "block_net", "flag", "no network at all"),
        Flag(("--allow-domain", "--allow-host", "--allow-proxy", "--proxy-allow"),
             "allow_domain", "append",
             "reach HOST (or *.suffix) through the proxy", metavar="HOST"),
        Flag(("--listen-port", "--allow-bind"), "listen_port", "append",
             "forward host 127.0.0.1:PORT into the session", metavar="PORT", convert=int),
        Flag(("--network-profile",), "network_profile", "store",
             "reach the hosts of a built-in network profile (developer, minimal, ...) through "
             "the proxy; replaces the profile's", metavar="NAME"),
        Flag(("--credential", "--proxy-credential"), "credential", "append",
             "a credential route (openai, github, ...) through the proxy", metavar="NAME"),
        Flag(("--env-credential-map",), "env_credential_map", "append",
             "put credential REF into environment variable VAR (nono's two words, REF VAR, "
             "work too)", metavar="REF=VAR"),
    )),
    ("resource limits (the session's own cgroup)", (
        Flag(("--memory",), "memory", "store", "memory limit, such as 512M (no swap on top); "
             "past it the session is killed (reason oom)", metavar="SIZE", convert=_memory),
        Flag(("--max-processes",), "max_processes", "store",
             "processes and threads at once (further forks fail)", metavar="N", convert=int),
        Flag(("--cpus",), "cpus", "store", "CPU time per second, such as 0.5 (half of one CPU)",
             metavar="X", convert=float),
        Flag(("--cpu-weight",), "cpu_weight", "store",
             "share of contended CPU, 1..10000 (100: the default)", metavar="N", convert=int),
        Flag(("--io-weight",), "io_weight", "store",
             "share of contended disk I/O, 1..10000 (100: the default)", metavar="N",
             convert=int),
        Flag(("--timeout", "--wall-clock"), "wall_clock", "store",
             "stop the session after this long (90s, 1h)", metavar="DURATION",
             convert=_duration),
    )),
    ("trust", (
        Flag(("--trust-override",), "trust_override", "flag",
             "DANGEROUS: launch without verifying instruction files (recorded in the audit "
             "stream)"),
    )),
)

#: ``launch``'s own options (before its nono flags); its one positional is PROFILE.
LAUNCH_OWN: Final = (
    Flag(("-p", "--profile"), "profile", "store", "profile name or JSON file"),
    Flag(("--name",), "name", "store", "a name for the session (unique among live ones)"),
    Flag(("-d", "--detach", "--detached"), "detach", "flag",
         "run in the background on a terminal of the daemon's"),
    Flag(("--dry-run",), "dry_run", "flag", "show the resolved policy and command; run nothing"),
    Flag(("--audit-sign-key",), "audit_sign_key", "store",
         "sign the session's sealed audit record with this trust key (keychain name or "
         "file:///abs/path ref; overrides [audit] sign_key)", metavar="NAME"),
)

PS: Final = (
    Flag(("-a", "--all"), "all", "flag", "include ended sessions"),
    Flag(("-q", "--quiet"), "quiet", "flag", "print ids only"),
)

STOP: Final = (
    Flag(("-t", "--timeout"), "timeout", "store", "seconds between SIGTERM and SIGKILL",
         metavar="S", convert=float),
    Flag(("-f", "--force"), "force", "flag", "SIGKILL at once"),
)

#: The ``--json`` every verb but ``attach`` and ``completion`` takes.
JSON: Final = Flag(("--json",), "json", "flag", "machine-readable output")

#: The options before the command.
GLOBAL: Final = (
    Flag(("--system",), "system", "flag", "talk to the system daemon"),
    Flag(("--no-autostart",), "no_autostart", "flag",
         "do not start a user daemon if none runs (NONO_NO_AUTOSTART=1)"),
    Flag(("--version",), "version", "flag", "print the version and exit"),
)
