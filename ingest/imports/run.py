"""``actlake import``: features computed elsewhere into an actlake dataset (same manifest and statistics)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from simple_parsing import field

from ingest.imports.registry import LAYOUTS, get_layout
from ingest.imports.source import FeatureImportError, FeatureSource

log = logging.getLogger("actlake.import")

_STORABLE = ("float16", "bfloat16", "float32")


@dataclass
class ImportConfig:
    """Import features computed elsewhere (Net2Brain, thingsvision, Parquet) into an actlake dataset."""

    src: str = field(positional=True, metavar="SRC")
    """The features: a folder (net2brain, thingsvision) or a Parquet file, local or any fsspec URI."""

    layout: str = "net2brain"
    """net2brain (one .npz per stimulus, keyed by layer), thingsvision (an array per layer + file_names.txt),
    parquet (a row per stimulus, list columns as hooks)."""

    out: str = "demo-data/imported"
    """Output dataset URI."""

    dtype: str | None = None
    """Stored dtype (float16, bfloat16, float32); default: each array's own dtype."""

    hooks: str | None = None
    """Comma-separated layers to import (default: all)."""

    stimulus_id: str = "file"
    """net2brain: file (the file's stem, ResNet18_image_01) or image (the image's stem, image_01)."""

    ids: str | None = None
    """thingsvision: a text file listing the stimuli in row order (default: SRC/file_names.txt)."""

    id_field: str | None = None
    """parquet: the id column (default: stimulus_id or id)."""

    unit_size: int = 1024
    """Rows per work unit (Parquet file)."""

    compression: str = "none"
    """Parquet compression: none, lz4 or zstd."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace an existing dataset at --out."""

    endpoint_url: str | None = None
    """S3-compatible endpoint for SRC and --out (default: AWS_ENDPOINT_URL or AWS)."""

    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}


def _stored_dtype(layer, wanted: str | None) -> str:
    if wanted:
        if wanted not in _STORABLE:
            raise FeatureImportError(f"--dtype {wanted!r}: use one of {_STORABLE}")
        return wanted
    if layer.dtype in _STORABLE:
        return layer.dtype
    raise FeatureImportError(f"layer {layer.name!r} is {layer.dtype}; actlake stores {', '.join(_STORABLE)}. "
                       "Give --dtype float32 (or float16) to convert it.")


def _convert(x: np.ndarray, src_dtype: str, dst: str):
    import torch

    if src_dtype == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
        return t if dst == "bfloat16" else t.to(getattr(torch, dst))
    if dst == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
    return np.ascontiguousarray(x, dtype=dst)  # no copy when the dtype already matches


def import_features(cfg: ImportConfig) -> dict:
    """Import ``cfg.src`` (layout ``cfg.layout``) into ``cfg.out``; returns a summary.

    Example::

        import_features(ImportConfig(src="../shared/data/net2brain78/resnet18_layer3.1.conv2",
                                     layout="net2brain", out="/tmp/n2b"))
    """
    import shards

    t0 = time.perf_counter()
    load = get_layout(cfg.layout)
    so = cfg.storage_options()
    source: FeatureSource = load(cfg.src, stimulus_id=cfg.stimulus_id, ids=cfg.ids, id_field=cfg.id_field,
                                 storage_options=so)
    source.check()
    if cfg.stimulus_id not in ("file", "image"):
        raise FeatureImportError(f"--stimulus-id {cfg.stimulus_id!r}: use file or image")
    if cfg.hooks:
        wanted = [h.strip() for h in cfg.hooks.split(",") if h.strip()]
        missing = [h for h in wanted if h not in source.layers]
        if missing:
            raise FeatureImportError(f"layers {missing} not in {cfg.src!r}; it has {sorted(source.layers)}")
        source.layers = {h: source.layers[h] for h in wanted}
    if cfg.unit_size <= 0:
        raise FeatureImportError(f"--unit-size must be positive, got {cfg.unit_size}")
    hooks = {name: {"shape": list(layer.shape), "dtype": _stored_dtype(layer, cfg.dtype)}
             for name, layer in source.layers.items()}
    columns = {"stimulus_id": "string", **{k: "string" if isinstance(v[0], str) else
                                            ("float64" if isinstance(v[0], float) else "int64")
                                            for k, v in source.metadata.items()}}
    n = len(source.ids)
    provenance = {"import": {"source": cfg.src, "layout": cfg.layout, "stimuli": n,
                             "original_layers": {k: {"shape": list(v.shape), "dtype": v.dtype}
                                                 for k, v in source.layers.items()}, **source.provenance}}
    writer = shards.create_dataset(cfg.out, hooks, columns=columns, mode="overwrite" if cfg.overwrite else "create",
                                   compression=cfg.compression, provenance=provenance, storage_options=so)
    units = math.ceil(n / cfg.unit_size)
    try:
        for u in range(units):
            a, b = u * cfg.unit_size, min((u + 1) * cfg.unit_size, n)
            cols = {"example_id": np.arange(a, b, dtype=np.int64),
                    "stimulus_id": np.asarray(source.ids[a:b], dtype=object)}
            for k, v in source.metadata.items():
                cols[k] = np.asarray(v[a:b], dtype=object if isinstance(v[0], str) else None)
            for name, layer in source.layers.items():
                cols[name] = _convert(layer.rows(a, b), layer.dtype, hooks[name]["dtype"])
            writer.write_unit(u, cols)
            log.info("unit %d/%d: rows %d-%d", u + 1, units, a, b - 1)
        writer.close()
    except BaseException:
        writer.abort()
        if not writer.committed_units:  # nothing committed: leave no empty dataset that blocks the rerun
            writer.storage.delete_prefix("")
        raise
    ds = shards.open_dataset(cfg.out, so)
    return {"out": ds.storage.display(), "layout": cfg.layout, "rows": ds.num_rows, "hooks": list(hooks),
            "bytes": ds.manifest["num_bytes"], "seconds": round(time.perf_counter() - t0, 2)}


__all__ = ["LAYOUTS", "ImportConfig", "import_features"]
