"""Every key nono's profile format has is a key nonod's parser knows: a typed field, or part
of a section nonod holds as raw JSON to refuse it (docs/profiles.md, "Differences from nono's
schema"). fixtures/nono-schema-keys.json lists nono's key paths (see its `source`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from msgspec import inspect as mi

from nonod.profiles import (
    Profile,
    ResolveContext,
    builtin_groups,
    builtin_profiles_dir,
    load_profile,
    resolve,
)
from nonod.profiles._groups import builtin_network

KEYS = json.loads((Path(__file__).parent / "fixtures" / "nono-schema-keys.json").read_text())

# Sections nonod keeps as raw JSON: refused when they ask for something, not checked in detail.
RAW_SECTIONS = {
    "$.session_hooks", "$.credential_capture", "$.command_policies",
    "$.network.custom_credentials[*].auth", "$.network.custom_credentials[*].aws_auth",
    "$.network.custom_credentials[*].proxy",
}


def _members(info: mi.Type) -> list[mi.Type]:
    return list(info.types) if isinstance(info, mi.UnionType) else [info]


def _step(info: mi.Type, segment: str) -> list[mi.Type]:
    """The types reached from ``info`` by one key (``name``) or one ``[*]``."""
    out: list[mi.Type] = []
    for member in _members(info):
        if segment == "[*]":
            if isinstance(member, (mi.VarTupleType, mi.ListType)):
                out.append(member.item_type)
            elif isinstance(member, mi.DictType):
                out.append(member.value_type)
        elif isinstance(member, mi.StructType):
            out += [f.type for f in member.fields if f.encode_name == segment]
    return out


def classify(path: str) -> str:
    """``typed``, ``raw`` (inside a section held as raw JSON) or ``missing``."""
    infos: list[mi.Type] = [mi.type_info(Profile)]
    walked = "$"
    for segment in re.findall(r"\.[^.\[]+|\[\*\]", path):
        if walked in RAW_SECTIONS:
            return "raw"
        infos = [t for info in infos for t in _step(info, segment.lstrip("."))]
        walked += segment
        if not infos:
            return "missing"
    if walked in RAW_SECTIONS:
        assert all(isinstance(i, mi.RawType) for i in infos), walked
    return "typed"


def test_every_key_of_nonos_schema_is_known() -> None:
    missing = [k for k in KEYS["schema_keys"] + KEYS["serde_keys"] if classify(k) == "missing"]
    assert missing == []


def test_raw_sections_are_nono_sections_and_documented() -> None:
    assert set(KEYS["schema_keys"]) >= RAW_SECTIONS
    docs = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text()
    section = docs[docs.index("## Differences from nono's schema"):]
    for key in ("session_hooks", "credential_capture", "command_policies", "auth", "aws_auth",
                "proxy"):
        assert f"`{key}`" in section


def test_keys_nonod_adds_are_few_and_documented() -> None:
    ours: list[str] = []

    def walk(info: mi.Type, path: str) -> None:
        for member in _members(info):
            if isinstance(member, (mi.VarTupleType, mi.ListType)):
                walk(member.item_type, path + "[*]")
            elif isinstance(member, mi.DictType):
                walk(member.value_type, path + "[*]")
            elif isinstance(member, mi.StructType):
                for field in member.fields:
                    key = f"{path}.{field.encode_name}"
                    ours.append(key)
                    if not key.startswith("$.nonod"):
                        walk(field.type, key)

    walk(mi.type_info(Profile), "$")
    nono = set(KEYS["schema_keys"]) | set(KEYS["serde_keys"])
    extra = sorted({k for k in ours if k not in nono and not k.startswith("$.nonod.")})
    # Legacy spellings nono reads through its migration, and nonod's own section; network
    # approvals in the place nono's accepted NEP-0001 puts them (`network.approval_*`, the
    # shape of `command_policies.approval_*`), plus `key`, the webhook's signing credential.
    approvals = [f"$.network.approval_backends{k}" for k in (
        "", "[*].backends", "[*].key", "[*].mode", "[*].timeout_secs", "[*].type", "[*].url")]
    approvals += ["$.network.approval_defaults", "$.network.approval_defaults.backend",
                  "$.network.approval_defaults.timeout_secs"]
    assert extra == [
        "$.brokered_commands", "$.network.allow_hosts", *approvals, "$.nonod", "$.policy",
        "$.policy.add_allow_read", "$.policy.add_allow_readwrite", "$.policy.add_allow_write",
        "$.policy.add_deny_access", "$.policy.add_deny_commands", "$.policy.exclude_groups",
        "$.policy.override_deny", "$.security.allowed_commands", "$.security.groups",
    ]


NAMES = json.loads((Path(__file__).parent / "fixtures" / "nono-names.json").read_text())


def test_every_nono_group_name_is_known() -> None:
    # A profile naming a group nonod does not know would not load; a group nonod refuses
    # must say why.
    groups = builtin_groups().groups
    assert [name for name in NAMES["groups"] if name not in groups] == []
    refused = {name: groups[name].unsupported for name in NAMES["groups"]
               if groups[name].unsupported is not None}
    assert sorted(refused) == ["dangerous_commands", "dangerous_commands_linux",
                               "dangerous_commands_macos", "linux_runtime_state",
                               "unlink_protection"]
    assert all(refused.values())


def test_every_nono_network_group_and_profile_is_known() -> None:
    network = builtin_network()
    assert set(NAMES["network_groups"]) <= set(network.groups)
    assert set(NAMES["network_profiles"]) <= set(network.profiles)


def test_nonos_builtin_profiles_are_builtin_here(tmp_path: Path) -> None:
    # Not shipped: they include a group nonod refuses (all of /run; deletion-only rules).
    not_shipped = {"linux-host-compat", "swival"}
    ctx = ResolveContext(home=f"{tmp_path}-home", workdir=str(tmp_path), uid=1000)
    for name in NAMES["builtin_profiles"]:
        if name in not_shipped:
            assert not (builtin_profiles_dir() / f"{name}.json").exists()
            continue
        user_dir = tmp_path / name
        user_dir.mkdir()
        (user_dir / "mine.json").write_text(json.dumps({"extends": name,
                                                         "meta": {"name": "mine"}}))
        assert resolve(load_profile("mine", user_dir=user_dir), ctx).name == "mine"
