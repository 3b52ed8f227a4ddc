"""review27: real runtimes under the creation guard's filter, which answers ``clone3`` with
``ENOSYS`` (its flags are behind a pointer, so ``CLONE_PARENT`` there could not be seen) and
sends ``clone`` with ``CLONE_PARENT`` to the init (guardnest). glibc 2.34 and later ask
``clone3`` first for every thread (``pthread_create``) and every ``posix_spawn``, and fall
back to ``clone`` on ``ENOSYS``: a Rust program's threads and ``std::process::Command``, and
Node's thread pool, workers and ``child_process``, each create a name at the top of the
guarded working directory (emulated by the init) and run to the end. Each under the three
inits, as root and uid 65534."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import SandboxUser
from ..sandbox.test_createguard import layout_policy
from .test_guard_nested_domain import init as init  # the fixtures
from .test_guard_nested_domain import layout as layout

pytestmark = pytest.mark.userns

RUST = r"""
use std::fs;
use std::process::Command;
use std::thread;

fn main() {
    // pthread_create: clone3 first (ENOSYS here), then clone
    let made: Vec<bool> = (0..4)
        .map(|i| thread::spawn(move || fs::write(format!("rust-thread-{i}.txt"), "t").is_ok()))
        .map(|h| h.join().unwrap())
        .collect();
    println!("threads {:?}", made);
    // posix_spawn: clone3 with CLONE_VM | CLONE_VFORK first, then clone
    let status = Command::new("/bin/sh").arg("-c").arg("echo s > rust-spawned.txt").status();
    println!("spawn {:?}", status.map(|s| s.code()));
}
"""

NODE = r"""
const fs = require('fs');
const cp = require('child_process');
const { Worker } = require('worker_threads');
fs.writeFileSync('node.txt', 'n');
fs.writeFile('node-pool.txt', 'p', (err) => console.log('pool', err ? err.code : 'OK'));
console.log('spawn', cp.spawnSync('/bin/sh', ['-c', 'echo s > node-spawned.txt']).status);
new Worker("require('fs').writeFileSync('node-worker.txt', 'w')", { eval: true })
  .on('exit', (code) => console.log('worker', code));
"""


@pytest.fixture(scope="module")
def rust_program() -> Iterator[Path]:
    rustc = shutil.which("rustc")
    if rustc is None:
        pytest.skip("no rustc")
    where = Path(tempfile.mkdtemp(prefix="nono-test-rust-", dir="/tmp"))
    try:
        (where / "main.rs").write_text(RUST)
        subprocess.run([rustc, "-O", "-o", str(where / "guardrt"), str(where / "main.rs")],
                       check=True, capture_output=True, timeout=300)
        yield where / "guardrt"
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _run(sandbox_user: SandboxUser, home: Path, work: Path, argv: list[str]) -> list[str]:
    r = sandbox_user.run(layout_policy(home, work), argv, cwd=str(work),
                         env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    return r.stdout.splitlines()


def test_a_rust_programs_threads_and_spawns_run_under_the_guard(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str,
        rust_program: Path) -> None:
    home, work = layout
    program = home / "guardrt"
    shutil.copy(rust_program, program)
    sandbox_user.chown(program)
    out = _run(sandbox_user, home, work, [str(program)])
    assert out == ["threads [true, true, true, true]", "spawn Ok(Some(0))"]
    made = {p.name: p.read_text() for p in work.iterdir() if p.name.startswith("rust-")}
    assert made == {**{f"rust-thread-{i}.txt": "t" for i in range(4)},
                    "rust-spawned.txt": "s\n"}


@pytest.mark.skipif(shutil.which("node") is None, reason="no node")
def test_node_threads_workers_and_children_run_under_the_guard(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    home, work = layout
    node = shutil.which("node")
    assert node is not None
    out = _run(sandbox_user, home, work, [node, "-e", NODE])
    assert sorted(out) == ["pool OK", "spawn 0", "worker 0"]
    made = {p.name: p.read_text() for p in work.iterdir() if p.name.startswith("node")}
    assert made == {"node.txt": "n", "node-pool.txt": "p", "node-spawned.txt": "s\n",
                    "node-worker.txt": "w"}
