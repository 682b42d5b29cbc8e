"""The import layouts by name (one module each)."""

from __future__ import annotations

import difflib
import importlib

from ingest.imports.source import FeatureImportError, FeatureSource

LAYOUTS = {
    "net2brain": "ingest.imports.net2brain",
    "thingsvision": "ingest.imports.thingsvision",
    "parquet": "ingest.imports.parquet",
}


def get_layout(name: str):
    """The ``load(src, **options) -> FeatureSource`` of layout ``name``."""
    if name not in LAYOUTS:
        close = difflib.get_close_matches(name, list(LAYOUTS), n=2, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise FeatureImportError(f"unknown layout {name!r}.{hint} Layouts: {', '.join(LAYOUTS)}")
    return importlib.import_module(LAYOUTS[name]).load


__all__ = ["LAYOUTS", "FeatureSource", "get_layout"]
