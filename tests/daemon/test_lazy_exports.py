"""Packages whose names load on first use (``nonod._lazy``): each name reaches the object of
the module its type-checking import names, and importing the package loads none of them."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAZY = ("nonod.sandbox", "nonod.proxy", "nonod.approvals", "nonod.credentials", "nonod.trust",
        "nonod.cgroups")


def _declared(package: str) -> dict[str, str]:
    """Name -> submodule, from the package's ``if TYPE_CHECKING:`` imports."""
    path = REPO.joinpath(*package.split("."), "__init__.py")
    tree = ast.parse(path.read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING")
    return {alias.name: f"{package}.{node.module}" for node in block.body
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
            for alias in node.names}


@pytest.mark.parametrize("package", LAZY)
def test_each_name_is_its_modules_object(package: str) -> None:
    module = importlib.import_module(package)
    declared = _declared(package)
    assert declared
    assert set(declared) <= set(dir(module))
    for name, home in declared.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name), name
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")  # noqa: B009


@pytest.mark.parametrize("package", LAZY)
def test_importing_the_package_loads_none_of_its_modules(package: str) -> None:
    homes = sorted(set(_declared(package).values()))
    probe = f"import sys, {package}; print(*[m for m in {homes!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO)}).stdout
    assert out.split() == []
