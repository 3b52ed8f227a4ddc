"""What the tool-sandbox tests set up alike: a private CA for a fake upstream, and a working
directory beside a directory holding the tool's (fake) executable."""

from __future__ import annotations

from pathlib import Path

import trustme


def private_ca(directory: Path) -> tuple[trustme.CA, Path]:
    """A new CA and its certificate in ``directory/ca.pem``, readable by the daemon."""
    ca = trustme.CA()
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    path.chmod(0o644)
    return ca, path


def tool_dirs(base: Path, name: str, script: str) -> tuple[Path, Path]:
    """``base/work`` (the agent's working directory) and ``base/bin/<name>``, an executable
    holding ``script``."""
    work = base / "work"
    bindir = base / "bin"
    for d in (work, bindir):
        d.mkdir(mode=0o755)
    tool = bindir / name
    tool.write_text(script)
    tool.chmod(0o755)
    return work, tool
