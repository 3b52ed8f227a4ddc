"""What the tool-sandbox tests set up alike: a private CA for a fake upstream, a working
directory beside a directory holding the tool's (fake) executable, and an agent's call made
by hand on its tool socket."""

from __future__ import annotations

from pathlib import Path

import trustme

# Python source for an agent script: ``call(tool, argv, cwd, env)`` makes the call the shim
# makes (stdin and stderr the agent's, stdout a pipe) and returns the daemon's answer (None
# if it sent none) and what the tool printed.
HAND_CALL = r'''
import array, json, os, socket, struct
def call(tool, argv, cwd, env):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect("/.nono-tool.sock")
    out_r, out_w = os.pipe()
    body = json.dumps({"tool": tool, "argv": argv, "cwd": cwd, "env": env}).encode()
    conn.sendmsg([struct.pack(">I", len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [0, out_w, 2]))])
    conn.sendall(body)
    os.close(out_w)
    answer = conn.makefile().readline()
    conn.close()
    printed = os.read(out_r, 1 << 16)
    os.close(out_r)
    return json.loads(answer) if answer else None, printed
'''


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
