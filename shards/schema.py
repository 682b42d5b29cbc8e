"""The Arrow/Parquet schema of a dataset: fixed columns, metadata columns, tensor columns."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from shards.dtypes import LIST_VALUE_TYPES, STORAGE_DTYPES, check_dtype
from shards.errors import SchemaMismatchError, UnknownHookError

#: columns every dataset has, in this order, before metadata and tensors
FIXED_COLUMNS: dict[str, str] = {"example_id": "int64", "position": "int32", "token_id": "int32"}
ENCODINGS = ("binary", "list")
COMPRESSIONS = ("none", "lz4", "zstd")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
}


def arrow_type(name: str) -> pa.DataType:
    try:
        return _ARROW_TYPES[name]
    except KeyError:
        raise SchemaMismatchError(
            f"unsupported metadata column type {name!r}; use one of {sorted(_ARROW_TYPES)}"
        ) from None


def infer_column_type(values) -> str:
    """Metadata column type name for an array of values (numpy, torch or list)."""
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        return "string"
    if arr.dtype.kind == "b":
        return "bool"
    if arr.dtype.name in _ARROW_TYPES:
        return arr.dtype.name
    raise SchemaMismatchError(f"cannot store a metadata column of numpy dtype {arr.dtype}")


@dataclass(frozen=True)
class HookSpec:
    """One tensor column: name, per-row shape, stored dtype, encoding."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str = "binary"
    module: str | None = None  #: the model module the hook reads, when known

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def row_bytes(self) -> int:
        return self.numel * STORAGE_DTYPES[self.dtype].itemsize

    def arrow_field(self) -> pa.Field:
        meta = {
            b"actlake.dtype": self.dtype.encode(),
            b"actlake.shape": json.dumps(list(self.shape)).encode(),
            b"actlake.encoding": self.encoding.encode(),
        }
        if self.encoding == "binary":
            typ = pa.binary(self.row_bytes)
        else:
            typ = pa.list_(pa.field("item", LIST_VALUE_TYPES[self.dtype], nullable=False), self.numel)
        return pa.field(self.name, typ, nullable=False, metadata=meta)

    def to_json(self) -> dict:
        d = {"shape": list(self.shape), "dtype": self.dtype, "encoding": self.encoding,
             "row_bytes": self.row_bytes}
        if self.module:
            d["module"] = self.module
        return d


def parse_hooks(hooks: dict, default_encoding: str = "binary") -> dict[str, HookSpec]:
    """Validate ``{name: {"shape": [d], "dtype": "float16", ...}}`` into HookSpecs."""
    if not hooks:
        raise SchemaMismatchError(
            "a dataset needs at least one hook, e.g. hooks={'resid.3': {'shape': [768], 'dtype': 'float16'}}")
    out = {}
    for name, spec in hooks.items():
        if name in FIXED_COLUMNS:
            raise SchemaMismatchError(f"hook name {name!r} collides with a fixed column {list(FIXED_COLUMNS)}")
        if not isinstance(name, str) or not name:
            raise SchemaMismatchError(f"hook names must be non-empty strings, got {name!r}")
        if isinstance(spec, HookSpec):
            out[name] = spec
            continue
        shape = spec.get("shape")
        if isinstance(shape, int):
            shape = [shape]
        if not shape or any(int(s) <= 0 for s in shape):
            raise SchemaMismatchError(f"hook {name!r} needs a positive shape, e.g. [768]; got {shape!r}")
        enc = spec.get("encoding", default_encoding)
        if enc not in ENCODINGS:
            raise SchemaMismatchError(f"hook {name!r}: unknown encoding {enc!r}; use one of {ENCODINGS}")
        out[name] = HookSpec(name, tuple(int(s) for s in shape), check_dtype(spec.get("dtype", "float16")),
                             enc, spec.get("module"))
    return out


@dataclass
class DatasetSchema:
    """Everything a writer and a reader must agree on."""

    hooks: dict[str, HookSpec]
    columns: dict[str, str] = field(default_factory=dict)  #: metadata column -> type name

    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field("example_id", pa.int64(), nullable=False),
                  pa.field("position", pa.int32(), nullable=False),
                  pa.field("token_id", pa.int32(), nullable=True)]
        fields += [pa.field(n, arrow_type(t), nullable=True) for n, t in self.columns.items()]
        fields += [h.arrow_field() for h in self.hooks.values()]
        return pa.schema(fields)

    @property
    def row_bytes(self) -> int:
        return sum(h.row_bytes for h in self.hooks.values()) + 16 + 8 * len(self.columns)

    def to_json(self) -> dict:
        return {
            "hooks": {n: h.to_json() for n, h in self.hooks.items()},
            "columns": [{"name": n, "type": t} for n, t in FIXED_COLUMNS.items()]
            + [{"name": n, "type": t} for n, t in self.columns.items()],
        }

    @classmethod
    def from_json(cls, d: dict) -> DatasetSchema:
        hooks = {n: HookSpec(n, tuple(h["shape"]), h["dtype"], h.get("encoding", "binary"), h.get("module"))
                 for n, h in d["hooks"].items()}
        cols = {c["name"]: c["type"] for c in d["columns"] if c["name"] not in FIXED_COLUMNS}
        return cls(hooks, cols)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def check_same(self, other: DatasetSchema, where: str) -> None:
        """Raise a SchemaMismatchError describing every difference."""
        problems = []
        for n in sorted(set(self.hooks) | set(other.hooks)):
            a, b = self.hooks.get(n), other.hooks.get(n)
            if a is None:
                problems.append(f"hook {n!r} is not in the existing dataset")
            elif b is None:
                problems.append(f"hook {n!r} is missing from the new writer")
            elif (a.shape, a.dtype, a.encoding) != (b.shape, b.dtype, b.encoding):
                problems.append(f"hook {n!r}: existing {list(a.shape)} {a.dtype}/{a.encoding}, "
                                f"new {list(b.shape)} {b.dtype}/{b.encoding}")
        if other.columns and self.columns != other.columns:
            problems.append(f"metadata columns: existing {self.columns}, new {other.columns}")
        if problems:
            raise SchemaMismatchError(
                f"schema mismatch with the dataset at {where}: " + "; ".join(problems)
                + ". Write to a new URI, or use mode='overwrite' to replace the dataset."
            )

    def resolve_hooks(self, names, where: str = "this dataset") -> list[str]:
        """Check requested hook names; unknown ones get a list of the nearest valid names."""
        if names is None:
            return list(self.hooks)
        if isinstance(names, str):
            names = [names]
        for n in names:
            if n not in self.hooks:
                close = difflib.get_close_matches(n, list(self.hooks), n=3, cutoff=0.4)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise UnknownHookError(
                    f"unknown hook {n!r} in {where}.{hint} Hooks: {', '.join(self.hooks)}"
                )
        return list(names)
