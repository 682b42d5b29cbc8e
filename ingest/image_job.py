"""An image extraction job's pieces, built the same way by the driver (to plan and check) and by each actor."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ingest.capture import capture
from ingest.config import ExtractConfig
from ingest.hooks import HookPoint, resolve_hooks
from ingest.images import ImageSource, load_image_source
from ingest.models import LoadedModel, image_size
from ingest.preprocess import Preprocessor, build_preprocessor
from ingest.vision import VisionExtractor, resolve_pools, stored_shape
from shards.errors import ActlakeError


class ImageJobError(ActlakeError, ValueError):
    """The image job is misconfigured."""


@dataclass
class ImageJob:
    source: ImageSource
    hooks: list[HookPoint]
    preprocessor: Preprocessor
    pools: dict[str, str]
    shapes: dict[str, tuple]  #: per hook, the model's per-image output shape
    extractor: VisionExtractor
    meta_fields: list[str]


def build_image_job(cfg: ExtractConfig, loaded: LoadedModel, probe_size: tuple[int, int] | None = None) -> ImageJob:
    """Open the source, build preprocessing and hooks, and learn each hook's output shape from one image.

    ``probe_size`` (W, H) fixes the expected image size when no resize is set (the driver's first image),
    so a unit with an image of another size fails with a clear error instead of a shape mismatch.
    """
    if cfg.on_bad_image not in ("fail", "skip"):
        raise ImageJobError(f"--on-bad-image {cfg.on_bad_image!r}: use fail or skip")
    source = load_image_source(cfg.data, cfg.image_field, cfg.id_field, cfg.fields, cfg.metadata,
                               storage_options=cfg.storage_options())
    hooks = resolve_hooks(loaded.model, cfg.hooks)
    model_dir = loaded.path if Path(loaded.path).is_dir() else None
    pre = build_preprocessor(model_dir, cfg.preprocess, cfg.resize, cfg.crop, cfg.mean or None, cfg.std or None,
                             cfg.resample, image_size(loaded.model))
    first = probe_size
    if first is None:
        first = _first_readable(source).size
    if not pre.settings.get("resize") and not pre.settings.get("crop"):
        pre.settings["expected_size"] = list(first)
    from PIL import Image

    blank = Image.new("RGB", tuple(first), (127, 127, 127))
    px = pre([blank], ["probe"])
    with torch.inference_mode():
        params = next(loaded.model.parameters(), None)
        dev, dt = (params.device, params.dtype) if params is not None else ("cpu", torch.float32)
        acts = capture(loaded.model, hooks, {"pixel_values": px.to(dev, dt)})
    shapes = {h.name: tuple(acts[h.name].shape[1:]) for h in hooks}
    pools = resolve_pools("auto" if cfg.pool in ("auto", "") else cfg.pool, shapes)
    extractor = VisionExtractor(loaded.model, hooks, pre, pools, cfg.dtype, cfg.batch_size, cfg.on_bad_image)
    extractor.stored_shapes = {n: stored_shape(p, shapes[n]) for n, p in pools.items()}
    return ImageJob(source, hooks, pre, pools, shapes, extractor, list(source.metadata))


def _first_readable(source: ImageSource):
    from ingest.images import ImageDecodeError

    for i in range(min(len(source), 64)):
        try:
            return source.image(i)
        except ImageDecodeError:
            continue
    return source.image(0)  # raises, naming it


def plan_image(cfg: ExtractConfig, loaded: LoadedModel):
    """Hook specs, columns, number of images and provenance for an image job (checked before any work)."""
    job = build_image_job(cfg, loaded)
    hook_specs = {h.name: {"shape": stored_shape(job.pools[h.name], job.shapes[h.name]), "dtype": cfg.dtype,
                           "module": h.module} for h in job.hooks}
    columns = job.source.column_types()
    if set(job.pools.values()) == {"none"}:
        columns.update({"patch_row": "int32", "patch_col": "int32"})
    n = min(len(job.source), cfg.max_examples) if cfg.max_examples else len(job.source)
    provenance = {
        "model": loaded.provenance(),
        "images": {"source": cfg.data, "kind": job.source.kind, "images": n, "fields": list(job.meta_fields),
                   "ids_sha256": hashlib.sha256(json.dumps(job.source.ids[:n]).encode()).hexdigest(),
                   "first_ids": job.source.ids[:3]},
        "preprocessing": job.preprocessor.describe()
        | {"input_size": list(job.preprocessor.settings.get("expected_size") or [])},
        "pooling": {h: {"pool": p, "model_shape": list(job.shapes[h])} for h, p in job.pools.items()},
        "work_units": {"unit_size": cfg.unit_size, "units": -(-n // cfg.unit_size)},
    }
    return hook_specs, columns, n, provenance
