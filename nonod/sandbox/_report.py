"""How an enforcement layer says what it did, shared by every layer (Landlock, seccomp, mounts...).

A layer is ``applied`` (everything the policy asked for is enforced), ``partial`` (enforced,
but something is missing; ``reason`` says what) or ``unavailable`` (not enforced at all).
:class:`LayerReport` itself lives in ``_types`` because it crosses the package's public face
inside ``EnforcementReport``; this module re-exports it with its constructors so that there
is exactly one class.
"""

from __future__ import annotations

from typing import Final, Literal

from ._types import LayerReport as LayerReport

LayerState = Literal["applied", "partial", "unavailable"]

APPLIED: Final = "applied"
PARTIAL: Final = "partial"
UNAVAILABLE: Final = "unavailable"


def applied(name: str, *, detail: str = "") -> LayerReport:
    return LayerReport(name=name, state=APPLIED, detail=detail)


def partial(name: str, reason: str, *, detail: str = "") -> LayerReport:
    if not reason:
        raise ValueError("a partial layer must say what is missing")
    return LayerReport(name=name, state=PARTIAL, reason=reason, detail=detail)


def unavailable(name: str, reason: str, *, detail: str = "") -> LayerReport:
    if not reason:
        raise ValueError("an unavailable layer must say why")
    return LayerReport(name=name, state=UNAVAILABLE, reason=reason, detail=detail)
