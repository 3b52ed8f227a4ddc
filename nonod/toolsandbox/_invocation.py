"""Whether one call of a tool may run: its ``invocation_policy``, in nono's order.

``deny`` rules first, then ``allow`` rules, then the ``default`` (``approve`` is refused when
the profile is checked). A rule matches when its ``argv`` matcher and every ``env`` matcher
match. ``argv`` is the arguments after the command name: ``gh issue list`` is
``["issue", "list"]``. ``prefix`` matches the first items, ``exact`` the whole list,
``contains`` a list holding every item named (anywhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..profiles._tools import ArgvMatcher, InvocationPolicy, InvocationRule


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: ``deny[2]``, ``allow[0]`` or ``default``: which part of the policy decided.
    rule: str
    reason: str


def _argv_matches(matcher: ArgvMatcher, args: Sequence[str]) -> bool:
    if matcher.exact is not None:
        return tuple(args) == matcher.exact
    if matcher.prefix is not None:
        return tuple(args[: len(matcher.prefix)]) == matcher.prefix
    if matcher.contains is not None:
        return all(item in args for item in matcher.contains)
    return False


def _matches(rule: InvocationRule, args: Sequence[str], env: Mapping[str, str]) -> bool:
    if rule.argv is not None and not _argv_matches(rule.argv, args):
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
        return Verdict(allowed=True, rule="default", reason="no invocation policy")
    for kind, rules in (("deny", policy.deny), ("allow", policy.allow)):
        for index, rule in enumerate(rules):
            if _matches(rule, args, env):
                return Verdict(allowed=kind == "allow", rule=f"{kind}[{index}]",
                               reason=rule.reason or f"matched invocation_policy.{kind}[{index}]")
    allowed = policy.default_decision == "allow"
    return Verdict(allowed=allowed, rule="default",
                   reason="no rule matched; the default " + ("allows" if allowed else "denies"))
