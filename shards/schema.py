"""The columns of a dataset: the fixed columns, metadata columns and their types, tensor columns (hooks)."""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import math
import re
from dataclasses import dataclass, field

import pyarrow as pa

from shards.codecs import get_codec
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.dtypes import DTYPES, as_numpy, check_dtype
from shards.errors import SchemaMismatchError, UnknownHookError
from shards.layout import check_name

#: the columns every dataset has, in this order, before metadata and tensors (name -> type; names: shards.columns)
FIXED_COLUMNS: dict[str, str] = {EXAMPLE_ID: "int64", POSITION: "int32", TOKEN_ID: "int32"}
#: fixed columns that may hold nulls (token_id is null for images and pooled rows)
NULLABLE_FIXED = frozenset({TOKEN_ID})
#: what a reader gives for a null in an integer column
INT_NULL = -1

COLUMN_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
}


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type of a metadata column type name."""
    try:
        return COLUMN_TYPES[name]
    except KeyError:
        raise SchemaMismatchError(f"unsupported metadata column type {name!r}; "
                                  f"use one of {sorted(COLUMN_TYPES)}") from None


def column_type_of_arrow(typ: pa.DataType) -> str | None:
    """The metadata type name of an Arrow type (large strings are strings); None when it cannot be stored."""
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    return next((name for name, t in COLUMN_TYPES.items() if t == typ), None)


def infer_column_type(values, name: str = "column") -> str:
    """The metadata type of a column of values (numpy array, torch tensor or list; None for missing).

    Arrow infers it, so every caller (the writer, corpora, image sources, imports) agrees on it.
    """
    data = values if isinstance(values, list) else as_numpy(values)
    try:
        typ = pa.array(data).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatchError(f"metadata column {name!r} cannot be stored: {exc}. Only scalar strings, numbers "
                                  "and booleans can be carried") from None
    out = column_type_of_arrow(typ)
    if out is None:
        raise SchemaMismatchError(f"metadata column {name!r} holds {typ}; only scalar strings, numbers and booleans "
                                  f"can be carried (types: {sorted(COLUMN_TYPES)})")
    return out


def natural_key(name: str) -> list:
    """Sort key that orders numbered names by number: resid.2 before resid.10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class HookSpec:
    """One tensor column: name, per-row shape, stored dtype, encoding, and the model module it reads."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str = "binary"
    module: str | None = None

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def row_bytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize

    def arrow_field(self) -> pa.Field:
        meta = {b"actlake.dtype": self.dtype.encode(), b"actlake.shape": json.dumps(list(self.shape)).encode(),
                b"actlake.encoding": self.encoding.encode()}
        return pa.field(self.name, get_codec(self.encoding).arrow_type(self), nullable=False, metadata=meta)

    def to_json(self) -> dict:
        d = {"shape": list(self.shape), "dtype": self.dtype, "encoding": self.encoding, "row_bytes": self.row_bytes}
        if self.module:
            d["module"] = self.module
        return d

    @classmethod
    def from_json(cls, name: str, d: dict) -> HookSpec:
        return cls(name=name, shape=tuple(int(s) for s in d["shape"]), dtype=d["dtype"],
                   encoding=d.get("encoding", "binary"), module=d.get("module"))

    @classmethod
    def parse(cls, name: str, spec: dict | HookSpec, default_encoding: str = "binary") -> HookSpec:
        """Check a user's ``{"shape": [768], "dtype": "float16", ...}``; a clear error naming the problem."""
        if not isinstance(name, str) or not name:
            raise SchemaMismatchError(f"hook names must be non-empty strings, got {name!r}")
        if name in FIXED_COLUMNS:
            raise SchemaMismatchError(f"hook name {name!r} collides with a fixed column {list(FIXED_COLUMNS)}")
        if isinstance(spec, HookSpec):
            return spec
        shape = spec.get("shape")
        shape = [shape] if isinstance(shape, int) else shape
        if not shape or any(int(s) <= 0 for s in shape):
            raise SchemaMismatchError(f"hook {name!r} needs a positive shape, e.g. [768]; got {shape!r}")
        encoding = spec.get("encoding", default_encoding)
        get_codec(encoding)
        return cls(name=name, shape=tuple(int(s) for s in shape), dtype=check_dtype(spec.get("dtype", "float16")),
                   encoding=encoding, module=spec.get("module"))


