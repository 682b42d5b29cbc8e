"""How many torch threads a probe hook runs with when ``--threads`` is not given: every core, unless the cores are
busy with other work and one thread is faster.

An objective pass is many short parallel operations (a product, a softmax, a reduction per chunk, the
preconditioner's products), each ending at a barrier that every thread must reach. When other processes hold the
cores, a thread waits for a time slice at every barrier: on 2 cores under a load of ~10, 2 threads made the concepts
demo's penalty search ten times slower than 1 thread (202 s against 21 s on a 2,000-row sample). A short timed
burst of such operations with each thread count, before each hook, decides.
"""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger("actlake.probe")
MIN_WORK = 2_000_000  #: items x dims below which a hook is too small for the check to pay (a burst is ~0.1 s)


def _burst(threads: int, x: torch.Tensor, w: torch.Tensor) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for _ in range(4):
        p = torch.softmax(x @ w, -1)
        (x.t() @ p).sum()
    return time.perf_counter() - t0


_recent: dict[int, tuple[float, int, str]] = {}  #: cores -> (when, choice, why): the driver's estimate, then
#: the first hook, ask within seconds of each other
RECENT_S = 30.0


def fastest_threads(cores: int) -> tuple[int, str]:
    """1 or ``cores``: whichever runs a burst of objective-like operations faster now (alternated up to three
    times, summed; a clear loser after the first round is not timed again), and a few words on why."""
    if cores <= 1:
        return max(cores, 1), ""
    if cores in _recent and time.monotonic() - _recent[cores][0] < RECENT_S:
        return _recent[cores][1:]
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn((1024, 384), generator=gen), torch.randn((384, 64), generator=gen)
    before = torch.get_num_threads()
    many = one = 0.0
    try:
        for _ in range(3):
            one += _burst(1, x, w)
            many += _burst(cores, x, w)
            if many > 2 * one or one > 2 * many:
                break
    finally:
        torch.set_num_threads(before)
    chosen, why = (cores, "") if many <= one else (
        1, f"{cores} threads were {many / one:.1f}x slower than 1 here (the cores are busy with other work)")
    _recent[cores] = (time.monotonic(), chosen, why)
    return chosen, why


def hook_threads(threads: int, workers: int, address: str | None, work: int, cores: int | None = None) -> int | None:
    """The torch threads a hook should use: None to keep what the runner set (``--threads`` given, a Ray task, or
    a hook too small to matter), else the faster of ``cores`` (default: torch's threads now) and one."""
    if threads or workers > 1 or address or work < MIN_WORK:
        return None
    chosen, why = fastest_threads(cores or torch.get_num_threads())
    if why:
        log.info("1 torch thread: %s", why)
    return chosen
