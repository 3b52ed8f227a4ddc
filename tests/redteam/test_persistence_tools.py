"""Red team, fifteenth pass: tools' own configuration in a writable ``$HOME`` that names a
program or code the tool runs at its next invocation anywhere on the host. Go's env file
(``go env -w GOFLAGS=-toolexec=./evil`` runs ``evil`` for every compile of every host
build), Gradle's init scripts, ``~/.mavenrc`` (sourced by ``mvn``), the prompt's custom
commands, other shells' rc files and the frameworks rc files source, Jupyter's Python
configuration, Terraform's provider overrides, Docker's CLI plugins, and the package indexes
the next ``pip``/``uv``/``conda`` install fetches from."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam.test_persistence_home import _plant_in_home

TOOLS = (
    ".config/go/env", ".gradle/init.gradle", ".gradle/init.d/evil.gradle",
    ".gradle/gradle.properties", ".mavenrc", ".bunfig.toml", ".config/starship.toml", ".kshrc",
    ".mkshrc", ".cshrc", ".tcshrc", ".config/nushell/config.nu", ".xonshrc",
    ".config/xonsh/rc.xsh", ".config/elvish/rc.elv", ".oh-my-zsh/custom/evil.zsh",
    ".oh-my-bash/custom/evil.sh", ".bash_it/custom/evil.bash", ".zprezto/init.zsh",
    ".jupyter/jupyter_server_config.py", ".jupyter/jupyter_config.py",
    ".julia/config/startup.jl", ".Renviron", ".terraformrc",
    ".docker/cli-plugins/docker-compose", ".config/pip/pip.conf", ".pip/pip.conf",
    ".config/uv/uv.toml", ".condarc",
)


def test_a_writable_home_keeps_the_tools_configuration_that_names_code(
        run: CLI, short_tmp: Path) -> None:
    """None of ``TOOLS`` is written; the existing ``~/.gradle`` and ``~/.jupyter`` stay (only
    the named files in them are kept from the session)."""
    home = Path(run.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gradle").mkdir()
    (home / ".jupyter").mkdir()
    left = _plant_in_home(run, short_tmp, TOOLS)
    assert left == [".gradle", ".jupyter", "notes.txt"], left
