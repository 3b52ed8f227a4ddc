"""Red team, nineteenth pass: credentials the caller's environment keeps outside the places
the always-on deny groups name. ``AWS_SHARED_CREDENTIALS_FILE``, ``GNUPGHOME``,
``KUBECONFIG`` (a list), ``GOOGLE_APPLICATION_CREDENTIALS``... move them elsewhere (a secrets
directory, a mounted volume); a session granted that place read them. They are now denied
as the groups' entries are (``nonod/profiles/_secrets_moved.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI

#: variable -> (value below $HOME, a secret file below $HOME to read)
MOVED = {
    "AWS_SHARED_CREDENTIALS_FILE": ("vault/aws-credentials", "vault/aws-credentials"),
    "GNUPGHOME": ("vault/gnupg", "vault/gnupg/private-keys-v1.d/key.key"),
    "GOOGLE_APPLICATION_CREDENTIALS": ("vault/gcp.json", "vault/gcp.json"),
    "KUBECONFIG": ("vault/kube/one:{home}/vault/kube/two", "vault/kube/two"),
    "DOCKER_CONFIG": ("vault/docker", "vault/docker/config.json"),
}
READS = ("import sys\nfor p in sys.argv[1:]:\n"
         "    try:\n        print(open(p).read().strip() or 'EMPTY')\n"
         "    except OSError as e:\n        print(type(e).__name__)\n")


def test_credentials_the_callers_variables_moved_are_denied(run: CLI, short_tmp: Path) -> None:
    """Before: every secret read (``SECRET``); now none, and an ordinary file beside them
    still reads."""
    home = Path(run.env["HOME"])
    for _, secret in MOVED.values():
        (home / secret).parent.mkdir(parents=True, exist_ok=True)
        (home / secret).write_text("SECRET\n")
    (home / "vault/kube/one").write_text("SECRET\n")
    (home / "vault/notes.txt").write_text("plain\n")
    run.env.update({key: str(home / value.format(home=home))
                    for key, (value, _) in MOVED.items()})
    files = [str(home / secret) for _, secret in MOVED.values()]
    done = run("launch", "--allow-cwd", "-r", str(home / "vault"), "--block-net", "--",
               "/usr/bin/python3", "-S", "-c", READS, *files, str(home / "vault/notes.txt"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "plain", lines
    assert "SECRET" not in lines, lines
