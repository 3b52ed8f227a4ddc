"""Fuzzing parse_profile: whatever the bytes, only ProfileError comes out."""

from __future__ import annotations

import json

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonod.errors import ProfileError
from nonod.profiles import Profile, parse_profile
from nonod.profiles._schema import (
    CustomCredentialDef,
    EnvironmentConfig,
    FilesystemConfig,
    LegacyPolicy,
    NetworkConfig,
    SecurityConfig,
)

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12)
           | st.sampled_from(["~", "~/x", "$HOME", "${WORKDIR}/a", "/tmp", "linux", "!macos",
                              "api.github.com", "*.x.io", "python_runtime", "deny_credentials",
                              "readwrite", "isolated", "https://a.com", "$", "${", ""]))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _section(struct: type[msgspec.Struct]) -> st.SearchStrategy[dict[str, object]]:
    keys = [f.encode_name for f in msgspec.structs.fields(struct)]
    return st.fixed_dictionaries({}, optional={key: json_values for key in keys})


credential = st.fixed_dictionaries(
    {"upstream": st.sampled_from(["https://api.github.com", "http://127.0.0.1:8/x", "ftp://x"])},
    optional={f.encode_name: json_values for f in msgspec.structs.fields(CustomCredentialDef)
              if f.encode_name != "upstream"},
)
profile_like = st.fixed_dictionaries({}, optional={
    **{f.encode_name: json_values for f in msgspec.structs.fields(Profile)},
    "filesystem": _section(FilesystemConfig),
    "policy": _section(LegacyPolicy),
    "security": _section(SecurityConfig),
    "environment": _section(EnvironmentConfig),
    "network": _section(NetworkConfig)
    | st.fixed_dictionaries({"custom_credentials": st.dictionaries(
        st.text(max_size=6), credential, max_size=2)}),
})


def _only_profile_errors(data: bytes) -> None:
    try:
        result = parse_profile(data, "fuzz.json")
    except ProfileError as exc:
        assert exc.source == "fuzz.json"
        assert exc.message
    else:
        assert isinstance(result, Profile)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_values(value: object) -> None:
    _only_profile_errors(json.dumps(value).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile_like)
def test_profile_shaped_documents(doc: dict[str, object]) -> None:
    _only_profile_errors(json.dumps(doc).encode())


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    _only_profile_errors(data)


def test_deep_nesting_and_huge_input() -> None:
    _only_profile_errors(b'{"credential_capture": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    _only_profile_errors(b"[" * 100_000)
    _only_profile_errors(b'{"skipdirs": ["' + b"a" * (2 << 20) + b'"]}')
