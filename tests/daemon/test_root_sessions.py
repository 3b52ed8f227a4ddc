"""The system daemon runs a root caller's session as root only when both the operator
(``[sessions] allow_root``) and the profile (``"nonod": {"allow_root": true}``) say so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from nonoctl.client import RemoteError
from nonod import protocol as p

from .conftest import DaemonThread, session_env, wait_pid_gone

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="a root caller needs root"),
]


def _launch(handle: DaemonThread, work: Path, profile: Path) -> p.AnyReply:
    with handle.connect() as conn:
        return conn.request(p.Launch(
            argv=("sleep", "600"), cwd=str(work), env=session_env(work), profile=str(profile),
            options=p.LaunchOptions(allow_cwd=True), detach=True, stdio="null",
        ))


def _profile(base: Path, allow_root: bool | None) -> Path:
    doc: dict[str, object] = {"meta": {"name": "root-job"}}
    if allow_root is not None:
        doc["nonod"] = {"allow_root": allow_root}
    path = base / f"root-{allow_root}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("operator", "profile_allows"), [
    (False, True), (True, None), (True, False),
])
def test_root_session_needs_both_switches(
    short_tmp: Path, operator: bool, profile_allows: bool | None
) -> None:
    config = f"[sessions]\nallow_root = {'true' if operator else 'false'}\n"
    handle = DaemonThread(short_tmp, config=config, system=True).start()
    try:
        with pytest.raises(RemoteError) as info:
            _launch(handle, short_tmp, _profile(short_tmp, profile_allows))
        assert info.value.remote_code == "policy.root_refused"
    finally:
        handle.stop()


def test_root_session_runs_as_root_when_both_allow(short_tmp: Path) -> None:
    handle = DaemonThread(short_tmp, config="[sessions]\nallow_root = true\n",
                          system=True).start()
    try:
        launched = _launch(handle, short_tmp, _profile(short_tmp, True))
        assert isinstance(launched, p.Launched), launched
        session = launched.session
        assert session.uid == 0
        program = subprocess.run(["ps", "-o", "uid=", "--ppid", str(session.pid)],
                                 capture_output=True, text=True, check=False).stdout.split()
        assert program == ["0"]
        with handle.connect() as conn:
            assert isinstance(conn.request(p.Stop(session=session.id, force=True)), p.Exited)
        assert session.pid is not None and wait_pid_gone(session.pid)
    finally:
        handle.stop()
