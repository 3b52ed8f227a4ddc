"""compile_mounts against real trees: what is guarded, what the session may not create, which
directories are anchored. It only looks at the host (nothing here mounts anything)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox._mounts import (
    ANCHOR,
    BIND_DIR,
    BIND_FILE,
    HOME_RC_FILES,
    MASK_DIR,
    MASK_FILE,
    OVERLAY,
    PERSISTENCE_NAMES,
    READONLY,
    UPPER_DIR,
    UPPER_FILE,
    MountPlan,
    _proc_root_only,
    _proc_top_entries,
    compile_mounts,
)


def plan(tmp_path: Path, *grants: tuple[Path, Access], denials: tuple[Path, ...] = (),
         writable_persistence: tuple[Path, ...] = (), home: Path | None = None) -> MountPlan:
    pol = ResolvedPolicy(
        name="t",
        grants=tuple(Grant(path=str(p), access=a) for p, a in grants),
        denials=tuple(Denial(path=str(d)) for d in denials),
        writable_persistence=tuple(str(p) for p in writable_persistence),
    )
    return compile_mounts(pol, home=str(home or tmp_path / "nohome"))


def test_the_persistence_list() -> None:
    """The documented list (docs/sandbox.md, "Persistence files"): changing it is a
    security decision, so it is spelled out here too."""
    assert PERSISTENCE_NAMES == (
        ".git/hooks", ".git/config", ".git/info/attributes", ".gitmodules", ".hg/hgrc",
        ".git/config.worktree", ".git/worktrees",
        ".envrc", ".vscode", ".idea", ".devcontainer", ".github/workflows", ".gitlab-ci.yml",
        ".pre-commit-config.yaml", ".husky", ".claude", ".mcp.json", ".gemini", ".cursor",
        ".aider.conf.yml", ".continue", "opencode.json", ".opencode", ".devcontainer.json",
        ".zed", ".helix")
    for name in (".bashrc", ".bash_profile", ".profile", ".zshrc", ".bash_aliases",
                 ".ssh/authorized_keys", ".ssh/config", ".config/systemd", ".gitconfig"):
        assert name in HOME_RC_FILES


def test_absent_names_are_refused_at_their_first_missing_component(tmp_path: Path) -> None:
    work = tmp_path / "w"
    (work / ".git" / "hooks").mkdir(parents=True)
    (work / ".git" / "config").write_text("")
    (work / ".git" / "info").mkdir()
    (work / ".github").mkdir()
    p = plan(tmp_path, (work, Access.READWRITE))
    refused = set(p.creation_refused)
    assert f"{work}/.github/workflows" in refused  # .github exists: its child is refused
    assert f"{work}/.git/info/attributes" in refused
    for name in (".envrc", ".vscode", ".idea", ".gitmodules", ".pre-commit-config.yaml"):
        assert f"{work}/{name}" in refused
    assert set(p.protected) == {f"{work}/.git/hooks", f"{work}/.git/config"}
    # The existing ones too: once the host removes one, the session may not make it again
    # (redteam31); nothing else is refused.
    assert set(p.absent) | set(p.protected) >= refused >= set(p.protected)
    # The way to them cannot be moved: .git, .git/info and .github are mount points.
    assert set(p.anchored) == {f"{work}/.git", f"{work}/.git/info", f"{work}/.github"}
    kinds = {op.target: (op.kind, op.absent) for op in p.ops}
    assert kinds[f"{work}/.envrc"] == (READONLY, True)
    assert kinds[f"{work}/.git"] == (ANCHOR, False)
    # Anchors come before what they hold.
    order = [op.target for op in p.ops]
    assert order.index(f"{work}/.git") < order.index(f"{work}/.git/hooks")


def test_a_missing_parent_is_what_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    p = plan(tmp_path, (work, Access.READWRITE))
    assert f"{work}/.github" in p.creation_refused
    assert f"{work}/.github/workflows" not in p.creation_refused
    assert f"{work}/.github/workflows" in p.absent


def test_no_repository_no_guard_under_it(tmp_path: Path) -> None:
    """A repository the session makes is its own: ``git init`` must work."""
    work = tmp_path / "w"
    work.mkdir()
    p = plan(tmp_path, (work, Access.READWRITE))
    assert not [x for x in (*p.creation_refused, *p.absent) if "/.git/" in x or "/.hg/" in x]
    assert f"{work}/.git" not in p.creation_refused


def test_a_git_file_is_read_only(tmp_path: Path) -> None:
    """A worktree's ``.git`` file names the repository: rewritten, it points git at a
    directory with the session's hooks."""
    work = tmp_path / "w"
    work.mkdir()
    (work / ".git").write_text("gitdir: /elsewhere\n")
    p = plan(tmp_path, (work, Access.READWRITE))
    assert f"{work}/.git" in p.protected


