"""The lean client's reading of one launch's replies (``welcome``, ``launched``, ``exited``),
A/B against another revision's ``nonoctl/_lean.py``, interleaved in one run.

known2 checks each reply it reads by hand whole, against the protocol's types
(``nonod._shapes``); this measures what that adds per attached launch, in process (the
imports it adds are timed apart: ``python -X importtime``).

    .venv/bin/python bench/lean_replies.py [--base main] [--rounds 3000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _base_lean(rev: str, where: Path) -> ModuleType:
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:nonoctl/_lean.py"],
                          capture_output=True, text=True, check=True).stdout
    path = where / "lean_base.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("nonoctl._lean_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="main")
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    from nonoctl import _lean
    from tests.cli.test_lean_shapes import _detail

    texts = [json.dumps({"type": "welcome", "protocol": 1, "daemon": "0.1.0", "pid": 1,
                         "uid": 0}),
             json.dumps({"type": "launched", "session": _detail()}),
             json.dumps({"type": "exited", "session": "abcd", "exit_code": 0})]
    ours, _theirs = socket.socketpair()
    with tempfile.TemporaryDirectory() as where:
        base = _base_lean(args.base, Path(where))

        def once(module: ModuleType) -> float:
            conv = module._Conversation(ours, module._ws.ClientCodec(max_message=1 << 20))
            began = time.perf_counter()
            for text in texts:
                conv._text(text)
            return time.perf_counter() - began

        times: dict[str, list[float]] = {"base": [], "this": []}
        for n in range(args.rounds):
            order = [("base", base), ("this", _lean)]
            for name, module in order if n % 2 else order[::-1]:
                times[name].append(once(module))
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1e6:.1f} us")
    print(f"this/base: {statistics.median(times['this']) / statistics.median(times['base']):.2f}")


if __name__ == "__main__":
    main()
