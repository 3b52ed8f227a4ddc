"""What the tool sandbox adds to an agent's launch plan: the shim pinned over the tool (with
the tool's execute bits), the tool socket bound into the view, and socket(AF_UNIX), only
where the session has a private view."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonod.errors import EnforcementUnavailable
from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest
from nonod.sandbox._mode import LANDLOCK_ONLY
from nonod.sandbox._mounts import BIND_FILE, PIN
from nonod.sandbox._plan import build_plan


def _policy(tmp_path: Path, **kw: object) -> ResolvedPolicy:
    return ResolvedPolicy(name="agent", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path=str(tmp_path), access=Access.READ)),
        denials=(), **kw)  # type: ignore[arg-type]


def _request(tmp_path: Path) -> LaunchRequest:
    gh = tmp_path / "gh"
    gh.write_text("#!/bin/sh\n")
    gh.chmod(0o755)
    return LaunchRequest(argv=("/usr/bin/true",), cwd="/", pins=((str(gh), b"shim"),),
                         binds=(("/.nono-tool.sock", str(tmp_path / "t.sock")),))


def _seccomp_detail(report: object) -> str:
    layers = {layer.name: layer for layer in report.layers}  # type: ignore[attr-defined]
    return str(layers["seccomp"].detail)


def test_a_private_view_gets_the_shim_the_socket_and_unix_sockets(tmp_path: Path) -> None:
    plan, report = build_plan(_policy(tmp_path), _request(tmp_path))
    ops = {(op.kind, op.target, op.source) for op in plan.mounts}
    assert (BIND_FILE, "/.nono-tool.sock", str(tmp_path / "t.sock")) in ops
    assert (PIN, str(tmp_path / "gh"), "0") in ops
    assert "unix sockets allowed" in _seccomp_detail(report)
    # Without a bind, a session's socket(AF_UNIX) stays refused.
    plain = LaunchRequest(argv=("/usr/bin/true",), cwd="/")
    _, report = build_plan(_policy(tmp_path), plain)
    assert "socket(AF_UNIX) refused" in _seccomp_detail(report)


def test_landlock_only_mode_refuses_tools_rather_than_run_them_without_a_view(
        tmp_path: Path) -> None:
    with pytest.raises(EnforcementUnavailable, match="need a view of their own"):
        build_plan(_policy(tmp_path), _request(tmp_path), mode=LANDLOCK_ONLY)
