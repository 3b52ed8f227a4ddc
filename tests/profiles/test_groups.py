"""The built-in group data: well-formed, nono's names, and the always-on denials."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from nonod.errors import ProfileError
from nonod.profiles import builtin_groups
from nonod.profiles._groups import builtin_network, decode_groups, decode_network, valid_host

ALWAYS_ON = ("deny_credentials", "deny_keychains_linux", "deny_browser_data_linux",
             "deny_shell_history", "deny_shell_configs", "deny_system_secrets", "deny_nono_state")


def test_group_catalog_loads_and_keeps_nonos_names() -> None:
    catalog = builtin_groups()
    for name in (*ALWAYS_ON, "system_read_linux", "system_write_linux", "python_runtime",
                 "node_runtime", "rust_runtime", "go_runtime", "git_config", "user_tools",
                 "deny_keychains_macos", "homebrew"):
        assert name in catalog.groups, name


def test_always_on_deny_groups_are_required_base_groups() -> None:
    catalog = builtin_groups()
    for name in ALWAYS_ON:
        group = catalog.groups[name]
        assert group.required and name in catalog.base_groups, name
        assert group.entries and all(e.access == "deny" for e in group.entries), name
    for name in ("deny_system_secrets", "deny_nono_state"):
        assert not catalog.groups[name].bypassable


def test_system_secret_and_state_entries() -> None:
    catalog = builtin_groups()
    secrets = {e.path: e.file for e in catalog.groups["deny_system_secrets"].entries}
    for key in ("rsa", "ecdsa", "ed25519", "dsa"):
        assert secrets[f"/etc/ssh/ssh_host_{key}_key"] is True
    assert secrets["/etc/sudoers.d"] is False
    state = {e.path for e in catalog.groups["deny_nono_state"].entries}
    assert {"$XDG_CONFIG_HOME/nono", "$XDG_STATE_HOME/nono", "$XDG_RUNTIME_DIR", "/run/user",
            "/var/run/docker.sock", "/run/docker.sock", "/run/containerd", "/run/dbus",
            "/var/run/dbus", "/run/systemd/private", "/run/nono"} <= state


def test_no_group_grants_paths_that_resolve_through_the_daemons_own_fds() -> None:
    # /dev/stdin and friends are links into /proc/self: canonicalising them in the daemon
    # would name the daemon's own descriptors, not the session's.
    for group in builtin_groups().groups.values():
        for entry in group.entries:
            assert entry.path not in ("/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd")


def test_network_catalog() -> None:
    network = builtin_network()
    assert {"llm_apis", "github", "package_registries", "sigstore", "documentation"} <= set(
        network.groups)
    assert {"minimal", "developer", "enterprise"} <= set(network.profiles)
    assert "generativelanguage.googleapis.com" in network.hosts("minimal")
    assert network.hosts("developer").count("api.github.com") == 1


@pytest.mark.parametrize(("host", "ok"), [
    ("api.github.com", True), ("*.googleapis.com", True), ("localhost", True),
    ("*.com", False), ("https://x.com", False), ("x.com:443", False), ("a..b", False),
    ("-a.com", False), ("API.github.com", False), ("", False),
])
def test_valid_host(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


def _data(name: str) -> dict[str, object]:
    doc = json.loads((resources.files("nonod") / "data" / name).read_bytes())
    assert isinstance(doc, dict)
    return doc


def test_broken_group_data_is_refused() -> None:
    doc = _data("groups.json")
    base = doc["base_groups"]
    assert isinstance(base, list)
    doc["base_groups"] = [*base, "missing_group"]
    with pytest.raises(ProfileError, match="base group `missing_group` is not defined"):
        decode_groups(json.dumps(doc).encode(), "groups.json")
    doc = _data("groups.json")
    groups = doc["groups"]
    assert isinstance(groups, dict)
    groups["deny_credentials"]["entries"].append({"path": "/x", "access": "read"})
    with pytest.raises(ProfileError, match="may only deny"):
        decode_groups(json.dumps(doc).encode(), "groups.json")
    groups["deny_credentials"]["entries"][-1] = {"path": "$NOPE/x", "access": "deny"}
    with pytest.raises(ProfileError, match="unknown variable"):
        decode_groups(json.dumps(doc).encode(), "groups.json")


def test_broken_network_data_is_refused() -> None:
    doc = _data("network_groups.json")
    profiles = doc["profiles"]
    assert isinstance(profiles, dict)
    profiles["minimal"]["groups"].append("nope")
    with pytest.raises(ProfileError, match="unknown group `nope`"):
        decode_network(json.dumps(doc).encode(), "network_groups.json")