def test_read_only_grants_refuse_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    p = plan(tmp_path, (work, Access.READ), denials=(work / ".aws",))
    assert p.creation_refused == () and p.anchored == ()
    assert f"{work}/.aws" in p.absent


def test_denied_paths_missing_at_launch(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".ssh").mkdir()
    p = plan(tmp_path, (home, Access.READWRITE), home=home,
             denials=(home / ".ssh", home / ".aws", home / ".aws" / "credentials",
                      home / ".config" / "gcloud", home / ".kube" / "config"))
    assert p.masked == (f"{home}/.ssh",)
    assert set(p.absent) >= {f"{home}/.aws", f"{home}/.config/gcloud", f"{home}/.kube/config"}
    assert f"{home}/.aws/credentials" not in p.absent  # under a denied path: hidden with it
    assert {f"{home}/.aws", f"{home}/.config/gcloud", f"{home}/.kube"} <= set(p.creation_refused)
    assert f"{home}/.config" in p.anchored
    kinds = {op.target: op.kind for op in p.ops}
    assert kinds[f"{home}/.ssh"] == MASK_DIR
    assert kinds[f"{home}/.kube/config"] in (MASK_DIR, MASK_FILE)
    # Home rc files (absent) are refused too; none is made on the host.
    assert f"{home}/.bash_profile" in p.creation_refused
    assert not (home / ".bash_profile").exists()


@pytest.mark.parametrize("opt_out", ["exact", "parent"])
def test_writable_persistence_opts_a_path_out(tmp_path: Path, opt_out: str) -> None:
    work = tmp_path / "w"
    (work / ".github").mkdir(parents=True)
    allowed = work / ".github" / "workflows" if opt_out == "exact" else work / ".github"
    p = plan(tmp_path, (work, Access.READWRITE), writable_persistence=(allowed, work / ".envrc"))
    for path in (f"{work}/.github/workflows", f"{work}/.envrc"):
        assert path not in p.creation_refused and path not in p.absent
    assert f"{work}/.github" not in p.anchored
    assert f"{work}/.vscode" in p.creation_refused


def test_a_symbolic_link_on_the_way_is_followed(tmp_path: Path) -> None:
    """``~/.config`` pointing into a dotfiles repository: the mask goes where the path leads
    (the mount would follow the link anyway), and what is missing there is refused there."""
    home = tmp_path / "home"
    (home / "dotfiles" / "config" / "gcloud").mkdir(parents=True)
    (home / ".config").symlink_to(home / "dotfiles" / "config")
    (home / "work").mkdir()
    (home / "repo" / ".git" / "hooks").mkdir(parents=True)
    (home / "work" / ".git").symlink_to(home / "repo" / ".git")
    p = plan(tmp_path, (home, Access.READWRITE), (home / "work", Access.READWRITE), home=home,
             denials=(home / ".config" / "gcloud", home / ".config" / "op"))
    assert f"{home}/dotfiles/config/gcloud" in p.masked
    assert f"{home}/dotfiles/config/op" in p.creation_refused
    assert f"{home}/repo/.git/hooks" in p.protected


