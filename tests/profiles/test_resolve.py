"""resolve(): Profile -> ResolvedPolicy, against a temporary HOME (never the real one)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from nonod.errors import ExtendsError, PolicyError, ProfileError
from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.profiles import (
    CliOverrides,
    ResolveContext,
    builtin_groups,
    load_profile,
    parse_profile,
    resolve,
)

EXAMPLE = Path("/work/shared/examples/gitbot-profile.json")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = Path(os.path.realpath(tmp_path)) / "home" / "alice"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def project(home: Path) -> Path:
    path = home / "gitbot"
    path.mkdir()
    return path


@pytest.fixture
def ctx(home: Path, project: Path) -> ResolveContext:
    return ResolveContext(home=str(home), workdir=str(project), uid=4242,
                          tmpdir="/tmp")


def profile_of(doc: object, name: str = "t") -> bytes:
    return json.dumps({"meta": {"name": name}, **doc}).encode()  # type: ignore[dict-item]


def resolved(doc: dict[str, object], ctx: ResolveContext, **kw: object) -> ResolvedPolicy:
    return resolve(parse_profile(profile_of(doc), "t.json"), ctx, **kw)  # type: ignore[arg-type]


def grant_for(policy: ResolvedPolicy, path: Path | str) -> Grant | None:
    return next((g for g in policy.grants if g.path == str(path)), None)


def denied(policy: ResolvedPolicy) -> set[str]:
    return {d.path for d in policy.denials}


def notes(policy: ResolvedPolicy, kind: str) -> list[str]:
    return [n.message for n in policy.notes if n.kind == kind]


# --- the blog's gitbot profile --------------------------------------------------------------

@pytest.mark.parametrize("how", ["example file", "built-in name"])
def test_gitbot_resolves_as_the_blog_describes(how: str, ctx: ResolveContext, home: Path,
                                               project: Path) -> None:
    if how == "example file":
        if not EXAMPLE.is_file():
            pytest.skip("shared example not present")
        profile = load_profile(str(EXAMPLE), user_dir=None)
    else:
        profile = load_profile("gitbot", user_dir=None)
    (home / ".pyenv").mkdir()
    policy = resolve(profile, ctx)

    assert policy.name == "gitbot"
    assert policy.workdir == str(project)
    assert policy.workdir_access is Access.READWRITE
    assert grant_for(policy, project) == Grant(path=str(project), access=Access.READWRITE,
                                               source="workdir")
    assert "python_runtime" in policy.groups
    pyenv = grant_for(policy, home / ".pyenv")
    assert pyenv is not None and pyenv.source == "group:python_runtime"
    tmp = grant_for(policy, os.path.realpath("/tmp"))
    assert tmp is not None and tmp.access.writes
    for rel in (".ssh", ".aws", ".gnupg", ".config/gcloud", ".kube"):
        assert str(home / rel) in denied(policy), rel
    macos = [n for n in policy.notes if n.kind == "macos_only"]
    assert {n.path for n in macos} == {"/private/etc/ssl/cert.pem", "/private/etc/resolv.conf"}
    net = policy.network
    assert net.restricted and not net.block
    assert net.allow_domain == ("api.github.com", "generativelanguage.googleapis.com", "smee.io")
    assert net.credentials == ("gemini",)
    (name, github), = net.custom_credentials
    assert name == "github"
    assert (github.upstream, github.credential_key) == ("https://api.github.com", "github_token")
    assert (github.inject_mode, github.inject_header, github.credential_format) == (
        "header", "Authorization", "Bearer {}")
    deprecated = " ".join(notes(policy, "deprecated_key"))
    for old in ("security.groups", "policy.add_deny_access", "network.allow_hosts",
                "network.proxy_credentials"):
        assert f"`{old}`" in deprecated


def test_gitbot_with_the_blogs_run_flags(ctx: ResolveContext) -> None:
    profile = load_profile("gitbot", user_dir=None)
    policy = resolve(profile, ctx, overrides=CliOverrides(
        allow_cwd=True, listen_port=(5001,), credentials=("gemini", "github")))
    assert policy.network.listen_ports == (5001,)
    assert policy.network.credentials == ("gemini", "github")


def test_resolve_never_reads_the_daemons_environment(ctx: ResolveContext, home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/nonexistent-daemon-home")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent-daemon-config")
    policy = resolve(load_profile("gitbot", user_dir=None), ctx)
    for path in denied(policy) | {g.path for g in policy.grants}:
        assert "nonexistent-daemon" not in path
    assert str(home / ".config" / "nono") in denied(policy)


# --- groups ---------------------------------------------------------------------------------

ALWAYS_ON = ("deny_credentials", "deny_keychains_linux", "deny_browser_data_linux",
             "deny_shell_history", "deny_shell_configs", "deny_system_secrets", "deny_nono_state")


def test_always_on_deny_groups_apply_to_an_empty_profile(ctx: ResolveContext,
                                                         home: Path) -> None:
    policy = resolved({}, ctx)
    for name in ALWAYS_ON:
        assert name in policy.groups
    paths = denied(policy)
    for expected in ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-",
                     "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh/ssh_host_rsa_key",
                     "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key",
                     "/etc/ssh/ssh_host_dsa_key", "/run/user", "/run/containerd",
                     "/run/systemd/private", "/run/nono", "/run/user/4242",
                     str(home / ".config/nono"), str(home / ".local/state/nono"),
                     str(home / ".bash_history"), str(home / ".local/share/keyrings")):
        assert os.path.realpath(expected) in paths, expected
    for sock in ("/var/run/docker.sock", "/run/docker.sock", "/run/dbus", "/var/run/dbus"):
        assert os.path.realpath(sock) in paths, sock
    assert policy.workdir_access is None
    assert not policy.network.restricted


def test_denials_are_kept_for_paths_that_do_not_exist(ctx: ResolveContext, home: Path) -> None:
    assert not (home / ".ssh").exists()
    policy = resolved({}, ctx)
    ssh = next(d for d in policy.denials if d.path == str(home / ".ssh"))
    assert ssh == Denial(path=str(home / ".ssh"), is_file=False, source="group:deny_credentials")
    netrc = next(d for d in policy.denials if d.path == str(home / ".netrc"))
    assert netrc.is_file


def test_existing_denied_path_reports_its_real_type(ctx: ResolveContext, home: Path) -> None:
    (home / ".credentials").write_text("x")  # listed as a directory, is a file here
    policy = resolved({}, ctx)
    entry = next(d for d in policy.denials if d.path == str(home / ".credentials"))
    assert entry.is_file


def test_xdg_values_from_the_context(home: Path, project: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg-config"
    ctx = ResolveContext(home=str(home), workdir=str(project), uid=7,
                         xdg={"XDG_CONFIG_HOME": str(xdg), "XDG_RUNTIME_DIR": "/run/user/7"})
    policy = resolved({}, ctx)
    assert str(xdg / "nono") in denied(policy)
    assert str(home / ".config/nono") not in denied(policy)


def test_included_macos_group_is_noted_on_linux(ctx: ResolveContext) -> None:
    policy = resolved({"groups": {"include": ["homebrew"]}}, ctx)
    assert "homebrew" not in policy.groups
    assert any("homebrew" in m for m in notes(policy, "macos_only"))


def test_excluding_an_optional_base_group(ctx: ResolveContext) -> None:
    policy = resolved({"groups": {"exclude": ["system_read_linux", "user_tools"]}}, ctx)
    assert "system_read_linux" not in policy.groups
    assert grant_for(policy, "/usr/bin") is None


def test_required_groups_cannot_be_excluded_even_when_built_in_code(ctx: ResolveContext) -> None:
    from nonod.profiles._schema import GroupsConfig, Profile

    profile = Profile(groups=GroupsConfig(exclude=("deny_nono_state",)))
    with pytest.raises(ProfileError, match="`deny_nono_state` is required"):
        resolve(profile, ctx)


def test_platform_conditions(ctx: ResolveContext, home: Path) -> None:
    (home / "lin").mkdir()
    (home / "mac").mkdir()
    policy = resolved({"filesystem": {"read": [
        {"path": "~/lin", "when": "linux"}, {"path": "~/mac", "when": ["macos"]},
        {"path": "~/mac", "when": "!linux"}]}}, ctx)
    assert grant_for(policy, home / "lin") is not None
    assert grant_for(policy, home / "mac") is None


# --- paths ----------------------------------------------------------------------------------

def test_paths_are_expanded_and_canonical(ctx: ResolveContext, home: Path, project: Path,
                                          tmp_path: Path) -> None:
    real = tmp_path / "real-data"
    real.mkdir()
    (home / "data-link").symlink_to(real)
    (project / "docs").mkdir()
    policy = resolved({"filesystem": {
        "read": ["~/data-link", "$WORKDIR/docs/../docs", "${HOME}/gitbot/./docs"],
        "write_file": ["$WORKDIR/out.log"],
    }}, ctx)
    assert grant_for(policy, real) == Grant(path=str(real), access=Access.READ,
                                            source="profile")
    assert grant_for(policy, home / "data-link") is None
    docs = [g for g in policy.grants if g.path == str(project / "docs")]
    assert len(docs) == 1
    assert any(n.kind == "missing" and n.path == str(project / "out.log") for n in policy.notes)


def test_same_path_grants_merge_their_access(ctx: ResolveContext, home: Path) -> None:
    (home / "shared").mkdir()
    policy = resolved({"filesystem": {"read": ["~/shared"], "write": ["$HOME/shared"]}}, ctx)
    assert grant_for(policy, home / "shared") == Grant(
        path=str(home / "shared"), access=Access.READWRITE, source="profile")


def test_missing_user_grant_is_a_note_or_strict_error(ctx: ResolveContext, home: Path) -> None:
    doc: dict[str, object] = {"filesystem": {"read": ["~/not-there"]}}
    policy = resolved(doc, ctx)
    assert any(n.kind == "missing" and n.path == str(home / "not-there") and
               n.source == "profile" for n in policy.notes)
    with pytest.raises(PolicyError, match="does not exist"):
        resolved(doc, ctx, strict=True)
    resolved({"groups": {"include": ["rust_runtime"]}}, ctx, strict=True)  # groups stay notes


def test_file_keys_refuse_directories(ctx: ResolveContext, project: Path) -> None:
    with pytest.raises(PolicyError, match="is a directory"):
        resolved({"filesystem": {"read_file": ["$WORKDIR"]}}, ctx)


def test_directory_keys_on_files_grant_file_rights(ctx: ResolveContext, project: Path) -> None:
    (project / "a.txt").write_text("a")
    policy = resolved({"filesystem": {"read": ["$WORKDIR/a.txt"]}}, ctx)
    grant = grant_for(policy, project / "a.txt")
    assert grant is not None and grant.is_file


def test_tmp_grants_are_kept_as_tmp(ctx: ResolveContext) -> None:
    policy = resolved({"groups": {"exclude": ["system_read_linux", "system_write_linux"]},
                       "filesystem": {"write": ["/tmp"]}}, ctx)
    assert grant_for(policy, os.path.realpath("/tmp")) == Grant(
        path=os.path.realpath("/tmp"), access=Access.WRITE, source="profile")


def test_bypass_protection_lifts_one_group_denial(ctx: ResolveContext, home: Path) -> None:
    (home / ".bashrc").write_text("# rc")
    policy = resolved({"filesystem": {"read_file": ["~/.bashrc"],
                                      "bypass_protection": ["~/.bashrc", "~/.nothing"]}}, ctx)
    assert str(home / ".bashrc") not in denied(policy)
    assert grant_for(policy, home / ".bashrc") is not None
    bypass = [n for n in policy.notes if n.kind == "bypass"]
    assert any(n.path == str(home / ".bashrc") and "deny_shell_configs" in n.message
               for n in bypass)
    assert any("matches no denied path" in n.message for n in bypass)


def test_legacy_override_deny_works_and_is_deprecated(ctx: ResolveContext, home: Path) -> None:
    policy = resolved({"policy": {"override_deny": ["~/.npmrc"]}}, ctx)
    assert str(home / ".npmrc") not in denied(policy)
    assert any("policy.override_deny" in m for m in notes(policy, "deprecated_key"))
    assert any("nothing grants access" in m for m in notes(policy, "info"))


def test_nonod_state_cannot_be_bypassed(ctx: ResolveContext) -> None:
    with pytest.raises(ProfileError, match="cannot be bypassed"):
        resolved({"filesystem": {"bypass_protection": ["/run/user"]}}, ctx)


def test_grant_under_a_denial_is_kept_and_noted(ctx: ResolveContext, home: Path) -> None:
    (home / ".ssh").mkdir()
    policy = resolved({"filesystem": {"read": ["~/.ssh"]}}, ctx)
    assert grant_for(policy, home / ".ssh") is not None
    assert str(home / ".ssh") in denied(policy)
    assert any("hidden by the denial" in n.message and n.path == str(home / ".ssh")
               for n in policy.notes)


# --- CLI overrides --------------------------------------------------------------------------

def test_cli_grants_and_workdir(ctx: ResolveContext, home: Path, project: Path) -> None:
    other = home / "other"
    (other / "sub").mkdir(parents=True)
    policy = resolved({}, ctx, overrides=CliOverrides(
        workdir=str(other), allow_cwd=True, read=("sub",), allow=(str(home / "x"),)))
    assert policy.workdir == str(other)
    assert grant_for(policy, other) == Grant(path=str(other), access=Access.READWRITE,
                                             source="workdir")
    assert grant_for(policy, other / "sub") == Grant(path=str(other / "sub"),
                                                     access=Access.READ, source="cli")
    assert any(n.kind == "missing" and n.source == "cli" for n in policy.notes)
    with pytest.raises(PolicyError):
        resolved({}, ctx, overrides=CliOverrides(allow=("/no/such",)), strict=True)


def test_missing_workdir_is_an_error(ctx: ResolveContext, home: Path) -> None:
    with pytest.raises(PolicyError, match="working directory"):
        resolved({"workdir": {"access": "read"}}, ctx,
                 overrides=CliOverrides(workdir=str(home / "gone")))


def test_block_net_flag_drops_proxy_settings(ctx: ResolveContext) -> None:
    policy = resolve(load_profile("gitbot", user_dir=None), ctx,
                     overrides=CliOverrides(block_net=True))
    assert policy.network.block and policy.network.restricted
    assert policy.network.allow_domain == () and policy.network.credentials == ()
    assert any("--block-net" in m for m in notes(policy, "info"))


def test_bad_cli_values(ctx: ResolveContext) -> None:
    for overrides in (CliOverrides(allow_domain=("http://x.com",)),
                      CliOverrides(listen_port=(0,)),
                      CliOverrides(credentials=("a b",)),
                      CliOverrides(env_credential_map=(("k", "PATH"),)),
                      CliOverrides(read=("/a\x00",))):
        with pytest.raises(PolicyError):
            resolved({}, ctx, overrides=overrides)


# --- network, environment, the rest ---------------------------------------------------------

def test_network_profile_expands_to_its_hosts(ctx: ResolveContext) -> None:
    policy = resolved({"network": {"network_profile": "minimal",
                                   "allow_domain": ["API.Example.com"]}}, ctx)
    net = policy.network
    assert net.network_profile == "minimal"
    assert net.allow_domain[0] == "api.example.com"
    assert "api.anthropic.com" in net.allow_domain and "pypi.org" not in net.allow_domain
    wide = resolved({"network": {"network_profile": "enterprise"}}, ctx).network
    assert "*.googleapis.com" in wide.allow_domain


def test_unrestricted_unless_asked(ctx: ResolveContext) -> None:
    assert not resolved({"network": {"block": False}}, ctx).network.restricted
    blocked = resolved({"network": {"block": True}}, ctx).network
    assert blocked.restricted and blocked.block


def test_ports_credentials_and_env(ctx: ResolveContext, home: Path) -> None:
    policy = resolved({
        "network": {"listen_port": [8080, 5001], "open_port": [3000], "port_allow": [3000, 9],
                    "credentials": ["openai"],
                    "upstream_proxy": "proxy.corp:3128", "upstream_bypass": ["*.Corp.com"],
                    "custom_credentials": {"kube": {
                        "upstream": "https://k8s.local:6443", "credential_key": "env://KUBE_TOKEN",
                        "inject_header": "X-Token", "tls_ca": "~/ca.pem",
                        "endpoint_rules": [{"method": "GET", "path": "/api/**"}]}}},
        "env_credentials": {"openai_api_key": "OPENAI_API_KEY"},
        "secrets": {"other": {"env_var": "OTHER", "when": "macos"}},
        "environment": {"allow_vars": ["PATH", "LANG", "PATH"], "deny_vars": ["AWS_*"],
                        "set_vars": {"CACHE": "$XDG_CACHE_HOME/bot"}},
        "security": {"signal_mode": "allow_same_sandbox", "ipc_mode": "full",
                     "process_info_mode": "allow_all"},
        "linux": {"af_unix_mediation": "pathname"},
        "command_args": ["--config", "$WORKDIR/bot.toml"],
        "nonod": {"allow_degraded": ["seccomp", "seccomp"], "binary": "$WORKDIR/.venv/bin/python3",
                  "writable_persistence": ["$WORKDIR/.envrc"]},
    }, ctx, overrides=CliOverrides(env_credential_map=(("gh", "GH_TOKEN"),)))
    net = policy.network
    assert net.listen_ports == (5001, 8080)
    assert net.open_ports == (9, 3000)
    assert net.restricted
    assert (net.upstream_proxy, net.upstream_bypass) == ("proxy.corp:3128", ("*.corp.com",))
    (name, kube), = net.custom_credentials
    assert name == "kube" and kube.credential_format == "{}"  # nono's default off Authorization
    assert kube.tls_ca == str(home / "ca.pem")
    assert kube.endpoint_rules == (("GET", "/api/**"),)
    assert net.env_credentials == (("openai_api_key", "OPENAI_API_KEY"), ("gh", "GH_TOKEN"))
    assert policy.env.allow_vars == ("PATH", "LANG")
    assert policy.env.set_vars == (("CACHE", str(home / ".cache/bot")),)
    assert (policy.signal_mode, policy.ipc_mode, policy.process_info_mode) == (
        "allow_same_sandbox", "full", "allow_all")
    assert policy.af_unix_mediation == "pathname"
    workdir = ctx.workdir
    assert policy.command_args == ("--config", f"{workdir}/bot.toml")
    assert policy.allow_degraded == ("seccomp",)
    assert policy.binary == f"{workdir}/.venv/bin/python3"
    assert policy.writable_persistence == (f"{workdir}/.envrc",)


def test_ignored_nono_settings_become_notes(ctx: ResolveContext) -> None:
    policy = resolved({"hooks": {"claude-code": {"event": "e", "matcher": "m", "script": "s"}},
                       "allow_gpu": True, "commands": {"allow": ["rm"]},
                       "security": {"capability_elevation": True},
                       "unsafe_macos_seatbelt_rules": ["(allow iokit-open)"]}, ctx)
    info = " ".join(notes(policy, "info"))
    for key in ("hooks", "allow_gpu", "commands.allow", "capability_elevation"):
        assert key in info
    assert notes(policy, "macos_only")
    mac = ResolveContext(home=ctx.home, workdir=ctx.workdir, uid=1, platform="macos")
    with pytest.raises(ProfileError, match="Seatbelt"):
        resolved({"unsafe_macos_seatbelt_rules": ["(allow iokit-open)"]}, mac)


def test_unflattened_profile_is_refused(ctx: ResolveContext) -> None:
    with pytest.raises(ExtendsError, match="still extends `default`") as info:
        resolve(parse_profile(b'{"extends": "default"}', "x.json"), ctx)
    assert info.value.hint is not None and "load_profile" in info.value.hint


def test_resolution_is_deterministic(ctx: ResolveContext) -> None:
    profile = load_profile("gitbot", user_dir=None)
    assert resolve(profile, ctx).digest() == resolve(profile, ctx).digest()


def test_context_validation(home: Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        ResolveContext(home="relative", workdir="/", uid=1)
    with pytest.raises(ValueError, match="unknown keys"):
        ResolveContext(home=str(home), workdir="/", uid=1, xdg={"XDG_MUSIC_DIR": "/m"})
    ctx = ResolveContext.for_user(home=str(home), workdir="/", uid=3,
                                  environ={"XDG_CACHE_HOME": "/c", "XDG_DATA_HOME": "rel",
                                           "TMPDIR": "/var/tmp"})
    values = ctx.values()
    assert values["XDG_CACHE_HOME"] == "/c"
    assert values["XDG_DATA_HOME"] == f"{home}/.local/share"
    assert values["XDG_RUNTIME_DIR"] == "/run/user/3"
    assert values["TMPDIR"] == "/tmp"  # on Linux each session's own, never the client's
    macos = ResolveContext.for_user(home=str(home), workdir="/", uid=3, platform="macos",
                                    environ={"TMPDIR": "/var/folders/x/T/"})
    assert macos.values()["TMPDIR"] == "/var/folders/x/T/"


def test_every_builtin_group_resolves(ctx: ResolveContext) -> None:
    catalog = builtin_groups()
    usable = [name for name, g in catalog.groups.items()
              if g.unsupported is None and g.platform in (None, "linux")]
    policy = resolved({"groups": {"include": usable}}, ctx)
    assert set(usable) <= set(policy.groups)


def test_linux_sandbox_policy_selects_the_landlock_network_mode(tmp_path: Path) -> None:
    from nonod.profiles import ResolveContext, parse_profile, resolve

    profile = parse_profile(b'{"network": {"allow_domain": ["api.github.com"]},'
                            b' "linux": {"sandbox_policy": "landlock"}}', "p.json")
    ctx = ResolveContext.for_user(home=str(tmp_path), workdir=str(tmp_path), uid=0)
    assert resolve(profile, ctx).network_isolation == "landlock"
    default = parse_profile(b'{"network": {"block": true}}', "q.json")
    assert resolve(default, ctx).network_isolation == "namespaces"


def test_shared_caches_and_the_cache_home_resolve_to_canonical_paths(
        ctx: ResolveContext, home: Path, tmp_path: Path) -> None:
    """``nonod.shared_caches`` expands like any path; the cache home is $XDG_CACHE_HOME where
    the context sets it, else ``~/.cache`` (the sandbox makes writable grants there
    copy-on-write, but in the shared ones)."""
    doc: dict[str, object] = {"nonod": {"shared_caches": ["~/.cache/go-build",
                                                          "$XDG_CACHE_HOME/pip"]}}
    policy = resolved(doc, ctx)
    assert policy.cache_home == str(home / ".cache")
    assert policy.shared_caches == (str(home / ".cache/go-build"), str(home / ".cache/pip"))
    xdg = tmp_path / "xdg-cache"
    other = msgspec.structs.replace(ctx, xdg={"XDG_CACHE_HOME": str(xdg)})
    policy = resolved(doc, other)
    assert policy.cache_home == str(xdg)
    assert policy.shared_caches == (str(home / ".cache/go-build"), str(xdg / "pip"))


def test_shared_caches_are_checked_as_paths(ctx: ResolveContext) -> None:
    with pytest.raises(ProfileError, match=r"\$\.nonod\.shared_caches\[0\]"):
        resolved({"nonod": {"shared_caches": ["$NOPE/x"]}}, ctx)


def test_a_path_through_a_link_in_a_writable_grant_is_refused(
        home: Path, project: Path, ctx: ResolveContext, tmp_path: Path) -> None:
    """The session could replace the link; the next resolution would follow its choice."""
    from nonod.errors import GrantLinkWritable

    real = tmp_path / "real-data"
    real.mkdir()
    (project / "data").symlink_to(real)
    (home / "data-link").symlink_to(real)
    (project / "keys").symlink_to(real)
    writable = {"workdir": {"access": "readwrite"}}
    for doc, link in (({"read": ["$WORKDIR/data"]}, "data"),
                      ({"read_file": ["$WORKDIR/data/../x"]}, "data"),  # missing: still
                      ({"deny": ["$WORKDIR/keys"]}, "keys")):
        with pytest.raises(GrantLinkWritable, match=str(project / link)):
            resolved({**writable, "filesystem": doc}, ctx)
    with pytest.raises(GrantLinkWritable, match="--read"):
        resolved(writable, ctx, overrides=CliOverrides(read=("data",)))
    # A link the session cannot write is followed; a read-only working directory holds none.
    assert grant_for(resolved({**writable, "filesystem": {"read": ["~/data-link"]}}, ctx), real)
    assert grant_for(resolved({"filesystem": {"read": ["$WORKDIR/data"]}}, ctx), real)
    # `profile validate` has no working directory of its own: its placeholder is not checked.
    assert resolved({**writable, "filesystem": {"read": ["$WORKDIR/data"]}}, ctx,
                    placeholder_workdir=True)


def test_a_large_profile_resolves_in_linear_time(ctx: ResolveContext,
                                                  request: pytest.FixtureRequest) -> None:
    """A profile is at most 1 MiB, but resolution compared every grant with every denial,
    every bypass with every denial and every note with every note: one user's profile of
    14,000 grants and 14,000 denials (or 30,000 denials and bypasses, or 60,000 missing
    paths) held a daemon worker thread, and the interpreter's lock, for 20-46 s (here).
    Each is an index now: 0.6 to 1.1 s of this thread's CPU here at load 14 (with 5633bf8
    reverted: 37 s for the first); the bound leaves room for a machine several times slower."""
    import shutil
    import tempfile
    import time

    # Short names (1 MiB holds them), in memory: 14,000 files made on this disk took 35 s of
    # the test's 64 at load 14, 2.5 s in a tmpfs.
    files = Path(tempfile.mkdtemp(prefix="r", dir="/dev/shm"))
    names = [str(files / f"f{i}") for i in range(14_000)]
    for name in names:
        Path(name).touch()
    request.addfinalizer(lambda: shutil.rmtree(files))
    for filesystem in ({"read_file": names, "deny": [f"/y{i}" for i in range(14_000)]},
                       {"deny": [f"/y{i}" for i in range(30_000)],
                        "bypass_protection": [f"/z{i}" for i in range(30_000)]},
                       {"read": [f"/x{i}" for i in range(60_000)]}):
        started = time.thread_time()  # this thread's CPU: the host's other load aside
        policy = resolved({"filesystem": filesystem}, ctx)
        assert policy.notes
        assert time.thread_time() - started < 8
        if "read_file" in filesystem:  # each a grant of its own (a tmpfs's files as a disk's)
            assert sum(g.path.startswith(f"{files}/") for g in policy.grants) == 14_000


def test_a_large_profile_extending_another_loads_in_linear_time(tmp_path: Path) -> None:
    """Merging a profile onto its base kept each array's items unique by scanning the list
    for each item: 40,000 paths in a profile that extends `default` took 6.7 s here."""
    import time

    path = tmp_path / "big.json"
    path.write_text(json.dumps({"meta": {"name": "big"}, "extends": "default",
                                "filesystem": {"read": [f"/b{i}" for i in range(60_000)]}}))
    started = time.thread_time()  # this thread's CPU: the host's other load aside
    profile = load_profile(str(path), user_dir=None)
    assert time.thread_time() - started < 8
    assert len(profile.filesystem.read) >= 60_000
