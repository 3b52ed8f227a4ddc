"""Secret and PhantomToken never show their values, and compare in constant time."""

from __future__ import annotations

import copy
import logging
import pickle

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from nonod.credentials import PhantomToken, Secret

VALUE = "ghp_S3cr3tValueThatMustNeverShow0123"


@pytest.mark.parametrize("show", [
    repr, str, lambda s: f"{s}", lambda s: f"{s!r}", lambda s: f"{s:>80}",
    lambda s: "%s" % s,  # noqa: UP031 - the old formatting is what is tested
    lambda s: "{}".format(s),  # noqa: UP032 - str.format is what is tested
    lambda s: str([s]), lambda s: str({"k": s}),
])
def test_secret_never_shows_itself(show: object) -> None:
    text = show(Secret(VALUE))  # type: ignore[operator]
    assert VALUE not in text
    assert "redacted" in text


def test_secret_reveal_is_the_only_way_in() -> None:
    secret = Secret(VALUE)
    assert secret.reveal() == VALUE
    assert not hasattr(secret, "__dict__")
    with pytest.raises(AttributeError):
        secret.value  # type: ignore[attr-defined] # noqa: B018


def test_secret_cannot_be_pickled_encoded_or_hashed() -> None:
    secret = Secret(VALUE)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(secret, protocol=protocol)
    with pytest.raises(TypeError):
        msgspec.json.encode(secret)
    with pytest.raises(TypeError):
        hash(secret)
    assert copy.deepcopy(secret) is secret


def test_secret_equality_and_construction() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert Secret(VALUE) != VALUE
    with pytest.raises(ValueError):
        Secret("")
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        type("Sub", (Secret,), {})


def test_a_secret_in_a_log_line_or_exception_stays_hidden() -> None:
    secret = Secret(VALUE)
    with capture_logs() as logs:
        structlog.get_logger().info("loaded", secret=secret, where=[secret])
    assert VALUE not in repr(logs)
    error = ValueError(f"bad value {secret}")
    assert VALUE not in str(error)
    logging.getLogger("test").debug("value %s", secret)  # formats through str()


def test_phantom_tokens_are_256_bit_hex_and_distinct() -> None:
    tokens = {PhantomToken.new().reveal() for _ in range(200)}
    assert len(tokens) == 200
    for text in tokens:
        assert len(text) == 64 and int(text, 16) >= 0 and text == text.lower()


def test_phantom_token_matching() -> None:
    token = PhantomToken.new()
    text = token.reveal()
    assert token.matches(text) and token.matches(text.encode())
    assert not token.matches(text[:-1])
    assert not token.matches(text.upper())
    assert not token.matches(text + "0")
    assert not token.matches("é" * 64)
    assert not token.matches(PhantomToken.new().reveal())
    assert text not in repr(token) and text not in f"{token}"
    with pytest.raises(TypeError):
        pickle.dumps(token)
    with pytest.raises(ValueError):
        PhantomToken("not-hex")
