"""Shell completion scripts for bash, zsh and fish, generated from the argument parser."""

from __future__ import annotations

import argparse


def _commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each command (and alias) with its long and short options."""
    out: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                flags = sorted(set(_flags(sub)))
                choices = [
                    str(c) for a in sub._actions
                    if not a.option_strings and a.choices for c in a.choices
                ]
                if "--kind" in flags:  # logs, events: the audit event kinds
                    choices += _audit_kinds()
                out[name] = flags + choices
    return out


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    """``parser``'s options and those of its verbs (``trust sign --key``...)."""
    out: list[str] = []
    for action in parser._actions:
        out += [opt for opt in action.option_strings if opt.startswith("-")]
        if isinstance(action, argparse._SubParsersAction):
            for verb in action.choices.values():
                out += _flags(verb)
    return out


def _audit_kinds() -> list[str]:
    from nonod.audit import EVENT_KINDS

    return sorted({*EVENT_KINDS, "seal"})


def _globals(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(opt for a in parser._actions for opt in a.option_strings)


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    names = " ".join(commands)
    if shell == "bash":
        cases = "\n".join(
            f"        {name}) opts=\"{' '.join(words)}\" ;;" for name, words in commands.items()
        )
        return f"""# bash completion for nonoctl: eval "$(nonoctl completion bash)"
_nonoctl() {{
    local cur cmd i opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --) return 0 ;;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "{names} {' '.join(_globals(parser))}" -- "$cur"))
        return 0
    fi
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -f -- "$cur"))
}}
complete -F _nonoctl nonoctl
"""
    if shell == "zsh":
        cases = "\n".join(
            f"        {name}) _arguments '*:file:_files' {' '.join(repr(w) for w in words)} ;;"
            for name, words in commands.items()
        )
        return f"""#compdef nonoctl
# zsh completion for nonoctl: nonoctl completion zsh > "${{fpath[1]}}/_nonoctl"
_nonoctl() {{
    local -a commands
    commands=({names})
    if (( CURRENT == 2 )); then
        _describe 'command' commands
        return
    fi
    case "$words[2]" in
{cases}
    esac
}}
compdef _nonoctl nonoctl
"""
    lines = ["# fish completion for nonoctl: nonoctl completion fish | source",
             "complete -c nonoctl -f"]
    for name, words in commands.items():
        lines.append(f"complete -c nonoctl -n '__fish_use_subcommand' -a {name}")
        for word in words:
            if word.startswith("--"):
                lines.append(
                    f"complete -c nonoctl -n '__fish_seen_subcommand_from {name}' -l {word[2:]}"
                )
            elif word.startswith("-"):
                lines.append(
                    f"complete -c nonoctl -n '__fish_seen_subcommand_from {name}' -s {word[1:]}"
                )
            else:
                lines.append(
                    f"complete -c nonoctl -n '__fish_seen_subcommand_from {name}' -a {word}"
                )
    return "\n".join(lines) + "\n"
