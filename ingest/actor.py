"""The Ray extraction actor: loads the model once, extracts units, writes them straight to the destination."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ingest.plan import ExtractionPlan, WorkUnit
from shards.columns import EXAMPLE_ID
from shards.commits import CommitRecord
from shards.errors import ActlakeError
from shards.unit_writer import UnitWriter


@dataclass
class UnitOutcome:
    """A unit done: its commit record for the driver to fold in, what it ran, where its time went."""

    record: CommitRecord
    count: int
    prepare_s: float
    forward_s: float
    write_s: float


WRITER_NICE = 10


def lower_thread_priority(nice: int = WRITER_NICE) -> None:
    """Raise the calling thread's nice value (Linux: per thread; threads it starts inherit it). Best effort:
    elsewhere, or where not permitted, the thread keeps its priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


class ExtractionActor:
    """One model replica. ``process`` prepares a unit's inputs, runs its forward passes under a lock and
    writes the unit outside it, so with ``max_concurrency=2`` one unit's preparation and writing overlap
    the other's forward pass."""

    def __init__(self, plan: ExtractionPlan, unit_writer: UnitWriter, threads: int) -> None:
        import torch

        from ingest.modalities import get_modality
        from ingest.models import load_model

        if threads > 0:
            torch.set_num_threads(threads)
        cfg = plan.config
        device = "cuda" if cfg.num_gpus and torch.cuda.is_available() else "cpu"
        #: an error of ours while setting up (the corpus changed since the plan, a bad input): kept and raised
        #: by every call, so the driver receives it as itself and stops. Raised here, it would kill the actor,
        #: and the driver would take that for a lost machine and start replacement actors that fail alike.
        self.setup_error: ActlakeError | None = None
        try:
            self.modality = get_modality(plan.modality)(plan, load_model(cfg.model, cfg.model_dtype, device))
        except ActlakeError as exc:
            self.setup_error = exc
        self.writer = unit_writer
        self.example_base = plan.example_base
        self.forward_lock = threading.Lock()
        # one writer thread, below the forward pass in the scheduler: with no idle core, encoding, statistics
        # and fsync take the cycles the forward pass leaves instead of slicing into it
        self.write_pool = ThreadPoolExecutor(1, thread_name_prefix="actlake-unit-writer",
                                             initializer=lower_thread_priority)

    def pid(self) -> int:
        """The actor's process id, once its model and inputs are ready (its setup error, if it had one)."""
        if self.setup_error is not None:
            raise self.setup_error
        return os.getpid()

    def process(self, unit: WorkUnit) -> UnitOutcome:
        if self.setup_error is not None:  # an actor started mid-run (a replacement) is not waited for by pid()
            raise self.setup_error
        t0 = time.perf_counter()
        prepared = self.modality.prepare(unit)
        t1 = time.perf_counter()
        with self.forward_lock:
            rows = self.modality.forward(prepared)
        t2 = time.perf_counter()
        if self.example_base:  # a scheduled tick: example ids continue after the earlier ticks'
            import dataclasses

            import numpy as np

            rows.columns[EXAMPLE_ID] = np.asarray(rows.columns[EXAMPLE_ID], dtype=np.int64) + self.example_base
            rows.skipped = tuple(dataclasses.replace(s, example_id=s.example_id + self.example_base)
                                 for s in rows.skipped)
        record = self.write_pool.submit(self.writer.write, unit.id, rows.columns, rows.skipped).result()
        return UnitOutcome(record, rows.count, t1 - t0, t2 - t1, time.perf_counter() - t2)
