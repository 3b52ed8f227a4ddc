"""``nono run``'s command line where it is not already ``nonoctl launch``'s own.

Someone switching runs the same command line, in the same shell, with another program name.
Three things would otherwise change what it means:

- ``--env-credential-map`` takes two words in nono (``REF VAR``), one here (``REF=VAR``):
  :func:`join_env_credential_map` rewrites the first form into the second.
- nono's flags nonoctl does not take (:data:`REFUSED_FLAGS`) are refused by name, saying what
  to do instead, not as an unknown option.
- nono's flags also read ``NONO_*`` variables (clap's ``env``; a flag on the command line wins
  over its variable). :func:`apply_environment` reads the same variables with nono's meaning
  for the flags nonoctl has (``NONO_BLOCK_NET=1`` must not quietly leave the network open),
  refuses the ones whose flag it lacks, and notes the ones asking for more than nonod gives
  (``NONO_ALLOW_NET``), which it does not act on.

Facts from nono 0.66.0 (``crates/nono-cli/src/cli.rs`` at ``ea334d2``). Standard library
only: ``launch`` runs this on every start.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no ``typing`` at run time: ``_lean`` applies the variables too
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Final

_PROFILE_ONLY: Final = "write it in the profile"

#: nono's ``run`` options nonoctl does not take: (names, why and what to do instead).
REFUSED_FLAGS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("--allow-net", "--net-allow"),
     "it lifts the profile's network rules from the command line; use a profile without "
     "network settings for an unrestricted network"),
    (("--open-port", "--allow-port"), f"{_PROFILE_ONLY} (`network.open_port`)"),
    (("--allow-connect-port",),
     "direct outbound connections are not provided: traffic goes through the session's proxy "
     "(`--allow-domain`)"),
    (("--upstream-proxy", "--external-proxy", "--upstream-bypass", "--external-proxy-bypass"),
     "chaining through an upstream proxy is not implemented"),
    (("--proxy-port",), "the daemon chooses each session's proxy port"),
    (("--trust-proxy-ca",), "macOS only; nonod trusts its CA in the session's view only"),
    (("--proxy-ca-validity",), f"{_PROFILE_ONLY} (`network.tls_intercept.ca_validity`)"),
    (("--allow-endpoint",),
     f"{_PROFILE_ONLY} (`endpoint_rules` or `endpoint_policy` of a custom credential)"),
    (("--env-credential",),
     "map each credential to its variable with --env-credential-map REF VAR, or "
     "`env_credentials` in the profile"),
    (("--allow-command", "--block-command"),
     "a command list never stops a program another one starts (nono deprecated it in 0.33); "
     "deny the program's file with `filesystem.deny`"),
    (("--bypass-protection", "--override-deny"),
     f"{_PROFILE_ONLY} (`filesystem.bypass_protection`), where it is reviewed and audited"),
    (("--suppress-save-prompt", "--ignore-denied"), "nonoctl has no save prompt; leave it out"),
    (("--allow-unix-socket", "--allow-unix-socket-bind", "--allow-unix-socket-dir",
      "--allow-unix-socket-dir-bind", "--allow-unix-socket-subtree",
      "--allow-unix-socket-subtree-bind"),
     "Unix socket grants are not provided (`nonod.unix_sockets` in the profile lets the "
     "program create sockets)"),
    (("--allow-launch-services",), "macOS only"),
    (("--allow-gpu",), "GPU devices are not provided by nonod"),
    (("--sandbox-policy",), f"{_PROFILE_ONLY} (`linux.sandbox_policy`)"),
    (("--allow-http2",), "the proxy speaks HTTP/1.1 to upstreams; leave it out"),
    (("--extends",), "write `extends` in a profile of your own"),
    (("--config",), "nonod reads nono profiles, not capability manifests"),
    (("--verbose",), "`launch --dry-run` shows the resolved policy"),
    (("--detach-timeout", "--startup-timeout"), "nonoctl has no start-up timeout to set"),
    (("--rollback", "--no-rollback", "--no-rollback-prompt", "--rollback-exclude",
      "--rollback-include", "--rollback-all", "--rollback-dest", "--skip-dir"),
     "nonod takes no undo snapshots; leave it out"),
    (("--no-diagnostics", "--diagnostics-json"), "leave it out"),
    (("--no-audit", "--no-audit-integrity", "--audit-integrity"),
     "every session is audited, hash-chained, and sealed"),
    (("--capability-elevation",), "sessions are static: no access is granted at run time"),
)

_REFUSED: Final[Mapping[str, str]] = {
    name: reason for names, reason in REFUSED_FLAGS for name in names}



def _is_variable(word: str) -> bool:
    """An environment variable's name: ``[A-Za-z_][A-Za-z0-9_]*``."""
    return bool(word) and word.isascii() and not word[0].isdigit() \
        and all(c.isalnum() or c == "_" for c in word)


def refused_flag(words: Sequence[str]) -> tuple[str, str] | None:
    """The first of nono's refused options in ``words`` (before ``--``): (name, reason)."""
    for word in words:
        name = word.split("=", 1)[0]
        if name in _REFUSED:
            return name, _REFUSED[name]
    return None


