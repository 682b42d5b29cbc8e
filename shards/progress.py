"""Progress of long work, one helper for every command: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time


class Progress:
    """Counts ``unit``s of work towards ``total``; ``count`` names a second quantity whose rate is shown
    (tokens, images). On a terminal a tqdm bar; elsewhere (a Ray job's log, CI) one log line every
    ``every`` seconds and one at the end.

    Example::

        with Progress(len(units), "unit", "extracting", log, count="tokens") as p:
            for u in units:
                p.update(1, amount=run(u))
    """

    def __init__(self, total: int, unit: str, desc: str, logger: logging.Logger, *, count: str | None = None,
                 initial: int = 0, every: float = 10.0, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.total, self.unit, self.desc, self.log, self.count = total, unit, desc, logger, count
        self.done, self.amount, self.every, self.enabled = initial, 0.0, every, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not self.tty)
        self.t0 = self.last = time.perf_counter()
        self._initial = initial

    def update(self, n: int = 1, amount: float = 0, note: str = "") -> None:
        self.done += n
        self.amount += amount
        now = time.perf_counter()
        rate = self.amount / max(now - self.t0, 1e-9)
        shown = " ".join(s for s in (f"{rate:,.1f} {self.count}/s" if self.count else "", note) if s)
        self.bar.update(n)
        if shown:
            self.bar.set_postfix_str(shown)
        if self.enabled and not self.tty and (now - self.last >= self.every or self.done >= self.total):
            ran = self.done - self._initial
            eta = (self.total - self.done) * (now - self.t0) / max(ran, 1)
            amount = f", {self.amount:,.0f} {self.count}" if self.count else ""
            self.log.info("%s: %s %d/%d%s, ETA %.0fs%s", self.desc, f"{self.unit}s", self.done, self.total, amount,
                          eta, f" ({shown})" if shown else "")
            self.last = now

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
