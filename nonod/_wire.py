"""The parts of the control protocol that need no msgspec: its constants and the checks a
``Launch`` runs as it is made.

``nonod.protocol`` defines every message as a msgspec Struct and takes these from here;
``nonoctl._lean`` (an attached ``nonoctl launch`` with the standard library only) writes its
``Launch`` by hand and runs the very same checks, so the two cannot disagree about what a
client may send. Nothing here imports ``typing`` at run time: the lean path does not pay for it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

PROTOCOL_VERSION: Final = 1
WS_RESOURCE: Final = "/nonod"
WS_SUBPROTOCOL: Final = "nono.v1"
#: The kernel's limit for one argument or ``NAME=value`` string, its NUL included
#: (``MAX_ARG_STRLEN``, 32 pages): ``execve`` fails with E2BIG above it.
MAX_ARG_STRLEN: Final = 131072
#: Longest variable name a ``Launch``'s ``env`` may carry (the protocol's ``ShortText``).
MAX_ENV_NAME: Final = 4096


def check_text(where: str, value: str) -> None:
    if "\x00" in value:
        raise ValueError(f"{where} contains a NUL character")


def env_entry_fits(name: str, value: str) -> bool:
    """Whether ``NAME=value`` is short enough for ``execve`` (``MAX_ARG_STRLEN``)."""
    return len(name.encode("utf-8", "surrogateescape")) + len(
        value.encode("utf-8", "surrogateescape")) + 2 <= MAX_ARG_STRLEN


def check_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        check_text("env", key)
        check_text("env", value)
        if not key or "=" in key:
            raise ValueError(f"env name {key!r} is not a variable name")
        if not env_entry_fits(key, value):
            raise ValueError(f"env {key} is longer than the kernel takes ({MAX_ARG_STRLEN} "
                             "bytes with its name)")


def check_abs(where: str, value: str) -> None:
    check_text(where, value)
    if not value.startswith("/"):
        raise ValueError(f"{where} must be an absolute path, got {value!r}")


#: ``LaunchOptions``' path fields, each an absolute path.
OPTION_PATHS: Final = ("allow", "read", "write", "allow_file", "read_file", "write_file")


def check_options(audit_sign_key: str | None, paths: Iterable[tuple[str, Iterable[str]]],
                  workdir: str | None, env_credential_map: Iterable[str]) -> None:
    """``LaunchOptions``' checks; ``paths`` is each of ``OPTION_PATHS`` with its values."""
    if audit_sign_key is not None:
        check_text("audit_sign_key", audit_sign_key)
    for key, values in paths:
        for path in values:
            check_abs(key, path)
    if workdir is not None:
        check_abs("workdir", workdir)
    for item in env_credential_map:
        if "=" not in item:
            raise ValueError(f"env_credential_map entry {item!r} is not REFERENCE=ENV_VAR")


def check_launch(argv: Iterable[str] | tuple[str, ...], cwd: str, env: dict[str, str],
                 profile: str | None) -> None:
    """``Launch``'s checks (its options are checked as they are made)."""
    argv = tuple(argv)
    check_abs("cwd", cwd)
    if len(argv) > 4096:
        raise ValueError("argv has more than 4096 items")
    for arg in argv:
        check_text("argv", arg)
        if len(arg.encode("utf-8", "surrogateescape")) >= MAX_ARG_STRLEN:
            raise ValueError(f"an argument is longer than the kernel takes "
                             f"({MAX_ARG_STRLEN} bytes)")
    if argv and not argv[0]:
        raise ValueError("argv[0] is empty")
    check_env(env)
    if profile is not None:
        check_text("profile", profile)


def kept_environment(environ: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The environment a launch carries, and the names (cut to 64 characters) of the variables
    left out: those whose ``NAME=value`` is longer than ``execve`` takes or whose name is over
    the protocol's 4096 characters."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in environ:
        if len(name) <= MAX_ENV_NAME and env_entry_fits(name, value):
            kept[name] = value
        else:
            dropped.append(name[:64])
    return kept, dropped
