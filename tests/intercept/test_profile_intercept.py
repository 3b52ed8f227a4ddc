"""``network.tls_intercept`` in profiles: nono's shape, checked and resolved (a temporary HOME,
never the real one)."""

from __future__ import annotations

import pytest

from nonod.errors import ProfileError, UnsupportedFeature
from nonod.policy import TlsIntercept
from nonod.profiles import ResolveContext, parse_profile, resolve
from tests.profiles.test_resolve import ctx as ctx  # the fixtures
from tests.profiles.test_resolve import home as home
from tests.profiles.test_resolve import notes, profile_of
from tests.profiles.test_resolve import project as project

GITHUB = {"upstream": "https://api.github.com", "credential_key": "env://GITHUB_TOKEN"}


def network(**extra: object) -> dict[str, object]:
    return {"network": {"credentials": ["github"], "custom_credentials": {"github": GITHUB},
                        **extra}}


def test_tls_intercept_resolves_with_its_validities_in_seconds(ctx: ResolveContext) -> None:
    policy = resolve(parse_profile(profile_of(network(tls_intercept={
        "ca_validity": "2h", "leaf_validity": "900"})), "t.json"), ctx)
    assert policy.network.tls_intercept == TlsIntercept(ca_validity=7200, leaf_validity=900)
    assert not [n for n in notes(policy, "ignored") if "tls_intercept" in n]
    empty = resolve(parse_profile(profile_of(network(tls_intercept={})), "t.json"), ctx)
    assert empty.network.tls_intercept == TlsIntercept(ca_validity=24 * 3600,
                                                       leaf_validity=3600)
    absent = resolve(parse_profile(profile_of(network()), "t.json"), ctx)
    assert absent.network.tls_intercept is None


def test_the_macos_trusted_ca_lifecycle_is_refused() -> None:
    with pytest.raises(UnsupportedFeature, match="ca_lifecycle: trusted") as info:
        parse_profile(profile_of(network(tls_intercept={"ca_lifecycle": "trusted"})), "t.json")
    assert info.value.path == "$.network.tls_intercept.ca_lifecycle"
    parse_profile(profile_of(network(tls_intercept={"ca_lifecycle": "session"})), "t.json")


@pytest.mark.parametrize("value", ["0", "15 m", "1w", "-5s", "1h30m"])
def test_a_duration_outside_nonos_form_is_refused(value: str) -> None:
    with pytest.raises(ProfileError, match="is not a duration") as info:
        parse_profile(profile_of(network(tls_intercept={"leaf_validity": value})), "t.json")
    assert info.value.path == "$.network.tls_intercept.leaf_validity"


def test_endpoint_rules_on_allow_domain_need_tls_intercept(ctx: ResolveContext) -> None:
    entry = {"domain": "Raw.Example.com", "endpoints": [{"method": "GET", "path": "/ok/**"}]}
    with pytest.raises(UnsupportedFeature) as info:
        parse_profile(profile_of({"network": {"allow_domain": [entry]}}), "t.json")
    assert info.value.path == "$.network.allow_domain[0].endpoints"
    assert "tls_intercept" in (info.value.hint or "")
    doc = {"network": {"allow_domain": ["a.example", entry], "tls_intercept": {}}}
    policy = resolve(parse_profile(profile_of(doc), "t.json"), ctx)
    assert policy.network.allow_domain == ("a.example", "raw.example.com")
    assert policy.network.endpoint_domains == (("raw.example.com", (("GET", "/ok/**"),)),)


@pytest.mark.parametrize(("entry", "path", "match"), [
    ({"domain": "*.example.com", "endpoints": [{"method": "GET", "path": "/"}]},
     "$.network.allow_domain[0].domain", "wildcard"),
    ({"domain": "x.example", "endpoints": [{"method": "GET", "path": "no-slash"}]},
     "$.network.allow_domain[0].endpoints[0].path", "must start with"),
])
def test_endpoint_domains_that_cannot_be_enforced_are_refused(
        entry: dict[str, object], path: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match) as info:
        parse_profile(profile_of({"network": {"allow_domain": [entry], "tls_intercept": {}}}),
                      "t.json")
    assert info.value.path == path
