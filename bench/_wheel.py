"""A regular (non-editable) install of this tree for the CLI's benchmark rows.

``pip wheel`` of a copy of the tree, installed with ``--no-deps`` into a fresh venv; the
dependencies (msgspec, wsproto, trio, ...) are reached through one ``.pth`` line naming the
running venv's site-packages, so no package index is needed. That line only adds a path: the
running venv's own ``.pth`` files (its editable finder) are not processed, so ``nonoctl`` and
``nonod`` come from the wheel, as they do for ``pip install``/pipx users.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_wheel(base: Path, tree: Path = REPO) -> Path:
    """A wheel of ``tree`` (this checkout, or an exported revision) in ``base/dist``."""
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(tree / name, src / name)
    for package in ("nonod", "nonoctl"):
        shutil.copytree(tree / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(base / "dist"), str(src)], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    (wheel,) = (base / "dist").glob("nono-*.whl")
    return wheel


@contextmanager
def installed_cli(tree: Path = REPO) -> Iterator[Path]:
    """The ``bin/`` of a temporary venv holding ``tree`` as a wheel; removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="nono-wheel-"))
    try:
        wheel = build_wheel(base, tree)
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       timeout=120)
        python = venv / "bin" / "python"
        ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
        site = subprocess.run([str(python), "-c", ask], check=True, capture_output=True,
                              text=True).stdout.strip()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-compile", "--target", site, str(wheel)], check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
        # entry points: pip --target does not write bin/ scripts, so write nonoctl's like pip does
        script = venv / "bin" / "nonoctl"
        script.write_text(f"#!{python}\nimport sys\nfrom nonoctl.__main__ import main\n"
                          "if __name__ == '__main__':\n"
                          "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
                          "    sys.exit(main())\n")
        script.chmod(0o755)
        Path(site, "_nono_bench_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
        subprocess.run([str(python), "-m", "compileall", "-q", site], check=True,
                       stdout=subprocess.DEVNULL)
        yield venv / "bin"
    finally:
        shutil.rmtree(base, ignore_errors=True)
