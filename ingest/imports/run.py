"""``actlake import``: features computed elsewhere into an actlake dataset (same manifest and statistics)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from simple_parsing import field

from ingest.imports.registry import LAYOUTS, get_layout
from ingest.imports.source import FeatureImportError, FeatureSource, Layer
from shards.card import CardOptions
from shards.columns import EXAMPLE_ID, STIMULUS_ID
from shards.config import check_choices, check_positive, nested, split_list, take_credentials
from shards.dtypes import FLOAT_DTYPES, FloatDtype
from shards.manifest import Provenance
from shards.records import JsonRecord
from shards.schema import infer_column_type
from shards.storage import StorageOptions
from shards.unit_writer import Compression

log = logging.getLogger("actlake.import")


@dataclass
class ImportConfig:
    """Import features computed elsewhere (Net2Brain, thingsvision, Parquet, SAELens' activation cache) into an
    actlake dataset."""

    src: str = field(positional=True, metavar="SRC")
    """The features: a folder (net2brain, thingsvision) or a Parquet file, local or any fsspec URI."""

    layout: str = "net2brain"
    """net2brain (one .npz per stimulus, keyed by layer), thingsvision (an array per layer + file_names.txt),
    parquet (a row per stimulus, list columns as hooks), saelens (SAELens' cached activations: a token per row)."""

    out: str = "demo-data/imported"
    """Output dataset URI."""

    dtype: FloatDtype | None = None
    """Stored dtype; default: each array's own dtype."""

    hooks: list[str] = field(default_factory=list, nargs="*", metavar="LAYER[,LAYER...]")
    """Layers to import (default: all)."""

    stimulus_id: Literal["file", "image"] = "file"
    """net2brain: file (the file's stem, ResNet18_image_01) or image (the image's stem, image_01)."""

    ids: str | None = None
    """thingsvision: a text file listing the stimuli in row order (default: SRC/file_names.txt)."""

    id_field: str | None = None
    """parquet: the id column (default: stimulus_id or id)."""

    unit_size: int = 1024
    """Rows per work unit (Parquet file)."""

    compression: Compression = "none"
    """Parquet compression."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace an existing dataset at --out."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for SRC and --out."""

    card: CardOptions = field(default_factory=CardOptions)
    """The dataset card's licence and citation."""

    def __post_init__(self) -> None:
        self.hooks = split_list(self.hooks)
        self.storage = nested(self.storage, StorageOptions)
        self.card = nested(self.card, CardOptions)
        take_credentials(self, "src", "out", "ids")
        check_choices(self)
        check_positive(self, "unit_size")


@dataclass
class ImportSummary(JsonRecord):
    out: str
    layout: str
    rows: int
    hooks: list[str]
    bytes: int
    seconds: float


def _stored_dtype(layer: Layer, wanted: str | None) -> str:
    if wanted:
        return wanted
    if layer.dtype in FLOAT_DTYPES:
        return layer.dtype
    raise FeatureImportError(f"layer {layer.name!r} is {layer.dtype}; actlake stores {', '.join(FLOAT_DTYPES)}. "
                             "Give --dtype float32 (or float16) to convert it.")


def _convert(x: np.ndarray, src_dtype: str, dst: str):
    import torch

    if src_dtype == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
        return t if dst == "bfloat16" else t.to(getattr(torch, dst))
    if dst == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
    return np.ascontiguousarray(x, dtype=dst)  # no copy when the dtype already matches


def _open_source(cfg: ImportConfig) -> FeatureSource:
    load = get_layout(cfg.layout)
    source: FeatureSource = load(cfg.src, stimulus_id=cfg.stimulus_id, ids=cfg.ids, id_field=cfg.id_field,
                                 storage_options=cfg.storage.to_fsspec())
    source.check()
    if cfg.hooks:
        missing = [h for h in cfg.hooks if h not in source.layers]
        if missing:
            raise FeatureImportError(f"layers {missing} not in {cfg.src!r}; it has {sorted(source.layers)}")
        source.layers = {h: source.layers[h] for h in cfg.hooks}
    return source


def _unit_columns(source: FeatureSource, hooks: dict, a: int, b: int) -> dict:
    if source.tokens is not None:
        cols = source.tokens.columns(a, b)
    else:
        cols = {EXAMPLE_ID: np.arange(a, b, dtype=np.int64),
                STIMULUS_ID: np.asarray(source.ids[a:b], dtype=object)}
    for k, v in source.metadata.items():
        cols[k] = np.asarray(v[a:b], dtype=object if isinstance(v[0], str) else None)
    for name, layer in source.layers.items():
        cols[name] = _convert(layer.rows(a, b), layer.dtype, hooks[name]["dtype"])
    return cols


def import_features(cfg: ImportConfig) -> ImportSummary:
    """Import ``cfg.src`` (layout ``cfg.layout``) into ``cfg.out``.

    Example::

        import_features(ImportConfig(src="../shared/data/net2brain78/resnet18_layer3.1.conv2",
                                     layout="net2brain", out="/tmp/n2b"))
    """
    import shards

    t0 = time.perf_counter()
    source = _open_source(cfg)
    hooks = {name: {"shape": list(layer.shape), "dtype": _stored_dtype(layer, cfg.dtype)}
             for name, layer in source.layers.items()}
    columns = {**({STIMULUS_ID: "string"} if source.tokens is None else {}),
               **{k: infer_column_type(v, k) for k, v in source.metadata.items()}}
    n = source.num_rows
    provenance = Provenance(details={"import": {
        "source": cfg.src, "layout": cfg.layout, ("tokens" if source.tokens is not None else "stimuli"): n,
        **source.provenance,
        "original_layers": {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in source.layers.items()}},
        **cfg.card.to_details()})
    writer = shards.create_dataset(cfg.out, hooks, columns=columns, mode="overwrite" if cfg.overwrite else "create",
                                   compression=cfg.compression, provenance=provenance, storage_options=cfg.storage)
    units = math.ceil(n / cfg.unit_size)
    try:
        for u in range(units):
            a, b = u * cfg.unit_size, min((u + 1) * cfg.unit_size, n)
            writer.write_unit(u, _unit_columns(source, hooks, a, b))
            log.info("unit %d/%d: rows %d-%d", u + 1, units, a, b - 1)
        writer.close()
    except BaseException:
        # An import is all or nothing: a partial one would pass `verify` as if complete. Only the files of
        # the dataset this import created are removed (never anything else under --out).
        writer.abort(remove_created=True)
        raise
    ds = shards.open_dataset(cfg.out, cfg.storage)
    return ImportSummary(ds.storage.display(), cfg.layout, ds.num_rows, list(hooks), ds.manifest.num_bytes,
                         round(time.perf_counter() - t0, 2))


__all__ = ["LAYOUTS", "ImportConfig", "ImportSummary", "import_features"]
