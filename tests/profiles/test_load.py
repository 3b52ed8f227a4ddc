"""load_profile / list_profiles: lookup order, extends chains and nono's merge rules."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

import nonod
from nonod.errors import ExtendsError, ProfileError, ProfileNotFound
from nonod.profiles import (
    ProfileInfo,
    builtin_profiles_dir,
    list_profiles,
    load_profile,
    parse_profile,
    user_profiles_dir,
)

EXAMPLE = Path("/work/shared/examples/gitbot-profile.json")
needs_example = pytest.mark.skipif(not EXAMPLE.is_file(), reason="shared example not present")


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config" / "nono" / "profiles"
    path.mkdir(parents=True)
    return path


def write(directory: Path, name: str, doc: object) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def test_builtin_profiles_are_package_data() -> None:
    """Shipped inside the package (so a wheel has them); profiles/ at the top of the
    repository is the same directory."""
    assert builtin_profiles_dir() == Path(nonod.__file__).parent / "data" / "profiles"
    assert (builtin_profiles_dir() / "gitbot.json").is_file()
    repo = Path(nonod.__file__).resolve().parent.parent
    assert (repo / "profiles").resolve() == builtin_profiles_dir().resolve()


def test_user_profiles_dir_follows_xdg() -> None:
    assert user_profiles_dir("/home/u") == Path("/home/u/.config/nono/profiles")
    assert user_profiles_dir("/home/u", "/xdg") == Path("/xdg/nono/profiles")
    assert user_profiles_dir("/home/u", "relative") == Path("/home/u/.config/nono/profiles")


@needs_example
def test_gitbot_by_name_equals_gitbot_by_path() -> None:
    by_name = load_profile("gitbot", user_dir=None)
    by_path = load_profile(str(EXAMPLE), user_dir=None)
    assert by_name == by_path
    assert by_name == parse_profile(EXAMPLE.read_bytes(), "gitbot.json")


def test_value_with_slash_or_json_suffix_is_a_path(user_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "local", {"meta": {"name": "from-file"}})
    write(user_dir, "local", {"meta": {"name": "from-user-dir"}})
    monkeypatch.chdir(tmp_path)
    assert load_profile("local.json", user_dir=user_dir).meta.name == "from-file"
    assert load_profile("./local.json", user_dir=user_dir).meta.name == "from-file"
    assert load_profile("local", user_dir=user_dir).meta.name == "from-user-dir"


def test_user_profile_shadows_builtin(user_dir: Path) -> None:
    write(user_dir, "gitbot", {"meta": {"name": "mine"}})
    assert load_profile("gitbot", user_dir=user_dir).meta.name == "mine"
    assert load_profile("gitbot", user_dir=None).meta.name == "gitbot"


def test_user_profile_extending_its_own_name_extends_the_builtin(user_dir: Path) -> None:
    write(user_dir, "gitbot", {"extends": "gitbot", "network": {"allow_domain": ["pypi.org"]},
                               "meta": {"name": "gitbot-local"}})
    profile = load_profile("gitbot", user_dir=user_dir)
    assert profile.extends is None
    assert profile.meta.name == "gitbot-local"
    assert profile.meta.version == "1.0.0"  # from the built-in
    assert profile.network.allow_domain == ("pypi.org",)
    assert profile.network.allow_hosts == (
        "api.github.com", "generativelanguage.googleapis.com", "smee.io")


def test_missing_profile_names_where_it_looked(user_dir: Path) -> None:
    with pytest.raises(ProfileNotFound) as info:
        load_profile("nosuch", user_dir=user_dir)
    assert info.value.hint is not None and str(user_dir) in info.value.hint


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileNotFound, match="no such profile file"):
        load_profile(str(tmp_path / "absent.json"), user_dir=None)
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(str(tmp_path) + "/", user_dir=None)


def test_bad_profile_name_is_refused() -> None:
    with pytest.raises(ProfileError, match="not a profile name"):
        load_profile("-x", user_dir=None)


def test_errors_in_a_base_name_the_base_file(user_dir: Path) -> None:
    write(user_dir, "child", {"extends": "base"})
    base = write(user_dir, "base", {"network": {"listen_port": [0]}})
    with pytest.raises(ProfileError) as info:
        load_profile("child", user_dir=user_dir)
    assert info.value.source == str(base)
    assert info.value.path == "$.network.listen_port[0]"


def test_extends_cycle_names_the_chain(user_dir: Path) -> None:
    write(user_dir, "a", {"extends": "b"})
    write(user_dir, "b", {"extends": ["default", "c"]})
    write(user_dir, "c", {"extends": "a"})
    with pytest.raises(ExtendsError, match=r"extends cycle: a -> b -> c -> a") as info:
        load_profile("a", user_dir=user_dir)
    assert info.value.path == "$.extends"


def test_self_extension_outside_the_user_dir_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "loop", {"extends": "loop"})
    write(tmp_path, "other", {})
    with pytest.raises(ExtendsError, match="cycle"):
        load_profile("loop", user_dir=None, builtin_dir=tmp_path)
    assert path.exists()


def test_extends_depth_limit(user_dir: Path) -> None:
    write(user_dir, "p0", {})
    for i in range(1, 12):
        write(user_dir, f"p{i}", {"extends": f"p{i - 1}"})
    assert load_profile("p10", user_dir=user_dir).meta.name == "p10"
    with pytest.raises(ExtendsError, match=r"deeper than 10: p11 -> p10 .* -> p0"):
        load_profile("p11", user_dir=user_dir)


def test_missing_extends_target(user_dir: Path) -> None:
    child = write(user_dir, "child", {"extends": "ghost"})
    with pytest.raises(ExtendsError, match="extends `ghost`, which is neither") as info:
        load_profile("child", user_dir=user_dir)
    assert info.value.source == str(child)


def test_arrays_append_base_first_without_duplicates(user_dir: Path) -> None:
    write(user_dir, "base", {"filesystem": {"read": ["/a", "/b"]},
                             "groups": {"include": ["node_runtime"]},
                             "network": {"listen_port": [80]}})
    write(user_dir, "child", {"extends": "base", "filesystem": {"read": ["/b", "/c"]},
                              "groups": {"include": ["node_runtime", "go_runtime"]},
                              "network": {"listen_port": [443, 80]}})
    profile = load_profile("child", user_dir=user_dir)
    assert profile.filesystem.read == ("/a", "/b", "/c")
    assert profile.groups.include == ("node_runtime", "go_runtime")
    assert profile.network.listen_port == (80, 443)


def test_maps_merge_with_child_winning(user_dir: Path) -> None:
    cred = {"upstream": "https://a.example.com", "credential_key": "a"}
    write(user_dir, "base", {
        "env_credentials": {"k1": "ONE", "k2": "TWO"},
        "environment": {"set_vars": {"A": "1", "B": "2"}, "allow_vars": ["PATH"]},
        "network": {"custom_credentials": {"a": cred, "b": cred}},
    })
    write(user_dir, "child", {
        "extends": "base",
        "env_credentials": {"k2": "TWO_CHILD"},
        "environment": {"set_vars": {"B": "child"}, "allow_vars": ["HOME"]},
        "network": {"custom_credentials": {"b": {**cred, "credential_key": "bee"}}},
    })
    profile = load_profile("child", user_dir=user_dir)
    assert profile.env_credentials == {"k1": "ONE", "k2": "TWO_CHILD"}
    assert profile.environment is not None
    assert profile.environment.set_vars == {"A": "1", "B": "child"}
    assert profile.environment.allow_vars == ("PATH", "HOME")
    creds = profile.network.custom_credentials
    assert (creds["a"].credential_key, creds["b"].credential_key) == ("a", "bee")


def test_scalars_override_and_absence_inherits(user_dir: Path) -> None:
    write(user_dir, "base", {"security": {"signal_mode": "allow_all", "ipc_mode": "full"},
                             "workdir": {"access": "readwrite"},
                             "network": {"block": True}})
    write(user_dir, "child", {"extends": "base", "security": {"signal_mode": "isolated"},
                              "workdir": {"access": "none"}})
    profile = load_profile("child", user_dir=user_dir)
    assert profile.security.signal_mode == "isolated"
    assert profile.security.ipc_mode == "full"
    assert profile.workdir.access == "readwrite"  # nono: "none" in a child inherits
    assert profile.network.block is True
    write(user_dir, "open", {"extends": "base", "network": {"block": False}})
    assert load_profile("open", user_dir=user_dir).network.block is False


@pytest.mark.parametrize("key", ["unix_sockets", "allow_root"])
def test_nonod_switches_are_inherited_unless_the_child_sets_them(user_dir: Path,
                                                                 key: str) -> None:
    # A boolean defaulting to false would read "absent" as "false" and reset the base's value.
    write(user_dir, "base", {"nonod": {key: True}})
    write(user_dir, "child", {"extends": "base", "nonod": {"max_processes": 64}})
    write(user_dir, "off", {"extends": "base", "nonod": {key: False}})
    assert getattr(load_profile("child", user_dir=user_dir).nonod, key) is True
    assert getattr(load_profile("off", user_dir=user_dir).nonod, key) is False


def test_network_profile_null_clears_and_empty_credentials_drop_routes(user_dir: Path) -> None:
    write(user_dir, "base", {"network": {"network_profile": "developer",
                                         "proxy_credentials": ["openai"]}})
    write(user_dir, "keep", {"extends": "base", "network": {"credentials": ["anthropic"]}})
    write(user_dir, "clear", {"extends": "base",
                              "network": {"network_profile": None, "credentials": []}})
    kept = load_profile("keep", user_dir=user_dir).network
    assert kept.network_profile == "developer"
    assert (kept.credentials, kept.proxy_credentials) == (("anthropic",), ("openai",))
    cleared = load_profile("clear", user_dir=user_dir).network
    assert cleared.network_profile is None
    assert (cleared.credentials, cleared.proxy_credentials) == ((), ())


def test_several_bases_merge_left_to_right_and_shared_bases_once(user_dir: Path) -> None:
    write(user_dir, "root", {"security": {"ipc_mode": "shared_memory_only"},
                             "filesystem": {"read": ["/root"]}})
    write(user_dir, "left", {"extends": "root", "security": {"ipc_mode": "full"},
                             "filesystem": {"read": ["/left"]}})
    write(user_dir, "right", {"extends": "root", "filesystem": {"read": ["/right"]}})
    write(user_dir, "top", {"extends": ["left", "right"]})
    profile = load_profile("top", user_dir=user_dir)
    assert profile.filesystem.read == ("/root", "/left", "/right")
    # root is merged once, before left: its value does not come back after left's.
    assert profile.security.ipc_mode == "full"


def test_open_urls_replaces_instead_of_merging(user_dir: Path) -> None:
    write(user_dir, "base", {"open_urls": {"allow_origins": ["https://a.com"],
                                           "allow_localhost": True}})
    write(user_dir, "child", {"extends": "base", "open_urls": {"allow_origins": []}})
    urls = load_profile("child", user_dir=user_dir).open_urls
    assert urls is not None and urls.allow_origins == () and urls.allow_localhost is None


def test_meta_name_defaults_to_the_lookup_name(user_dir: Path) -> None:
    write(user_dir, "anon", {"workdir": {"access": "read"}})
    assert load_profile("anon", user_dir=user_dir).meta.name == "anon"


def test_list_profiles(user_dir: Path) -> None:
    write(user_dir, "gitbot", {})
    write(user_dir, "mine", {})
    (user_dir / "notes.txt").write_text("x")
    (user_dir / "bad name.json").write_text("{}")
    infos = list_profiles(user_dir)
    by_name = {info.name: info for info in infos}
    assert [info.name for info in infos] == sorted(by_name)
    assert by_name["gitbot"] == ProfileInfo(name="gitbot", origin="user",
                                            path=str(user_dir / "gitbot.json"),
                                            shadows_builtin=True)
    assert by_name["mine"].origin == "user"
    assert by_name["default"].origin == "builtin"
    assert "bad name" not in by_name and "notes" not in by_name
    assert {i.name for i in list_profiles(None)} >= {"default", "gitbot"}
    assert list_profiles(user_dir / "absent") == list_profiles(None)


def test_every_builtin_profile_loads() -> None:
    for info in list_profiles(None):
        load_profile(info.name, user_dir=None)


def test_an_encoded_profile_decodes_to_the_same_profile(user_dir: Path) -> None:
    write(user_dir, "rich", {
        "extends": "gitbot",
        "network": {"network_profile": None, "block": False,
                    "allow_domain": ["a.com", {"domain": "b.com", "endpoints": []}]},
        "filesystem": {"read": [{"path": "/opt", "when": "linux"}]},
        "secrets": {"k": {"env_var": "K", "when": ["linux"]}},
        "credential_capture": {},
    })
    for name in ("gitbot", "default", "rich"):
        profile = load_profile(name, user_dir=user_dir)
        encoded = msgspec.json.encode(profile)
        assert parse_profile(encoded, "encoded.json") == profile
    assert msgspec.json.encode(load_profile("default", user_dir=None)).startswith(b'{"meta":')
