"""actlake's dataset format: sharded Parquet activation datasets on any fsspec storage.

Example::

    import shards
    w = shards.create_dataset("/tmp/acts", hooks={"resid.3": {"shape": [384], "dtype": "float16"}})
    w.write_unit(0, {"example_id": ids, "position": pos, "resid.3": acts})
    w.close()
    ds = shards.open_dataset("/tmp/acts")
"""

from shards.adapters import ActivationIterableDataset
from shards.errors import (
    ActlakeError,
    DatasetExistsError,
    DatasetLockedError,
    DatasetNotFoundError,
    SchemaMismatchError,
    StorageError,
    UnknownHookError,
    UnsupportedDtypeError,
)
from shards.reader import BatchIterator, Dataset, open_dataset
from shards.stats import HookStats
from shards.unit_writer import UnitWriter
from shards.verify import VerifyReport, verify_dataset
from shards.writer import DatasetWriter, create_dataset

__all__ = [
    "ActivationIterableDataset", "ActlakeError", "BatchIterator", "Dataset", "DatasetExistsError",
    "DatasetLockedError", "DatasetNotFoundError", "DatasetWriter", "HookStats", "SchemaMismatchError",
    "StorageError", "UnitWriter", "UnknownHookError", "UnsupportedDtypeError", "VerifyReport",
    "create_dataset", "open_dataset", "verify_dataset",
]
