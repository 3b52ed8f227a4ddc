"""Red team, coding agents' configuration as persistence: a session with its working
directory writable wrote ``.claude/settings.json`` (Claude Code's project hooks: shell
commands it runs on the host at start, before and after tools), ``.mcp.json`` (servers it
starts), Gemini CLI's and Cursor's MCP servers, aider's lint and test commands: the next time
the user starts that agent in the project, outside a sandbox, the host runs them. With
``$HOME`` writable, the agents' user-level settings do the same for every project, and
editors' extension directories hold code they load at every start. They are
persistence files now, like ``.vscode`` and the shell's rc files."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT
from tests.redteam.test_persistence_home import _plant_in_home

PROJECT = (".claude/settings.json", ".claude/settings.local.json", ".mcp.json",
           ".gemini/settings.json", ".cursor/mcp.json", ".aider.conf.yml",
           ".continue/config.yaml", "opencode.json", ".opencode/opencode.json",
           ".devcontainer.json", ".zed/settings.json", ".helix/languages.toml")
HOME = (".claude/settings.json", ".gemini/settings.json", ".codex/config.toml",
        ".cursor/mcp.json", ".aider.conf.yml", ".config/opencode/opencode.json",
        ".continue/config.yaml", ".vscode/extensions/evil/package.json",
        ".cursor/extensions/evil/package.json")


def test_a_session_cannot_plant_an_agents_project_hooks(run: CLI, short_tmp: Path) -> None:
    (short_tmp / ".claude").mkdir()  # an existing one is read-only, a missing one refused
    (short_tmp / ".claude" / "settings.json").write_text("{}\n")
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", *PROJECT, "src/ok.py")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.endswith("WRITTEN")] == ["src/ok.py WRITTEN"], lines
    assert (short_tmp / ".claude" / "settings.json").read_text() == "{}\n"
    assert [name for name in PROJECT if (short_tmp / name).exists()] == [
        ".claude/settings.json"]


def test_a_writable_home_keeps_the_agents_user_settings(run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    (home / ".claude").mkdir(parents=True)  # the agent's own directory stays writable
    (home / ".codex").mkdir()
    (home / ".vscode" / "extensions").mkdir(parents=True)  # existing: read-only
    assert _plant_in_home(run, short_tmp, HOME) == [
        ".claude", ".codex", ".vscode", ".vscode/extensions", "notes.txt"]
