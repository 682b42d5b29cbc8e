"""Retrying an operation that may fail for a moment, written once (as MosaicML streaming's ``retry``).

The caller names the exception classes worth another try; anything else propagates at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently: ``attempts`` retries after the first try, jittered exponential backoff."""

    attempts: int = 6
    backoff: float = 0.2
    max_backoff: float = 10.0


def retry(fn: Callable[[], T], *, retry_on: tuple[type[BaseException], ...], policy: RetryPolicy = RetryPolicy(),
          on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """``fn()``, tried again after an exception of ``retry_on`` until ``policy`` gives up (then it is raised).

    ``on_retry(attempt, exc, delay)`` runs before each wait (to log, or to drop a stale cache).
    """
    delay = policy.backoff
    for attempt in range(policy.attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt == policy.attempts:
                raise
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, policy.max_backoff)
    raise AssertionError("unreachable")