def join_env_credential_map(words: Sequence[str]) -> list[str]:
    """``--env-credential-map REF VAR`` (nono) as ``--env-credential-map REF=VAR``. A value
    already of the form ``REF=VAR`` (the part after its last ``=`` a variable name) is
    nonoctl's one-word form and left alone."""
    out: list[str] = []
    at = 0
    while at < len(words):
        word = words[at]
        out.append(word)
        at += 1
        if word != "--env-credential-map" or at + 1 >= len(words):
            continue
        ref, var = words[at], words[at + 1]
        head, eq, tail = ref.rpartition("=")
        if eq and head and _is_variable(tail):
            continue
        if _is_variable(var):
            out.append(f"{ref}={var}")
            at += 2
    return out


class NonoVariableError(ValueError):
    """A ``NONO_*`` variable nonoctl cannot honour, or a value it cannot read."""


_TRUE: Final = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE: Final = frozenset({"n", "no", "f", "false", "off", "0"})


def _boolish(name: str, value: str) -> bool:
    """clap's ``BoolishValueParser``."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise NonoVariableError(f"{name}={value[:40]!r} is neither true nor false (as in nono)")


#: nono's switches that would give the session more than nonod's launch does, and what
#: nonoctl does instead (a note when one is true; the launch goes on).
_NOT_ACTED_ON: Final[Mapping[str, str]] = {
    "NONO_ALLOW_NET": "the profile's network rules stay",
    "NONO_TRUST_OVERRIDE": "instruction files are verified (pass --trust-override to skip "
                           "that: loud, audited)",
    "NONO_CAPABILITY_ELEVATION": "sessions are static",
    "NONO_TRUST_PROXY_CA": "macOS only; the session's CA is trusted in its own view",
}
#: nono's settings that change no policy, only how nono waits (a note when set).
_NO_EFFECT: Final = ("NONO_STARTUP_TIMEOUT", "NONO_DETACH_STARTUP_TIMEOUT")

#: Variables of nono's whose flag nonoctl lacks, and why ignoring them is not an option.
_REFUSED_VARIABLES: Final[Mapping[str, str]] = {
    "NONO_UPSTREAM_PROXY": "chaining through an upstream proxy is not implemented",
    "NONO_UPSTREAM_BYPASS": "chaining through an upstream proxy is not implemented",
    "NONO_ENV_CREDENTIAL": "use --env-credential-map REF VAR for each credential",
    "NONO_PROXY_CA_VALIDITY": "set `network.tls_intercept.ca_validity` in the profile",
}


def apply_environment(values: dict[str, object], environ: Mapping[str, str], *,
                      with_profile: bool, note: Callable[[str], None]) -> None:
    """Fill the launch flags ``values`` (argparse's destinations) that the command line left
    unset from nono's ``NONO_*`` variables in ``environ``, as nono would. An empty variable
    is unset, as clap reads it. Raises :class:`NonoVariableError` for a variable that cannot
    be honoured; ``note`` gets a line for each one that is not acted on."""
    def given(name: str) -> str | None:
        value = environ.get(name)
        return value if value else None

    for name, why in _REFUSED_VARIABLES.items():
        if given(name) is not None:
            raise NonoVariableError(f"{name} is set: nono's flag for it is not supported by "
                                    f"nonoctl ({why}); unset it")
    for name, what in _NOT_ACTED_ON.items():
        value = given(name)
        if value is not None and _boolish(name, value):
            note(f"nonoctl: note: {name} is not acted on: {what}")
    for name in _NO_EFFECT:
        if given(name) is not None:
            note(f"nonoctl: note: {name} is not acted on: nonoctl has no start-up timeout")
    def taken(name: str, value: str, flag: str) -> None:
        # What widens the launch is said (redteam33): a NONO_ALLOW=$HOME exported for nono
        # long ago granted every launch the home with no word. NONO_BLOCK_NET only narrows.
        note(f"nonoctl: note: {name}={value[:200]} from the environment, as {flag} (nono "
             "reads it so; unset it, or give the flag, to launch without it)")

    profile = given("NONO_PROFILE")
    if with_profile and profile is not None and not values.get("profile") \
            and not values.get("profile_name"):
        values["profile"] = profile
        taken("NONO_PROFILE", profile, "the profile")
    block = given("NONO_BLOCK_NET")
    if block is not None and not values.get("block_net"):
        values["block_net"] = _boolish("NONO_BLOCK_NET", block)
    network_profile = given("NONO_NETWORK_PROFILE")
    if network_profile is not None and values.get("network_profile") is None:
        values["network_profile"] = network_profile
        taken("NONO_NETWORK_PROFILE", network_profile, "--network-profile")
    # A list flag given on the command line wins over its variable whole, as in clap.
    for name, dest, split in (("NONO_ALLOW", "allow", True),
                              ("NONO_ALLOW_DOMAIN", "allow_domain", False),
                              ("NONO_CREDENTIAL", "credential", False)):
        value = given(name)
        current = values.get(dest)
        if value is None or not isinstance(current, list) or current:
            continue
        items = value.split(",") if split else [value]
        if any(not item for item in items):
            raise NonoVariableError(f"{name}={value[:80]!r} has an empty entry")
        current.extend(items)
        taken(name, value, "--" + dest.replace("_", "-"))
