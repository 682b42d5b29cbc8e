"""Data-parallel SAE training on Ray Train: a ``TorchTrainer`` worker group (gloo on CPU, NCCL on GPU).

Each worker runs the same ``SaeRun`` on its own rank's contiguous share of every shuffled epoch (the
``shards`` reader splits it), with gradients averaged by ``all_reduce`` before each step; rank 0 writes
checkpoints and the final SAE to the output URI.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from analysis.common.inputs import with_versions
from analysis.common.runstart import StartedRun
from analysis.sae.config import SaeTrainConfig
from analysis.sae.runner import SaeRun, TrainSummary
from shards.errors import ActlakeError
from shards.runtime import connect_ray


def _worker_loop(config: dict) -> None:
    import ray.train
    import torch

    ctx = ray.train.get_context()
    cfg = SaeTrainConfig(**config)
    torch.set_num_threads(max(1, cfg.threads or 1))
    summary = SaeRun(cfg, ctx.get_world_rank(), ctx.get_world_size()).run()
    ray.train.report({"summary": summary.to_json() if summary else None})


def _worker_error(error: Exception) -> Exception:
    """What a failed worker group raises: a worker's own ``ActlakeError`` (a run that diverged, too little data),
    whose message names the problem and the fix, rather than Ray's wrapper of every rank's traceback; ``error``
    itself when no worker raised one."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        exc = failures[rank]
        exc = getattr(exc, "cause", None) or exc  # a RayTaskError carries the original as .cause
        if isinstance(exc, ActlakeError):
            return exc
    return error


def train_distributed(cfg: SaeTrainConfig, run: StartedRun) -> TrainSummary:
    """Run ``cfg`` on ``cfg.workers`` Ray Train workers; returns rank 0's summary. ``run``: the run as the driver
    started it (the output checked, and with --overwrite cleared, once here, not by every worker at once)."""
    ray = connect_ray(cfg.address)
    rundir = run.rundir
    if run.state == "done":
        return TrainSummary.from_json(rundir.summary())
    cfg = with_versions(cfg, run.versions())  # every worker reads the versions pinned here
    bookkeeping = tempfile.mkdtemp(prefix="actlake-raytrain-")  # Ray Train's own run folder, removed after
    try:
        return _fit(cfg, ray, rundir, bookkeeping)
    finally:
        shutil.rmtree(bookkeeping, ignore_errors=True)


def _fit(cfg: SaeTrainConfig, ray, rundir, bookkeeping: str) -> TrainSummary:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    threads = cfg.threads or max(1, cores // cfg.workers)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=dataclasses.asdict(dataclasses.replace(cfg, threads=threads)),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": min(threads, cores // cfg.workers or 1)}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        # Ray Train's own run folder holds only its bookkeeping; our checkpoints go to --out
        run_config=RunConfig(storage_path=bookkeeping, name="sae"),
    )
    try:
        result = trainer.fit()  # Ray Train v2 raises the workers' errors; older versions return them
    except Exception as exc:  # noqa: BLE001 - unwrapped below when a worker raised one of ours
        raise _worker_error(exc) from None
    if result.error:
        raise _worker_error(result.error) from None
    summary = (result.metrics or {}).get("summary")
    # reported by rank 0 only on some Ray versions: else read what it wrote
    return TrainSummary.from_json(summary) if summary else TrainSummary.from_json(rundir.summary())
