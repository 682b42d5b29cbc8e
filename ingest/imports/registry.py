"""The import layouts by name (one module each)."""

from __future__ import annotations

import importlib

from ingest.imports.source import FeatureImportError, FeatureSource
from shards.config import did_you_mean

LAYOUTS = {
    "net2brain": "ingest.imports.net2brain",
    "thingsvision": "ingest.imports.thingsvision",
    "parquet": "ingest.imports.parquet",
    "saelens": "ingest.imports.saelens",
}


def get_layout(name: str):
    """The ``load(src, **options) -> FeatureSource`` of layout ``name``."""
    if name not in LAYOUTS:
        raise FeatureImportError(f"unknown layout {name!r}.{did_you_mean(name, LAYOUTS)} Layouts: {', '.join(LAYOUTS)}")
    return importlib.import_module(LAYOUTS[name]).load


__all__ = ["LAYOUTS", "FeatureSource", "get_layout"]
