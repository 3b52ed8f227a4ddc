"""Run ``nonod`` with its trio tasks counted (bench/daemon_tasks.py starts it).

    python bench/_daemon_tasks.py OUT.json [nonod's arguments]

A trio instrument counts, by task name, the tasks spawned and the steps they ran (each time
a task is resumed), and the event loop thread's CPU time in those steps. At exit (SIGTERM
ends the daemon normally) the counts go to OUT.json: ``{"spawned": {...}, "steps": {...},
"cpu_s": {...}}``.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
from collections import Counter
from typing import Any

import trio

OUT = sys.argv.pop(1)
spawned: Counter[str] = Counter()
steps: Counter[str] = Counter()
cpu: Counter[str] = Counter()


class _Counted(trio.abc.Instrument):
    def __init__(self) -> None:
        self._began = 0.0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        spawned[task.name] += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        steps[task.name] += 1
        self._began = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        cpu[task.name] += time.thread_time() - self._began


_run = trio.run


def _counted_run(*args: Any, **kwargs: Any) -> Any:
    kwargs["instruments"] = [*kwargs.get("instruments", ()), _Counted()]
    return _run(*args, **kwargs)


trio.run = _counted_run
atexit.register(lambda: json.dump({"spawned": spawned, "steps": steps, "cpu_s": cpu},
                                  open(OUT, "w")))  # noqa: SIM115 - at exit
sys.argv[0] = "nonod"

from nonod.__main__ import main  # noqa: E402 - after trio.run is wrapped

sys.exit(main())