def parse_hooks(hooks: dict, default_encoding: str = "binary") -> dict[str, HookSpec]:
    """``{name: {"shape": [d], "dtype": "float16", ...}}`` (or HookSpecs) checked into HookSpecs."""
    if not hooks:
        raise SchemaMismatchError(
            "a dataset needs at least one hook, e.g. hooks={'resid.3': {'shape': [768], 'dtype': 'float16'}}")
    return {name: HookSpec.parse(name, spec, default_encoding) for name, spec in hooks.items()}


@dataclass
class DatasetSchema:
    """Everything a writer and a reader must agree on."""

    hooks: dict[str, HookSpec]
    columns: dict[str, str] = field(default_factory=dict)  #: metadata column -> type name

    def __post_init__(self) -> None:
        # Names become file names (stats/<hook>.npz) and Parquet columns: checked here, so that neither a
        # user's hook nor a hostile manifest can name a path outside the dataset or shadow another column.
        for name in self.hooks:
            try:
                check_name("hook", name)
            except ValueError as exc:
                raise SchemaMismatchError(str(exc)) from None
        for name in self.columns:
            try:
                check_name("metadata column", name)
            except ValueError as exc:
                raise SchemaMismatchError(str(exc)) from None
            if name in FIXED_COLUMNS or name in self.hooks:
                what = "a fixed column" if name in FIXED_COLUMNS else "a hook"
                raise SchemaMismatchError(f"metadata column {name!r} has the name of {what}; rename it "
                                          f"(fixed columns: {list(FIXED_COLUMNS)}, hooks: {list(self.hooks)})")

    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(n, arrow_type(t), nullable=n in NULLABLE_FIXED) for n, t in FIXED_COLUMNS.items()]
        fields += [pa.field(n, arrow_type(t), nullable=True) for n, t in self.columns.items()]
        fields += [h.arrow_field() for h in self.hooks.values()]
        return pa.schema(fields)

    @property
    def column_names(self) -> list[str]:
        """Non-tensor columns: the fixed ones, then the metadata columns."""
        return [*FIXED_COLUMNS, *self.columns]

    @property
    def row_bytes(self) -> int:
        return sum(h.row_bytes for h in self.hooks.values()) + 16 + 8 * len(self.columns)

    def to_json(self) -> dict:
        return {"hooks": {n: h.to_json() for n, h in self.hooks.items()},
                "columns": [{"name": n, "type": t} for n, t in {**FIXED_COLUMNS, **self.columns}.items()]}

    @classmethod
    def from_json(cls, d: dict) -> DatasetSchema:
        hooks = {n: HookSpec.from_json(n, h) for n, h in d["hooks"].items()}
        return cls(hooks=hooks, columns={c["name"]: c["type"] for c in d["columns"] if c["name"] not in FIXED_COLUMNS})

    def fingerprint(self) -> str:
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
            raise SchemaMismatchError(f"schema mismatch with the dataset at {where}: " + "; ".join(problems)
                                      + ". Write to a new URI, or use mode='overwrite' to replace the dataset.")

    def resolve_hooks(self, names, where: str = "this dataset") -> list[str]:
        """Requested hook names (None: all); globs (``resid.*``) expand in layer order. Unknown names get the
        nearest valid ones in the error."""
        if names is None:
            return list(self.hooks)
        out: list[str] = []
        for n in [names] if isinstance(names, str) else names:
            hits = ([h for h in sorted(self.hooks, key=natural_key) if fnmatch.fnmatchcase(h, n)]
                    if any(c in n for c in "*?[") else [n] if n in self.hooks else [])
            if not hits:
                close = difflib.get_close_matches(n, list(self.hooks), n=3, cutoff=0.4)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise UnknownHookError(f"unknown hook {n!r} in {where}.{hint} Hooks: {', '.join(self.hooks)}")
            out += [h for h in hits if h not in out]
        return out

    def check_columns(self, columns, where: str = "this dataset") -> list[str]:
        """Requested non-tensor columns (None: all of them)."""
        if columns is None:
            return self.column_names
        unknown = [c for c in columns if c not in self.column_names]
        if unknown:
            raise UnknownHookError(f"unknown columns {unknown} in {where}; it has {self.column_names}")
        return list(columns)
