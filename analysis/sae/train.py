"""``actlake sae train``: SAEs on a dataset's hooks. One pass over shuffled batches trains every requested SAE;
checkpoints hold model, optimiser, step and the reader's cursor, so a killed run resumes exactly."""

from __future__ import annotations

import os

import torch

from analysis.common.rundir import refuse_dataset_place
from analysis.sae.config import SaeTrainConfig
from analysis.sae.distributed import train_distributed
from analysis.sae.runner import SaeRun, TrainSummary
from shards.lock import WriteLock
from shards.storage import Storage

CONFIG = SaeTrainConfig


def run(cfg: SaeTrainConfig) -> TrainSummary:
    """Train (or resume) the SAEs of ``cfg``: in this process, or with ``workers > 1`` on Ray Train.

    Example::

        run(SaeTrainConfig(data="demo-data/minilm", hook="resid.3", arch="topk", k="32", expansion="16",
                           tokens="1M", out="runs/minilm-topk"))
    """
    # One run per output at a time, as one writer per dataset: two runs would mix weights and run.json.
    out = Storage(cfg.out, cfg.storage)
    refuse_dataset_place(out)  # before the lock: acquiring it creates the output's folder (inside a dataset too)
    lock = WriteLock(out, what="SAE output")
    lock.acquire()
    try:
        if cfg.workers > 1:
            return train_distributed(cfg)
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
        try:
            return SaeRun(cfg).run()
        finally:
            torch.set_num_threads(threads)  # a caller's process keeps its own setting
    finally:
        lock.release_quietly()


train_sae = run