def test_nested_grants_and_denials(tmp_path: Path) -> None:
    """Which bind a guarded path falls in is the deepest one above it; a grant inside a denied
    path is not bound; a denial inside a masked one is hidden with it; one outside every grant
    is not in the view at all."""
    top = tmp_path / "top"
    (top / "ro" / "secret" / "inner").mkdir(parents=True)
    (top / "ro" / "secret" / "granted").mkdir()
    (top / "rw" / ".git" / "hooks").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    p = plan(tmp_path, (top, Access.READ), (top / "rw", Access.READWRITE),
             (top / "ro", Access.READ), (top / "ro" / "secret" / "granted", Access.READ),
             denials=(top / "ro" / "secret", top / "ro" / "secret" / "inner",
                      tmp_path / "elsewhere"))
    bound = {op.target for op in p.ops if op.kind in (1, 2)}
    assert bound == {str(top), str(top / "rw"), str(top / "ro")}
    assert p.masked == (str(top / "ro" / "secret"),)
    assert p.skipped == (str(tmp_path / "elsewhere"),)
    assert str(top / "rw" / ".git" / "hooks") in p.protected
    # the way to a guarded path in the writable grant is anchored; the read-only one is not
    assert str(top / "rw" / ".git") in p.anchored
    assert not any(a.startswith(str(top / "ro")) for a in p.anchored)


def test_proc_root_only_lists_no_process(tmp_path: Path) -> None:
    """What only root may read at the top of /proc, found without listing the host's
    processes (a launch with a thousand live sessions listed thousands of them): the same
    files as a full scan."""
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(20)]
    try:
        names = [name for name, _ in _proc_top_entries()]
        full = []
        with os.scandir("/proc") as entries:
            for entry in entries:
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except FileNotFoundError:
                    continue  # a process that ended meanwhile
                if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
                    full.append(entry.path)
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    assert "meminfo" in names
    assert not [n for n in names if n.isdigit() or n in ("self", "thread-self")]
    assert _proc_root_only() == sorted(full)


