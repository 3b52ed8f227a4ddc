"""The control socket's path, spelled without pathlib (``nonod.control._socketdir``): the same
strings ``pathlib`` made of it, so the path a client connects to, the daemon binds and the
messages name are the ones they were before ``nonoctl`` stopped importing pathlib."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from nonod.control._socket import client_socket_path, default_socket_path
from nonod.control._socketdir import parent_and_name, plain_path

#: Paths made of the characters pathlib treats specially, and a name.
paths = st.text(alphabet="/.a", max_size=12)


@given(paths)
def test_a_plain_path_is_spelled_as_pathlib_spells_it(text: str) -> None:
    pure = PurePosixPath(text)
    assert plain_path(text) == str(pure)
    assert plain_path(pure) == str(pure)
    assert parent_and_name(plain_path(text)) == (str(pure.parent), pure.name)


@given(paths.filter(bool), paths.map(lambda tail: "/" + tail))
def test_the_socket_paths_are_the_ones_pathlib_made(override: str, runtime: str) -> None:
    assert client_socket_path(environ={"NONO_SOCKET": override}) == str(PurePosixPath(override))
    assert client_socket_path(environ={"XDG_RUNTIME_DIR": runtime}) == str(
        PurePosixPath(runtime) / "nono" / "nonod.sock")
    assert default_socket_path(environ={}) == f"/tmp/nono-{os.geteuid()}/nonod.sock"
    assert default_socket_path(system=True) == "/run/nono/nonod.sock"
