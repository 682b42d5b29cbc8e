"""Images: a stimulus set through a vision model, a row per image (pooled per hook) or per patch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ingest.capture import capture
from ingest.columns import PATCH_COLUMNS
from ingest.config import ExtractConfig
from ingest.hooks import resolve_hooks
from ingest.image_sources import ImageDecodeError, ImageSource, is_image_source, load_image_source
from ingest.modalities.base import Modality
from ingest.models import LoadedModel, image_size, is_vision_model
from ingest.plan import ExtractionPlan, InputSelection, UnitRows, WorkUnit, base_identity, base_provenance, stored_hooks
from ingest.preprocess import Preprocessor, PreprocessSpec, resolve_preprocess
from ingest.vision import VisionExtractor, resolve_pools, stored_shape
from shards.manifest import SkippedInput


@dataclass
class ImageInputs:
    """The images a job reads, in order, and how each hook's output becomes rows."""

    source: ImageSource
    preprocess: PreprocessSpec
    pools: dict[str, str]
    model_shapes: dict[str, tuple]  #: per hook, the model's per-image output shape
    stored_shapes: dict[str, list[int]]
    on_bad_image: str


@dataclass
class PreparedImages:
    unit: WorkUnit
    batches: list[torch.Tensor]  #: preprocessed pixels
    kept: list[int]
    skipped: list[SkippedInput]


def _first_readable(source: ImageSource):
    for i in range(min(len(source), 64)):
        try:
            return source.image(i)
        except ImageDecodeError:
            continue
    return source.image(0)  # raises, naming it


def _blank_input(loaded: LoadedModel, pre: Preprocessor, size: tuple[int, int]) -> dict:
    """One blank image of the job's size, preprocessed, on the model's device and dtype."""
    from PIL import Image

    px = pre([Image.new("RGB", tuple(size), (127, 127, 127))], ["probe"])
    params = next(loaded.model.parameters(), None)
    dev, dt = (params.device, params.dtype) if params is not None else ("cpu", torch.float32)
    return {"pixel_values": px.to(dev, dt)}


def _model_shapes(loaded: LoadedModel, hooks, pre: Preprocessor, size: tuple[int, int]) -> dict[str, tuple]:
    """Each hook's per-image output shape, from one blank image of the job's size."""
    with torch.inference_mode():
        acts = capture(loaded.model, hooks, _blank_input(loaded, pre, size))
    return {h.name: tuple(acts[h.name].shape[1:]) for h in hooks}


class ImageModality(Modality):
    name = "image"
    counts = "images"

    @classmethod
    def detects(cls, cfg: ExtractConfig, loaded: LoadedModel) -> bool:
        return is_vision_model(loaded.model) or is_image_source(cfg.data, cfg.storage)

    @classmethod
    def plan(cls, cfg: ExtractConfig, loaded: LoadedModel, selection: InputSelection | None = None) -> ExtractionPlan:
        source = load_image_source(cfg.data, cfg.image_field, cfg.id_field, cfg.fields, cfg.metadata, cfg.storage)
        if selection is not None and selection.files:
            source = source.subset(selection.files)
        hooks = resolve_hooks(loaded.model, cfg.hooks)
        model_dir = loaded.path if Path(loaded.path).is_dir() else None
        declared = loaded.preprocess  # a factory's VisionModelSpec; the command line wins over it
        spec = resolve_preprocess(model_dir, cfg.preprocess,
                                  str(declared.get("resize", "auto")) if cfg.resize == "auto" else cfg.resize,
                                  str(declared.get("crop", "auto")) if cfg.crop == "auto" else cfg.crop,
                                  cfg.mean or declared.get("mean"), cfg.std or declared.get("std"), cfg.resample,
                                  image_size(loaded.model))
        first = _first_readable(source).size
        pre = Preprocessor(spec).expecting(first)
        shapes = _model_shapes(loaded, hooks, pre, first)
        pools = resolve_pools("auto" if cfg.pool in ("auto", "") else cfg.pool, shapes)
        stored = {n: stored_shape(p, shapes[n]) for n, p in pools.items()}
        n = min(len(source), cfg.max_examples) if cfg.max_examples else len(source)
        inputs = ImageInputs(source, pre.spec, pools, shapes, stored, cfg.on_bad_image)
        described = pre.describe()
        identity = base_identity(cfg, loaded, hooks, "image", n, ids_sha256=source.ids_sha256(n), pools=pools,
                                 preprocessing=described, image_field=cfg.image_field, id_field=cfg.id_field,
                                 on_bad_image=cfg.on_bad_image)
        provenance = base_provenance(
            loaded, cfg, n,
            images={"source": cfg.data, "kind": source.kind, "images": n, "fields": list(source.metadata),
                    "ids_sha256": source.ids_sha256(n), "first_ids": source.ids[:3]},
            preprocessing={**described, "input_size": list(pre.spec.expected_size or [])},
            pooling={h: {"pool": p, "model_shape": list(shapes[h])} for h, p in pools.items()})
        columns = {**source.column_types(), **(PATCH_COLUMNS if set(pools.values()) == {"none"} else {})}
        return ExtractionPlan(config=dataclasses.replace(cfg, modality="image"), modality="image", model=loaded.info(),
                              hooks=hooks, hook_specs=stored_hooks(hooks, stored, cfg.dtype), columns=columns,
                              num_examples=n, provenance=provenance, identity=identity, inputs=inputs)

    @classmethod
    def probe_inputs(cls, plan: ExtractionPlan, loaded: LoadedModel) -> dict:
        inputs: ImageInputs = plan.inputs
        return _blank_input(loaded, Preprocessor(inputs.preprocess), _first_readable(inputs.source).size)

    def __init__(self, plan: ExtractionPlan, loaded: LoadedModel) -> None:
        inputs: ImageInputs = plan.inputs
        self.source = inputs.source
        self.extractor = VisionExtractor(model=loaded.model, hooks=plan.hooks,
                                         preprocessor=Preprocessor(inputs.preprocess), pools=inputs.pools,
                                         stored_shapes=inputs.stored_shapes, dtype=plan.config.dtype,
                                         batch_size=plan.config.batch_size, on_bad_image=inputs.on_bad_image,
                                         interventions=plan.in_loop.interventions)

    def prepare(self, unit: WorkUnit) -> PreparedImages:
        return PreparedImages(unit, *self.extractor.prepare(self.source, unit.start, unit.stop))

    def forward(self, prepared: PreparedImages) -> UnitRows:
        cols = self.extractor.forward(prepared.batches, prepared.kept, self.source, list(self.source.metadata))
        return UnitRows(cols, len(prepared.kept), tuple(prepared.skipped))