def test_a_plan_is_kept_while_the_host_answers_the_same(tmp_path: Path) -> None:
    """The same policy on an unchanged host gets the plan made before; any answer that
    changed (a denied path created, a granted directory turned into a file, a persistence
    file's repository appearing, a symbolic link re-pointed) makes a new one, as planning
    from scratch would."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (work / "link").symlink_to(work / "sub")

    def again() -> MountPlan:
        return plan(tmp_path, (work, Access.READWRITE), (tmp_path / "other", Access.READ),
                    denials=(work / "secret", work / "link" / "key"))

    first = again()
    assert again() is first
    assert str(work / "secret") in first.absent
    (work / "secret").mkdir()
    second = again()
    assert second is not first and str(work / "secret") in second.masked
    assert again() is second
    (tmp_path / "other").rmdir()
    (tmp_path / "other").write_text("")
    third = again()
    assert any(op.target == str(tmp_path / "other") and op.kind == 2 for op in third.ops)
    (work / ".git" / "hooks").mkdir(parents=True)
    fourth = again()
    assert str(work / ".git" / "hooks") in fourth.protected
    (work / "elsewhere").mkdir()
    (work / "link").unlink()
    (work / "link").symlink_to(work / "elsewhere")
    fifth = again()
    assert str(work / "elsewhere" / "key") in fifth.absent
    assert str(work / "sub" / "key") not in fifth.absent


def _kinds(p: MountPlan) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for op in p.ops:
        out.setdefault(op.target, set()).add(op.kind)
    return out


def test_writable_cache_grants_are_overlays(tmp_path: Path) -> None:
    """A writable directory grant in the cache home (``~/.cache`` or the policy's
    ``cache_home``) is an OVERLAY, a read-only one a bind; a writable grant holding the cache
    home gets an overlay at it; a writable file grant there is bound read-only; what
    ``shared_caches`` lists stays a writable bind (over the overlay when below one)."""
    home = tmp_path / "home"
    xdg = tmp_path / "xdg"
    for d in (".cache/go-build", ".cache/pip", ".cache/shared", "proj"):
        (home / d).mkdir(parents=True)
    (xdg / "uv").mkdir(parents=True)
    (home / ".cache/pip/index").write_text("")
    rw, ro = Access.READWRITE, Access.READ
    pol = ResolvedPolicy(
        name="t", denials=(), cache_home=str(xdg), shared_caches=(str(home / ".cache/shared"),),
        grants=(Grant(path=str(home), access=rw), Grant(path=str(home / ".cache/go-build"),
                                                        access=rw),
                Grant(path=str(xdg / "uv"), access=rw), Grant(path=str(xdg), access=ro),
                Grant(path=str(home / ".cache/pip/index"), access=rw, is_file=True)))
    p = compile_mounts(pol, home=str(home))
    kinds = _kinds(p)
    assert kinds[str(home)] == {BIND_DIR}
    for path in (home / ".cache", home / ".cache/go-build", xdg / "uv"):
        assert kinds[str(path)] == {OVERLAY}, path
    assert kinds[str(xdg)] == {BIND_DIR}
    index = next(op for op in p.ops if op.target == str(home / ".cache/pip/index"))
    assert index.kind == BIND_FILE and not index.writable
    shared = next(op for op in p.ops if op.target == str(home / ".cache/shared"))
    assert shared.kind == BIND_DIR and shared.writable
    order = [op.target for op in p.ops]
    assert order.index(str(home / ".cache")) < order.index(str(home / ".cache/shared"))


def test_what_lies_in_an_overlay_needs_no_guard_but_masks(tmp_path: Path) -> None:
    """In an overlay the session's writes stay its own: no read-only persistence bind, no
    anchor, nothing refused to the creation guard. A denied path absent at launch is made
    in the upper layer (UPPER_DIR, UPPER_FILE) and masked as a present one (nothing is
    left for the view guard to apply later: it cannot see the host write a lower layer)."""
    home = tmp_path / "home"
    proj = home / ".cache/proj"
    (proj / ".git/hooks").mkdir(parents=True)
    (home / ".cache/present").mkdir()
    pol = ResolvedPolicy(
        name="t", grants=(Grant(path=str(home / ".cache"), access=Access.READWRITE),),
        denials=(Denial(path=str(home / ".cache/gone/dir")),
                 Denial(path=str(home / ".cache/token"), is_file=True),
                 Denial(path=str(home / ".cache/present"))))
    p = compile_mounts(pol, home=str(home), pinned=(str(proj / "AGENTS.md"),))
    kinds = _kinds(p)
    assert kinds[str(home / ".cache/gone/dir")] == {UPPER_DIR, MASK_DIR}
    assert kinds[str(home / ".cache/token")] == {UPPER_FILE, MASK_FILE}
    assert kinds[str(home / ".cache/present")] == {MASK_DIR}
    assert not p.absent and not p.creation_refused and not p.protected
    assert not any(op.kind == READONLY for op in p.ops)
    # A verified file's way is still anchored (moved aside, a new one would be read).
    assert p.anchored == (str(proj),)
    assert all(op.kind != ANCHOR or op.target == str(proj) for op in p.ops)


def test_a_cache_home_above_the_home_is_not_one(tmp_path: Path) -> None:
    """``XDG_CACHE_HOME=$HOME`` (or ``/``) would make the working directory copy-on-write:
    only ``~/.cache`` counts then."""
    home = tmp_path / "home"
    (home / "proj").mkdir(parents=True)
    for cache_home in (home, Path("/")):
        pol = ResolvedPolicy(name="t", denials=(), cache_home=str(cache_home), grants=(
            Grant(path=str(home / "proj"), access=Access.READWRITE),))
        assert _kinds(compile_mounts(pol, home=str(home)))[str(home / "proj")] == {BIND_DIR}
