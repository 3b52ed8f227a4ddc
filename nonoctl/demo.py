"""``make demo``: the gitbot profile from the seed blog post, enforced by the kernel.

Builds a throw-away home (with fake SSH and AWS keys) and project, resolves the built-in
``gitbot`` profile for them, launches a small program inside the sandbox, and prints, line by
line, what that program could and could not touch. Everything runs offline.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

INSIDE = r'''
import errno, os, socket, sys

home, project = sys.argv[1], sys.argv[2]

def attempt(what, fn, expect_ok):
    try:
        fn()
        got, ok = "allowed", True
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        why = {"ENOENT": " (not in the session's view)", "EACCES": " (masked)",
               "EROFS": " (read-only)"}.get(name, "")
        got, ok = "refused: " + name + why, False
    mark = "ok  " if ok == expect_ok else "FAIL"
    print(f"  [{mark}] {what:<52} {got}", flush=True)
    return ok == expect_ok

def read(p): return lambda: open(p, "rb").read()
def write(p): return lambda: open(p, "a").close()
def connect(host, port):
    def fn():
        with socket.create_connection((host, port), timeout=2):
            pass
    return fn

def ptrace():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(0, 0, 0, 0) < 0:
        raise OSError(ctypes.get_errno(), "ptrace")

results = [
    attempt("read the project (GEMINI.md)", read(f"{project}/GEMINI.md"), True),
    attempt("write in the project", write(f"{project}/triage.log"), True),
    attempt("write /tmp (private to this session)", write("/tmp/cache"), True),
    attempt("read ~/.ssh/id_ed25519", read(f"{home}/.ssh/id_ed25519"), False),
    attempt("read ~/.aws/credentials", read(f"{home}/.aws/credentials"), False),
    attempt("read ~/.bash_history", read(f"{home}/.bash_history"), False),
    attempt("append to ~/.bashrc (persistence)", write(f"{home}/.bashrc"), False),
    attempt("plant .git/hooks/pre-commit in the project",
            write(f"{project}/.git/hooks/pre-commit"), False),
    attempt("read /etc/shadow", read("/etc/shadow"), False),
    attempt("write /usr/bin/evil", write("/usr/bin/evil"), False),
    attempt("connect to 1.1.1.1:443 directly", connect("1.1.1.1", 443), False),
    attempt("connect to the host's loopback :22", connect("127.0.0.1", 22), False),
    attempt("ptrace (PTRACE_TRACEME)", ptrace, False),
]
print(f"  pid inside the session: {os.getpid()}; visible processes: "
      f"{sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}")
print(f"  environment the program sees: {sorted(os.environ)}")
sys.exit(0 if all(results) else 1)
'''


def _make_world(base: Path) -> tuple[Path, Path]:
    home, project = base / "home", base / "home" / "gitbot"
    for rel, text in ((".ssh/id_ed25519", "FAKE PRIVATE KEY\n"),
                      (".aws/credentials", "[default]\naws_secret_access_key=FAKE\n"),
                      (".bash_history", "export GITHUB_TOKEN=ghp_FAKE\n"),
                      (".bashrc", "# rc\n"),
                      ("gitbot/GEMINI.md", "# Triage rules\nLabel bugs as bug.\n"),
                      ("gitbot/.git/config", "[core]\n")):
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (project / ".git" / "hooks").mkdir(parents=True, exist_ok=True)
    (project / "probe.py").write_text(INSIDE)
    return home, project


def main() -> int:
    import trio

    from nonod.errors import NonoError
    from nonod.profiles import ResolveContext, load_profile, resolve
    from nonod.sandbox import LaunchRequest, launch_and_wait

    # Not under /tmp: the gitbot profile's /tmp grant is a private tmpfs in the session, which
    # would hide the demo's fake home behind an empty one.
    base = Path(tempfile.mkdtemp(prefix=".nono-demo-", dir=os.getcwd()))
    try:
        home, project = _make_world(base)
        profile = load_profile("gitbot", user_dir=base / "no-user-profiles")
        ctx = ResolveContext.for_user(home=str(home), workdir=str(project), uid=os.getuid())
        policy = resolve(profile, ctx)
        print("nono demo: the seed's gitbot profile, enforced by the kernel\n")
        print(f"profile gitbot -> {len(policy.grants)} grants, {len(policy.denials)} denied "
              f"paths, network allow-list {list(policy.network.allow_domain)}")
        for note in policy.notes:
            if note.kind in ("macos_only", "deprecated_key"):
                print(f"  note: {note.message}")
        python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
        request = LaunchRequest(
            argv=(python, "-S", "probe.py", str(home), str(project)),
            cwd=str(project),
            env=(("HOME", str(home)), ("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8"),
                 ("GITHUB_TOKEN", "ghp_REAL_TOKEN_THAT_MUST_NOT_LEAK")),
        )
        print("\ninside the sandbox:")
        status, report = trio.run(launch_and_wait, policy, request)
        print(f"\nenforcement: {report.summary()}")
        for layer in report.layers:
            extra = layer.detail or layer.reason
            print(f"  {layer.name:<16} {layer.state:<12} {extra}")
        print(f"\nprogram exited with {status.shell_code}"
              + (": every attempt ended as expected" if status.shell_code == 0 else ""))
        return status.shell_code
    except NonoError as exc:
        print(f"nono demo: {exc.diagnostics()}", file=sys.stderr)
        return 125
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
