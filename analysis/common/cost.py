"""What long work will cost, said before it starts: the work a command will do (rows × hooks × folds × tasks,
suites) and an estimate of its time from a short timed sample of that same work, so that a run that would take
hours can be stopped before it has taken them. Every long command logs one ``will compute …; estimated …`` line
(``CostEstimate.line``) and records estimate and measured time in its summary (``cost``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CostEstimate:
    """What a piece of work computes, how long it should take and how that was found."""

    work: str  #: what it computes, e.g. ``36,148 rows × 768 dims × (5 folds + 5 controls + 20 search fits)``
    seconds: float  #: estimated wall time
    basis: str  #: how: ``timed sample: 4,000 rows in 2.1 s, scaled to 36,148``
    parts: dict[str, float] = field(default_factory=dict)  #: seconds of each part, where a suite has parts

    def times(self, n: int, what: str, parallel: int = 1) -> CostEstimate:
        """``n`` such pieces (``what``: ``hooks``), ``parallel`` at a time."""
        rounds = math.ceil(n / max(1, min(parallel, n))) if n else 0
        at_once = f", {parallel} at a time" if parallel > 1 and n > 1 else ""
        return CostEstimate(f"{n} {what} × {self.work}{at_once}", self.seconds * rounds, self.basis,
                            {k: v * rounds for k, v in self.parts.items()})

    def line(self) -> str:
        """``will compute …; estimated ~6 min (timed sample: …)``: logged before the work starts."""
        if self.seconds <= 0:
            return f"will compute {self.work}; not estimated ({self.basis})"
        return f"will compute {self.work}; estimated {duration(self.seconds)} ({self.basis})"

    def record(self, seconds: float) -> dict:
        """What a summary keeps (``cost``): the estimate beside the measured time, so both can be compared."""
        return {"work": self.work, "estimated_seconds": round(self.seconds, 2), "seconds": round(seconds, 2),
                "basis": self.basis}


def duration(seconds: float) -> str:
    """``~40 s``, ``~6 min``, ``~1.4 h``: an estimate's precision, not a stopwatch's."""
    if seconds < 90:
        return f"~{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def scaled(seconds: float, sampled: int, total: int, what: str = "rows", fixed: float = 0.0) -> tuple[float, str]:
    """A sample of ``sampled`` items that took ``seconds``, scaled linearly to ``total`` (plus ``fixed`` seconds
    that do not grow with them): the estimate and its ``basis``."""
    est = seconds * total / max(sampled, 1) + fixed
    extra = f" + {fixed:.1f} s that do not grow with them" if fixed > 0.05 else ""
    return est, f"timed sample: {sampled:,} {what} in {seconds:.1f} s, scaled to {total:,}{extra}"
