"""Whether one call of a tool may run: its ``invocation_policy``, in nono's order.

``deny`` rules first, then ``approve`` rules (the call waits for a person's answer on the
daemon's approval queue), then ``allow`` rules, then the ``default``. A rule matches when its
``argv`` matcher and every ``env`` matcher match. ``argv`` is the arguments after the command
name: ``gh issue list`` is ``["issue", "list"]``. ``prefix`` matches the first items,
``exact`` the whole list, ``contains`` a list holding every item named (anywhere). For
``deny`` and ``approve`` rules, ``prefix`` and ``exact`` also match when options placed
among the words could be read away (``issue -R o/r delete`` is ``issue delete`` to ``gh``),
and ``contains`` an option (``--force``) also matches it given with a value
(``--force=true``), abbreviated (``--forc``), with one dash or two (``-force``), or a
one-letter one among others (``-qf`` for ``-f``): a rule that keeps a call out must not be
passed by moving or respelling an option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..profiles._schema import Decision, RoutedDecision
from ..profiles._tools import ArgvMatcher, InvocationPolicy, InvocationRule


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    #: ``deny[2]``, ``approve[0]``, ``allow[0]`` or ``default``: which part decided.
    rule: str
    reason: str
    #: For ``approve``: how long to wait for the answer (None: the daemon's default).
    timeout: float | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


def _argv_matches(matcher: ArgvMatcher, args: Sequence[str], loose: bool) -> bool:
    if matcher.exact is not None:
        return (tuple(args) == matcher.exact
                or (loose and _operands_could_be(args, matcher.exact, exact=True)))
    if matcher.prefix is not None:
        return (tuple(args[: len(matcher.prefix)]) == matcher.prefix
                or (loose and _operands_could_be(args, matcher.prefix, exact=False)))
    if matcher.contains is not None:
        return all(item in args or (loose and _as_option(item, args))
                   for item in matcher.contains)
    return False


def _as_option(item: str, args: Sequence[str]) -> bool:
    """Whether an option ``item`` is given in another spelling its tool reads the same:
    with a value (``--force=yes``); a long one abbreviated (``--dele`` for ``--delete``, as
    GNU getopt and git take any unambiguous prefix) or with one dash instead of two or two
    instead of one (Go's flag package takes both: ``--auto-approve``, ``-auto-approve``); a
    one-letter one among others (``-qf`` holds ``-f``)."""
    if not item.startswith("-") or item in ("-", "--"):
        return False
    if len(item) == 2:  # -f
        return any(arg.startswith("-") and not arg.startswith("--")
                   and item[1] in arg.partition("=")[0][1:] for arg in args)
    name = item.lstrip("-")
    for arg in args:
        given = arg.partition("=")[0]
        if given.startswith("-") and given not in ("-", "--"):
            bare = given.lstrip("-")
            if bare == name or (given.startswith("--") and name.startswith(bare)):
                return True
    return False


def _operands_could_be(args: Sequence[str], words: Sequence[str], *, exact: bool) -> bool:
    """Whether some reading of ``args`` has operands that begin with ``words`` (``exact``:
    that are ``words``). Options (``-x``, ``--name``) may stand anywhere, as most command
    line parsers take them, and each one without ``=`` may or may not take the next argument
    as its value; after ``--`` every argument is an operand. So ``issue -R o/r delete 3`` can
    be ``issue delete 3`` with an option, which is how ``gh`` reads it."""
    # Readings as states: words matched so far, past ``--``, the last option may take this
    # argument as its value. At most 4 x (len(words) + 1) of them, whatever the length.
    states = {(0, False, False)}
    for arg in args:
        following: set[tuple[int, bool, bool]] = set()
        for matched, operands_only, value in states:
            if matched == len(words) and not exact:
                return True
            if value:
                following.add((matched, operands_only, False))  # taken as the value
            if not operands_only and arg == "--":
                following.add((matched, True, False))
            elif not operands_only and arg.startswith("-") and arg != "-":
                following.add((matched, False, "=" not in arg))
            elif matched < len(words) and arg == words[matched]:
                following.add((matched + 1, operands_only, False))
        states = following
        if not states:
            return False
    return any(matched == len(words) for matched, _, _ in states)


def _matches(rule: InvocationRule, args: Sequence[str], env: Mapping[str, str],
             loose: bool = False) -> bool:
    if rule.argv is not None and not _argv_matches(rule.argv, args, loose):
        return False
    for name, wanted in rule.env.items():
        value = env.get(name)
        if value is None:
            return False
        if wanted.equals is not None and value != wanted.equals:
            return False
        if wanted.one_of is not None and value not in wanted.one_of:
            return False
    return True


def decide(policy: InvocationPolicy | None, args: Sequence[str],
           env: Mapping[str, str]) -> Verdict:
    """The verdict on ``args`` (after the command name) with the caller's ``env``."""
    if policy is None:
        return Verdict(decision="allow", rule="default", reason="no invocation policy")
    kinds: tuple[tuple[Decision, tuple[InvocationRule, ...]], ...] = (
        ("deny", policy.deny), ("approve", policy.approve), ("allow", policy.allow))
    for kind, rules in kinds:
        for index, rule in enumerate(rules):
            # A deny or approve rule matches every way the tool could read the arguments
            # as the words it names; an allow rule only the arguments as written.
            if _matches(rule, args, env, loose=kind != "allow"):
                return Verdict(decision=kind, rule=f"{kind}[{index}]",
                               reason=rule.reason or f"matched invocation_policy.{kind}[{index}]",
                               timeout=rule.timeout_secs)
    default = policy.default
    said = {"allow": "allows", "deny": "denies", "approve": "asks"}[policy.default_decision]
    return Verdict(decision=policy.default_decision, rule="default",
                   reason=f"no rule matched; the default {said}",
                   timeout=default.timeout_secs if isinstance(default, RoutedDecision) else None)
