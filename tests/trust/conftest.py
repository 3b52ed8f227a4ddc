"""Shared fixtures for the trust tests: keys, signed policies, an in-memory keychain."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from keyring.backend import KeyringBackend

from nonod.trust import (
    SigningKey,
    TrustPolicy,
    generate_key,
    init_policy,
    parse_policy,
)

GEMINI = b"# Triage rules\n\nLabel security reports `security` and never discuss them publicly.\n"


class MemoryKeyring(KeyringBackend):
    """A real keyring backend class (keyring's own base) that keeps secrets in a dict."""

    priority = 1

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.items[(service, username)]


@pytest.fixture
def key() -> SigningKey:
    return generate_key("default")


@pytest.fixture
def other_key() -> SigningKey:
    """Someone else's key, with the same name as ours."""
    return generate_key("default")


@pytest.fixture
def make_policy(key: SigningKey) -> Callable[..., TrustPolicy]:
    def make(**kwargs: object) -> TrustPolicy:
        kwargs.setdefault("includes", ["GEMINI.md"])
        kwargs.setdefault("key", key)
        return parse_policy(init_policy(**kwargs))  # type: ignore[arg-type]

    return make


@pytest.fixture
def policy(make_policy: Callable[..., TrustPolicy]) -> TrustPolicy:
    return make_policy()
