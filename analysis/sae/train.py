"""``actlake sae train``: SAEs on a dataset's hooks. One pass over shuffled batches trains every requested SAE;
checkpoints hold model, optimiser, step and the reader's cursor, so a killed run resumes exactly."""

from __future__ import annotations

import os

import torch

from analysis.common.rundir import output_lock
from analysis.sae.config import SaeTrainConfig
from analysis.sae.distributed import train_distributed
from analysis.sae.runner import KIND, SaeRun, TrainSummary, start_training
from shards.storage import Storage

CONFIG = SaeTrainConfig


def run(cfg: SaeTrainConfig) -> TrainSummary:
    """Train (or resume) the SAEs of ``cfg``: in this process, or with ``workers > 1`` on Ray Train.

    Example::

        run(SaeTrainConfig(data="demo-data/minilm", hook="resid.3", arch="topk", k="32", expansion="16",
                           tokens="1M", out="runs/minilm-topk"))
    """
    # One run per output at a time, as one writer per dataset: two runs would mix weights and run.json.
    with output_lock(Storage(cfg.out, cfg.storage), KIND.lock):
        run = start_training(cfg)  # the inputs pinned and the output checked (--overwrite cleared) once, here
        if cfg.workers > 1:
            return train_distributed(cfg, run)
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
        try:
            return SaeRun(cfg, run=run).run()
        finally:
            torch.set_num_threads(threads)  # a caller's process keeps its own setting


train_sae = run
