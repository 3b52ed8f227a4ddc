"""Credential files and directories the caller's environment moved out of the home.

The always-on deny groups name the places each tool keeps its credentials when its
variable is not set (``~/.aws``, ``~/.gnupg``, ``~/.kube/config``...). A user who set
``AWS_SHARED_CREDENTIALS_FILE``, ``GNUPGHOME``, ``KUBECONFIG``... keeps them elsewhere, and
a grant of that place would show them to the session: they are denied too, as the groups'
entries are. The caller's environment is where the host's tools find them (the daemon never
reads its own for this).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Final

# Variable -> the credentials below its value ("" for the value itself), and whether the
# value is a list (``:``-separated, as KUBECONFIG).
MOVED: Final = {
    "AWS_SHARED_CREDENTIALS_FILE": ("",),
    "AWS_CONFIG_FILE": ("",),  # credential_process, SSO settings
    "GOOGLE_APPLICATION_CREDENTIALS": ("",),  # a service account's private key
    "CLOUDSDK_CONFIG": ("",),
    "AZURE_CONFIG_DIR": ("",),
    "KUBECONFIG": ("",),  # a list: every entry
    "DOCKER_CONFIG": ("",),  # config.json's auths
    "GNUPGHOME": ("",),
    "PASSWORD_STORE_DIR": ("",),
    "GH_CONFIG_DIR": ("",),  # hosts.yml's tokens
    "GLAB_CONFIG_DIR": ("",),
    "NPM_CONFIG_USERCONFIG": ("",),  # registry tokens
    "npm_config_userconfig": ("",),
    "PGPASSFILE": ("",),
    "RCLONE_CONFIG": ("",),
    "BOTO_CONFIG": ("",),
    "DATABRICKS_CONFIG_FILE": ("",),
    "OCI_CLI_CONFIG_FILE": ("",),
    "CARGO_HOME": ("credentials.toml", "credentials"),
}
LISTS: Final = frozenset({"KUBECONFIG"})
# The entries of a list looked at: each is a path the plan asks about at every launch.
MAX_LISTED: Final = 16


def moved_secrets(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(variable, path) for each place the variables of :data:`MOVED` in ``env`` name,
    normalized (absolute values only, never a top-level directory such as ``/etc`` or
    ``/home``: masked, it would hide the system from the session; the first
    :data:`MAX_LISTED` entries of a list)."""
    out: set[tuple[str, str]] = set()
    for key, below in MOVED.items():
        value = env.get(key, "")
        entries = value.split(":", MAX_LISTED)[:MAX_LISTED] if key in LISTS else [value]
        for entry in entries:
            if not entry.startswith("/"):
                continue
            paths = (posixpath.normpath(posixpath.join(entry, rel)) for rel in below)
            out.update((key, path) for path in paths if path.count("/") > 1)
    return tuple(sorted(out))
