"""Data-parallel SAE training on Ray Train: a ``TorchTrainer`` worker group (gloo on CPU, NCCL on GPU).

Each worker runs the same ``Trainer`` loop on its own rank's contiguous share of every shuffled epoch
(the ``shards`` reader splits it), with gradients averaged by ``all_reduce`` before each step; rank 0
writes checkpoints and the final SAE to the output URI.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile

from analysis.sae.config import SaeTrainConfig

log = logging.getLogger("actlake.sae")


def _worker_loop(config: dict) -> None:
    import ray.train
    import torch

    from analysis.sae.train import Trainer

    ctx = ray.train.get_context()
    cfg = SaeTrainConfig(**config)
    torch.set_num_threads(max(1, cfg.threads or 1))
    summary = Trainer(cfg, ctx.get_world_rank(), ctx.get_world_size()).train()
    ray.train.report({"summary": summary} if summary else {"summary": None})


def train_distributed(cfg: SaeTrainConfig) -> dict:
    """Run ``cfg`` on ``cfg.workers`` Ray Train workers; returns rank 0's summary."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not ray.is_initialized():
        if cfg.address:
            ray.init(address=cfg.address, log_to_driver=False)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    # the output is checked (and with --overwrite cleared) once here, not by every worker at once
    import json

    from analysis.sae.train import check_output, run_fingerprint
    from shards.storage import Storage

    out = Storage(cfg.out, cfg.storage_options())
    if check_output(cfg, out, run_fingerprint(cfg)) == "done":
        return json.loads(out.get_bytes("training_summary.json"))
    cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    threads = cfg.threads or max(1, cores // cfg.workers)
    config = dataclasses.asdict(dataclasses.replace(cfg, threads=threads))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": min(threads, cores // cfg.workers or 1)}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        # Ray Train's own run folder holds only its bookkeeping; our checkpoints go to --out
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="actlake-raytrain-"), name="sae"),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    summary = (result.metrics or {}).get("summary")
    if summary is None:  # reported by rank 0 only on some Ray versions: read what it wrote
        summary = json.loads(out.get_bytes("training_summary.json"))
    return summary
