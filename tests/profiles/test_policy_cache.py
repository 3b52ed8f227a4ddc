"""The daemon's cache of launch resolutions: reused only for the same caller, profile bytes,
context and options, and only while the filesystem answers as it did."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nonod import protocol as p
from nonod._profile_source import ProfilePolicies
from nonod.policy import ResolvedPolicy
from nonod.sessions import Caller

ME = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = Path(os.path.realpath(tmp_path)) / "home"
    (path / "project").mkdir(parents=True)
    (path / ".ssh").mkdir()
    return path


def request(home: Path, profile: str | None = None, **options: object) -> p.Launch:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home),
           "XDG_CONFIG_HOME": str(home / "config")}
    return p.Launch(argv=("/bin/true",), cwd=str(home / "project"), env=env,
                    options=p.LaunchOptions(allow_cwd=True, **options),  # type: ignore[arg-type]
                    detach=True, stdio="null", profile=profile)


def resolve(policies: ProfilePolicies, launch: p.Launch, caller: Caller = ME,
            data: bytes | None = None) -> ResolvedPolicy:
    return policies._resolve_launch(launch, caller, data)[0]


@pytest.fixture
def policies() -> ProfilePolicies:
    return ProfilePolicies(system=False, profile_dir=lambda: None)


def test_the_same_launch_is_resolved_once(policies: ProfilePolicies, home: Path) -> None:
    first = resolve(policies, request(home))
    again = resolve(policies, request(home))
    assert again == first
    assert (policies.cache.misses, policies.cache.hits) == (1, 1)


def test_a_denied_directory_turned_symlink_is_denied_where_it_now_points(
        policies: ProfilePolicies, home: Path) -> None:
    before = resolve(policies, request(home))
    assert str(home / ".ssh") in {d.path for d in before.denials}
    (home / ".ssh").rename(home / "keys")
    (home / ".ssh").symlink_to(home / "keys")
    after = resolve(policies, request(home))
    assert str(home / "keys") in {d.path for d in after.denials}
    assert policies.cache.hits == 0


def test_a_grant_of_a_path_created_since_is_granted(policies: ProfilePolicies,
                                                    home: Path) -> None:
    later = home / "later"
    launch = request(home, read=(str(later),))
    assert str(later) not in {g.path for g in resolve(policies, launch).grants}
    later.mkdir()
    assert str(later) in {g.path for g in resolve(policies, launch).grants}


def test_another_caller_never_gets_a_cached_resolution(policies: ProfilePolicies,
                                                       home: Path) -> None:
    resolve(policies, request(home))
    other = Caller(uid=ME.uid + 1, gid=ME.gid, pid=ME.pid)
    resolve(policies, request(home), caller=other)
    assert (policies.cache.misses, policies.cache.hits) == (2, 0)


def test_other_options_or_profile_bytes_miss(policies: ProfilePolicies, home: Path) -> None:
    (home / "data").mkdir()
    path = str(home / "t.json")  # read by the caller in the daemon; its bytes come in here
    doc = {"meta": {"name": "t"}, "filesystem": {"read": [str(home / "project")]}}
    resolve(policies, request(home, path), data=json.dumps(doc).encode())
    resolve(policies, request(home, path, block_net=True), data=json.dumps(doc).encode())
    doc["filesystem"] = {"read": [str(home / "data")]}
    changed = resolve(policies, request(home, path), data=json.dumps(doc).encode())
    assert str(home / "data") in {g.path for g in changed.grants}
    assert (policies.cache.misses, policies.cache.hits) == (3, 0)


def test_a_launch_is_resolved_in_one_worker_thread(
        policies: ProfilePolicies, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The working directory's check, a profile path's read and the resolution (a cache hit
    too) share one thread: each hop is a wake-up of the event loop and a wait for the GIL."""
    import trio

    profile = home / "mine.json"
    profile.write_text(json.dumps({"meta": {"name": "mine"}, "extends": "default"}))
    hops: list[str] = []
    run_sync = trio.to_thread.run_sync

    async def counted(fn: object, *args: object, **kwargs: object) -> object:
        hops.append(getattr(fn, "__name__", "?"))
        return await run_sync(fn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)

    async def twice() -> None:
        for _ in range(2):
            await policies.resolve_launch(request(home, profile=str(profile)), ME)

    trio.run(twice)
    assert len(hops) == 2
    assert (policies.cache.misses, policies.cache.hits) == (1, 1)


def test_a_missing_working_directory_refuses_the_launch(
        policies: ProfilePolicies, home: Path) -> None:
    import trio

    from nonod.errors import PolicyError

    launch = request(home)
    gone = p.Launch(argv=launch.argv, cwd=str(home / "gone"), env=launch.env,
                    options=launch.options, detach=True, stdio="null")
    with pytest.raises(PolicyError, match="does not exist"):
        trio.run(policies.resolve_launch, gone, ME)


