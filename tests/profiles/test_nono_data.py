"""nonod's built-in data against nono's own (fixtures/nono-data/README.md): the paths each
group of nono's denies are denied here, the paths it grants are granted (or are a departure
listed below with its reason), the hosts, network profiles, credential routes and built-in
profiles are nono's. A newer nono's files put in the fixture directory make this test name
every difference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nonod.credentials import builtin_routes
from nonod.profiles import builtin_groups, builtin_profiles_dir
from nonod.profiles._groups import GroupEntry, builtin_network

DATA = Path(__file__).resolve().parent / "fixtures" / "nono-data"
POLICY: dict[str, Any] = json.loads((DATA / "policy.json").read_text())
NETWORK: dict[str, Any] = json.loads((DATA / "network-policy.json").read_text())

#: nono's group names spelt otherwise here.
OUR_NAME = {"system_read_linux_core": "system_read_linux"}

#: The keys a group of nono's may have; a new one is a feature to look at.
GROUP_KEYS = {"description", "required", "platform", "allow", "deny", "symlink_pairs"}
ALLOW_KEYS = {"read", "write", "readwrite"}
DENY_KEYS = {"access", "unlink", "unlink_override_for_user_writable", "commands"}

_FD_LINK = ("a link into /proc/self: resolved by the daemon it would name the daemon's own "
            "descriptors; the session's own /dev provides it (_mounts.PROVIDED_DEV)")
#: (group, path, access) nono grants and nonod does not, and why.
GRANTS_LEFT_OUT: dict[tuple[str, str, str], str] = {
    **{("system_read_linux_core", p, "read"): _FD_LINK
       for p in ("/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd")},
    **{("system_write_linux", p, "write"): _FD_LINK
       for p in ("/dev/stdout", "/dev/stderr", "/dev/fd", "/proc/self/fd")},
    ("system_read_linux_core", "/dev/console", "read"):
        "the host's console is not a session's (docs/profiles.md, system_read_linux)",
}


def _home(path: str) -> str:
    return "~" + path[len("$HOME"):] if path.startswith("$HOME/") else path


def _nono_groups() -> list[tuple[str, dict[str, Any]]]:
    return sorted(POLICY["groups"].items())


def _ours(nono_name: str) -> Any:
    return builtin_groups().groups[OUR_NAME.get(nono_name, nono_name)]


def test_nonos_group_shape_is_the_one_this_test_knows() -> None:
    for name, group in _nono_groups():
        assert set(group) <= GROUP_KEYS, name
        assert set(group.get("allow", {})) <= ALLOW_KEYS, name
        assert set(group.get("deny", {})) <= DENY_KEYS, name


@pytest.mark.parametrize(("name", "group"), _nono_groups(), ids=[n for n, _ in _nono_groups()])
def test_every_path_nono_denies_is_denied_by_the_group_of_that_name(
    name: str, group: dict[str, Any]
) -> None:
    ours = _ours(name)
    denied = {_home(e.path) for e in ours.entries if e.access == "deny"}
    assert [p for p in group.get("deny", {}).get("access", []) if _home(p) not in denied] == []
    if group.get("required"):
        assert ours.required, f"{name} can be excluded here, not in nono"
    if group.get("platform"):
        assert ours.platform in (None, group["platform"]), name
    elif ours.unsupported is None:
        assert ours.platform is None, f"{name} applies on every platform in nono"


def _granted(entries: tuple[GroupEntry, ...], path: str) -> set[str]:
    """The rights the entries give ``path`` (itself or under a granted directory)."""
    rights: set[str] = set()
    for entry in entries:
        at = _home(entry.path)
        if entry.access != "deny" and (path == at or path.startswith(at.rstrip("/") + "/")):
            rights |= {"read", "write"} if entry.access == "readwrite" else {entry.access}
    return rights


@pytest.mark.parametrize(("name", "group"), _nono_groups(), ids=[n for n, _ in _nono_groups()])
def test_every_path_nono_grants_is_granted_by_the_group_of_that_name(
    name: str, group: dict[str, Any]
) -> None:
    ours = _ours(name)
    if ours.unsupported is not None:
        # Refused by name, with this reason (test_nono_schema checks which ones).
        assert ours.unsupported
        return
    missing = []
    for access, paths in group.get("allow", {}).items():
        wanted = {"read", "write"} if access == "readwrite" else {access}
        for path in paths:
            if (name, path, access) in GRANTS_LEFT_OUT:
                assert not wanted <= _granted(ours.entries, _home(path)), (path, "is granted")
            elif not wanted <= _granted(ours.entries, _home(path)):
                missing.append((access, path))
    assert missing == []


def test_every_host_of_nonos_groups_is_in_the_group_of_that_name() -> None:
    ours = builtin_network()
    for name, group in NETWORK["groups"].items():
        # nono's `suffixes` (".googleapis.com") are this catalog's `*.` wildcards.
        hosts = [*group.get("hosts", []), *("*" + s for s in group.get("suffixes", []))]
        assert set(group) <= {"description", "hosts", "suffixes"}, name
        assert hosts, name
        assert [h for h in hosts if h not in ours.groups[name].hosts] == [], name


def test_network_profiles_are_nonos_but_for_gitlab() -> None:
    # nonod leaves nono 0.66's new gitlab group out of the profiles, so that a profile's reach
    # does not grow with an update (docs/profiles.md, "Network groups").
    ours = builtin_network()
    for name, profile in NETWORK["profiles"].items():
        assert list(ours.profiles[name].groups) == [
            g for g in profile["groups"] if g != "gitlab"], name


def test_builtin_credential_routes_are_nonos() -> None:
    ours = builtin_routes()
    assert set(ours) == set(NETWORK["credentials"])
    for name, spec in NETWORK["credentials"].items():
        route = ours[name]
        assert (route.upstream, route.inject_header, route.credential_format) == (
            spec["upstream"], spec.get("inject_header", "Authorization"),
            spec.get("credential_format", "Bearer {}")), name
        assert route.credential_key == spec.get("credential_key", name), name
        assert route.env_var == spec.get("env_var"), name


#: What nonod's copies of nono's built-in profiles leave out, and why.
PROFILE_DEPARTURES: dict[str, dict[str, str]] = {
    "java-dev": {"unsafe_macos_seatbelt_rules": "raw Seatbelt rules are refused on macOS"},
}
NOT_SHIPPED = {"linux-host-compat", "swival"}  # test_nono_schema: they need refused groups


def _comparable(doc: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in drop | {"meta"} and v != {}}


@pytest.mark.parametrize("name", sorted(set(POLICY["profiles"]) - NOT_SHIPPED - {"default"}))
def test_builtin_profiles_are_nonos(name: str) -> None:
    ours = json.loads((builtin_profiles_dir() / f"{name}.json").read_text())
    drop = set(PROFILE_DEPARTURES.get(name, {}))
    assert drop <= set(POLICY["profiles"][name])
    assert _comparable(ours, drop) == _comparable(POLICY["profiles"][name], drop)


def test_nonos_default_groups_are_base_groups_here() -> None:
    # nono's `default` lists its groups; nonod's are the base groups every profile starts from.
    left_out = {
        **dict.fromkeys(("dangerous_commands", "dangerous_commands_macos",
                         "dangerous_commands_linux"),
                        "command-name rules cannot be enforced (refused when included)"),
        "homebrew_linux": "a grant, not a protection: include it where Linuxbrew is used",
        "homebrew_macos": "a grant, not a protection: include it where Homebrew is used",
        "system_read_macos": "the Seatbelt profile's base files (docs/macos.md)",
        "system_write_macos": "the Seatbelt profile's base files (docs/macos.md)",
    }
    base = set(builtin_groups().base_groups)
    nono = POLICY["profiles"]["default"]["groups"]["include"]
    assert [g for g in nono if OUR_NAME.get(g, g) not in base and g not in left_out] == []


def test_a_profile_granting_the_home_keeps_every_home_path_nono_denies_on_linux(
    tmp_path: Path,
) -> None:
    from nonod.profiles import ResolveContext, parse_profile, resolve

    home = tmp_path / "home"
    (home / ".config" / "vivaldi" / "Default").mkdir(parents=True)
    ctx = ResolveContext(home=str(home), workdir=str(tmp_path), uid=1000)
    profile = parse_profile(b'{"filesystem": {"read": ["$HOME"]}}', "p.json")
    denied = {d.path for d in resolve(profile, ctx).denials}
    wanted = [p.replace("~", str(home), 1) for _, g in _nono_groups()
              if g.get("platform") in (None, "linux")
              for p in g.get("deny", {}).get("access", []) if p.startswith("~/")]
    assert f"{home}/.config/vivaldi" in wanted
    assert [p for p in wanted if p not in denied] == []
