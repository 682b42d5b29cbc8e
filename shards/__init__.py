"""actlake's dataset format: sharded Parquet activation datasets on any fsspec storage.

Example::

    import shards
    w = shards.create_dataset("/tmp/acts", hooks={"resid.3": {"shape": [384], "dtype": "float16"}})
    w.write_unit(0, {"example_id": ids, "position": pos, "resid.3": acts})
    w.close()
    ds = shards.open_dataset("/tmp/acts")

``import shards`` loads neither torch, Ray nor ``datasets``; the adapters (``shards.adapters``) do.
"""

from shards.batches import BatchIterator, Cursor
from shards.errors import (
    ActlakeError,
    ConfigError,
    CorruptDataError,
    DatasetExistsError,
    DatasetLockedError,
    DatasetNotFoundError,
    JobMismatchError,
    SchemaMismatchError,
    StorageError,
    UnknownHookError,
    UnsupportedDtypeError,
)
from shards.manifest import DatasetRef, Manifest, ModelInfo, Provenance, SkippedInput, UnitEntry
from shards.reader import Dataset, open_dataset
from shards.schema import HookSpec
from shards.stats import HookStats
from shards.storage import StorageOptions
from shards.unit_writer import UnitWriter
from shards.verify import VerifyReport, verify_dataset
from shards.writer import DatasetWriter, create_dataset


def __getattr__(name: str):
    if name == "ActivationIterableDataset":  # imports torch.utils.data: only when asked for
        from shards.adapters.torch import ActivationIterableDataset

        return ActivationIterableDataset
    raise AttributeError(f"module 'shards' has no attribute {name!r}")


__all__ = [
    "ActivationIterableDataset", "ActlakeError", "BatchIterator", "ConfigError", "CorruptDataError", "Cursor",
    "Dataset",
    "DatasetExistsError", "DatasetLockedError", "DatasetNotFoundError", "DatasetRef", "DatasetWriter", "HookSpec",
    "HookStats", "JobMismatchError", "Manifest", "ModelInfo", "Provenance", "SchemaMismatchError", "SkippedInput",
    "StorageError", "StorageOptions", "UnitEntry", "UnitWriter", "UnknownHookError", "UnsupportedDtypeError",
    "VerifyReport", "create_dataset", "open_dataset", "verify_dataset",
]
