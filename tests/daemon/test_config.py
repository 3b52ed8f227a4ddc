"""nonod.toml: strict parsing, errors that name the key, defaults, reload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nonod._config import Config, ConfigError, load_config, parse_config
from nonod._daemon import _State

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_missing_file_at_the_default_location_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    loaded = load_config(None, system=False)
    assert loaded.path is None
    assert loaded.config == Config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml", system=False)


def test_a_full_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "nonod.toml"
    path.write_text(
        '[daemon]\nsocket = "/run/x.sock"\nlog_level = "debug"\nmax_connections = 8\n'
        "handshake_timeout = 2\n\n[sessions]\nstop_grace = 3\nallow_root = true\n"
        '\n[sandbox]\nmode = "landlock-only"\n'
    )
    loaded = load_config(path, system=False)
    assert loaded.path == str(path)
    assert loaded.config.daemon.socket == "/run/x.sock"
    assert loaded.config.daemon.max_connections == 8
    assert loaded.config.sessions.stop_grace == 3.0
    assert loaded.config.sessions.allow_root is True
    assert loaded.config.sandbox.mode == "landlock-only"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[daemon]\nsockett = '/x'\n", "unknown key `daemon.sockett`"),
        ("[sessions]\ngrace = 1\n", "unknown key `sessions.grace`"),
        ("[network]\nblock = true\n", "unknown key `network.block`"),
        ("verbose = true\n", "unknown key `verbose`"),
        ("[daemon]\nmax_connections = 0\n", r"`daemon.max_connections`: Expected `int` >= 1"),
        ("[daemon]\nmax_connections = 'many'\n", r"`daemon.max_connections`: Expected `int`"),
        ("[daemon]\nlog_level = 'loud'\n", r"`daemon.log_level`: Invalid enum value 'loud'"),
        ("[sandbox]\nmode = 'none'\n", r"`sandbox.mode`: Invalid enum value 'none'"),
        ("[sessions]\nstop_grace = -1\n", r"`sessions.stop_grace`: Expected `float` >= 0"),
        ("[sessions]\nallow_root = 'yes'\n", r"`sessions.allow_root`: Expected `bool`"),
        ("[daemon]\nstate_dir = 'relative'\n", "state_dir must be an absolute path"),
        ("daemon = 3\n", r"`daemon`: Expected `object`"),
        ("[daemon\n", "not valid TOML"),
    ],
)
def test_errors_name_the_key(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_config(text, source="nonod.toml")
    assert info.value.code == "config.invalid"
    assert info.value.message.startswith("nonod.toml: ")


def test_the_documented_example_is_valid_and_documents_every_key() -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert blocks, "docs/configuration.md has no toml example"
    example = parse_config(blocks[0], source="docs/configuration.md")
    assert example == Config() or isinstance(example, Config)
    for section in ("daemon", "sessions", "metrics"):
        for key in getattr(Config(), section).__struct_fields__:
            assert f"`{key}`" in text, f"{section}.{key} is not documented"


def test_reload_applies_a_good_file_and_keeps_the_old_one_on_errors(tmp_path: Path) -> None:
    path = tmp_path / "nonod.toml"
    path.write_text("[sessions]\nstop_grace = 1\n")
    state = _State(load_config(path, system=False), lambda: load_config(path, system=False))
    path.write_text("[sessions]\nstop_grace = 7\n")
    state.reload()
    assert state.limits().stop_grace == 7.0
    path.write_text("[sessions]\nstop_grace = 'soon'\n")
    state.reload()
    assert state.limits().stop_grace == 7.0