def _early(policies: ProfilePolicies, launch: p.Launch, caller: Caller = ME
           ) -> list[tuple[ResolvedPolicy, bool | str]]:
    """Two launches of ``launch`` through ``resolve_launch_early``, each with its check's
    verdict: True (passed, or nothing to check), else the refusal's code."""
    import trio

    from nonod.errors import NonoError

    async def twice() -> list[tuple[ResolvedPolicy, bool | str]]:
        got: list[tuple[ResolvedPolicy, bool | str]] = []
        for _ in range(2):
            policy, _, check = await policies.resolve_launch_early(launch, caller)
            verdict: bool | str = True
            if check is not None:
                try:
                    await check.wait_passed()
                except NonoError as exc:
                    verdict = exc.code
            got.append((policy, verdict))
        return got

    return trio.run(twice)


def test_an_early_launch_gets_the_kept_resolution_and_its_check_after(
        policies: ProfilePolicies, home: Path) -> None:
    (first, passed), (again, checked) = _early(policies, request(home))
    assert again == first and passed is True and checked is True
    assert (policies.cache.misses, policies.cache.hits) == (1, 1)  # counted by the check


def test_an_early_launchs_check_finds_a_change_and_drops_the_entry(
        policies: ProfilePolicies, home: Path) -> None:
    resolve(policies, request(home))
    (home / ".ssh").rename(home / "keys")
    (home / ".ssh").symlink_to(home / "keys")
    (kept, verdict), (fresh, passed) = _early(policies, request(home))
    assert verdict == "policy.resolution_changed"
    assert str(home / "keys") not in {d.path for d in kept.denials}  # what the gate refuses
    assert passed is True and str(home / "keys") in {d.path for d in fresh.denials}
    # the first resolution, the check that failed, the fresh resolution after it
    assert (policies.cache.misses, policies.cache.hits) == (3, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching fsuid needs root")
def test_the_system_daemons_early_check_looks_as_the_caller() -> None:
    """The check left to run after the answer still takes the caller's file identity: a
    granted path below a directory only root may search is missing to the caller (as its
    resolution found it); checked as root it would be there, and the check would fail."""
    import shutil
    import tempfile

    nobody = Caller(uid=65534, gid=65534, pid=os.getpid())
    base = Path(tempfile.mkdtemp(prefix="nono-early-", dir="/tmp"))  # reachable by nobody
    base.chmod(0o755)
    try:
        _check_as_nobody(base, nobody)
    finally:
        shutil.rmtree(base)


def _check_as_nobody(base: Path, nobody: Caller) -> None:
    work = base / "work"
    work.mkdir(mode=0o777)
    closed = base / "closed"
    (closed / "inside").mkdir(parents=True)
    closed.chmod(0o700)
    launch = p.Launch(argv=("/bin/true",), cwd=str(work),
                      env={"PATH": "/usr/bin:/bin"},
                      options=p.LaunchOptions(read=(str(closed / "inside"),)),
                      detach=True, stdio="null")
    policies = ProfilePolicies(system=True, profile_dir=lambda: None)
    (_, passed), (_, checked) = _early(policies, launch, nobody)
    assert passed is True and checked is True
    assert (policies.cache.misses, policies.cache.hits) == (1, 1)


def test_after_a_stale_kept_resolution_the_next_launches_check_first_until_one_passes(
        policies: ProfilePolicies, home: Path) -> None:
    """A resolution whose files change at every launch must not make every launch be
    prepared twice: once a launch went on with a stale one, that key's launches check before
    they go on (no check left for the gate), until a check passes."""
    import contextlib

    import trio

    from nonod.errors import ResolutionChanged

    async def checks() -> list[bool]:
        left: list[bool] = []
        for change in (False, True, True, False, False):
            if change:  # a denied directory turned symlink, and back
                if (home / ".ssh").is_symlink():
                    (home / ".ssh").unlink()
                    (home / "keys").rename(home / ".ssh")
                else:
                    (home / ".ssh").rename(home / "keys")
                    (home / ".ssh").symlink_to(home / "keys")
            _, _, check = await policies.resolve_launch_early(request(home), ME)
            left.append(check is not None)
            if check is not None:
                with contextlib.suppress(ResolutionChanged):
                    await check.wait_passed()
        return left

    # 1st: resolved; 2nd: kept, found stale at the gate; 3rd: doubted, checked first (stale
    # again: resolved); 4th: doubted, checked first, passes; 5th: kept again
    assert trio.run(checks) == [False, True, False, False, True]
