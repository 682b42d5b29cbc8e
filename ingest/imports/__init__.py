"""Import of features computed elsewhere (Net2Brain, thingsvision, Parquet tables) into actlake datasets."""

from ingest.imports.registry import LAYOUTS, get_layout
from ingest.imports.run import ImportConfig, import_features

__all__ = ["LAYOUTS", "ImportConfig", "get_layout", "import_features"]
