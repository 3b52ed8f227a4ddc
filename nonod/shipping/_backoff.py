"""Retry delays: exponential, capped, with jitter so that many exporters do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import final


@final
@dataclass
class Backoff:
    """``next()`` is drawn from [d/2, d] where d = min(maximum, minimum * 2**failures)."""

    minimum: float = 0.5
    maximum: float = 60.0
    failures: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** min(self.failures, 32)))
        self.failures += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
