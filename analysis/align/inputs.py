"""Brain-side inputs: RDM files (.npz, .npy, .mat: one N × N RDM, subjects × N × N, or condensed), stimulus id
lists, and response tables (Parquet / CSV / NPZ keyed by stimulus id) — read from any URI and checked before
any hook is read."""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis.align.vectors import RdmError, asymmetry, check_rdm_stack
from analysis.common.tables import read_table
from shards.columns import STIMULUS_ID
from shards.errors import ActlakeError
from shards.storage import Storage, StorageOptions


class BrainInputError(ActlakeError, ValueError):
    """A brain file cannot be used as given."""


@dataclass
class BrainTarget:
    """One ``--brain`` file: its name, subjects × N × N RDMs and the subjects' names."""

    name: str
    rdms: np.ndarray
    subjects: list[str]
    source: str


def _read_bytes(uri: str, storage: StorageOptions | dict | None) -> tuple[bytes, str]:
    st, name = Storage.for_file(uri, storage)
    try:
        return st.get_bytes(name), st.display(name)
    except FileNotFoundError:
        raise BrainInputError(f"{st.display(name)} does not exist") from None


def _split_key(uri: str) -> tuple[str, str | None]:
    """``file.npz:key`` / ``file.mat:var`` -> (file, key)."""
    base = uri.rsplit("/", 1)[-1]
    if ":" in base:
        head, key = uri.rsplit(":", 1)
        return head, key
    return uri, None


def _mat_arrays(data: bytes, shown: str) -> dict[str, tuple[np.ndarray, list[str] | None]]:
    """Numeric variables of a .mat file; a MATLAB struct array with an ``RDM`` field (rsatoolbox / the RSA
    toolbox layout) becomes a stack, with its ``name`` fields as subject names."""
    import scipy.io as sio

    m = sio.loadmat(io.BytesIO(data))
    out = {}
    for k, v in m.items():
        if k.startswith("__") or not isinstance(v, np.ndarray):
            continue
        if v.dtype.names and "RDM" in v.dtype.names:
            cells = v.reshape(-1, order="F")  # MATLAB order: subject fastest
            stack = np.stack([np.asarray(c["RDM"], dtype=np.float64).squeeze() for c in cells])
            names = [str(np.asarray(c["name"]).squeeze()) if "name" in v.dtype.names else str(i)
                     for i, c in enumerate(cells)]
            out[k] = (stack, names)
        elif v.dtype.kind in "fiu" and v.ndim >= 2:
            out[k] = (v.astype(np.float64), None)
    if not out:
        raise BrainInputError(f"{shown}: no numeric array or RDM struct in the .mat file")
    return out


def _arrays(data: bytes, suffix: str, shown: str) -> dict[str, tuple[np.ndarray, list[str] | None]]:
    if suffix == ".npy":
        return {"": (np.load(io.BytesIO(data), allow_pickle=False), None)}
    if suffix == ".npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: (z[k], None) for k in z.files}
    if suffix == ".mat":
        return _mat_arrays(data, shown)
    raise BrainInputError(f"{shown}: RDM files are .npz, .npy or .mat")


def load_brain_rdms(uri: str, storage: StorageOptions | dict | None = None, subject_axis: int = 0) -> BrainTarget:
    """The RDM stack of one ``--brain`` entry (``file``, or ``file.npz:key`` / ``file.mat:variable`` when the
    file holds several arrays)."""
    path, key = _split_key(uri)
    data, shown = _read_bytes(path, storage)
    suffix = posixpath.splitext(path)[1].lower()
    arrays = _arrays(data, suffix, shown)
    if key is None and len(arrays) > 1:
        raise BrainInputError(f"{shown} holds several arrays ({', '.join(arrays)}); name one: {path}:KEY")
    if key is not None and key not in arrays:
        raise BrainInputError(f"{shown} has no array {key!r}; it has {', '.join(arrays)}")
    arr, names = arrays[key] if key is not None else next(iter(arrays.values()))
    arr = np.asarray(arr, dtype=np.float64).squeeze() if arr.ndim > 3 else np.asarray(arr, dtype=np.float64)
    if subject_axis and arr.ndim == 3:
        arr = np.moveaxis(arr, subject_axis, 0)
    stack = check_rdm_stack(arr, shown)
    if asymmetry(stack) > 1e-6:
        raise RdmError(f"{shown}: the RDMs are not symmetric (largest |d_ij - d_ji| is {asymmetry(stack):.3g} of "
                       "the largest dissimilarity); an RDM must be symmetric with a zero diagonal")
    name = posixpath.splitext(posixpath.basename(path))[0] + (f":{key}" if key else "")
    subjects = names if names and len(names) == len(stack) else [str(i) for i in range(len(stack))]
    return BrainTarget(name, stack, subjects, shown)


def read_ids(uri: str, storage: StorageOptions | dict | None = None) -> list[str]:
    """Stimulus ids in RDM order: a text file (one per line), .npy, or a table with a ``stimulus_id`` column."""
    suffix = posixpath.splitext(uri)[1].lower()
    if suffix in (".parquet", ".pq", ".csv", ".jsonl", ".json"):
        t = read_table(uri, storage)
        col = STIMULUS_ID if STIMULUS_ID in t.column_names else t.column_names[0]
        return [str(v) for v in t.column(col).to_pylist()]
    data, shown = _read_bytes(uri, storage)
    if suffix == ".npy":
        return [str(v) for v in np.load(io.BytesIO(data), allow_pickle=False).tolist()]
    return [line.strip() for line in data.decode().splitlines() if line.strip()]


@dataclass
class Responses:
    """Response table: stimulus ids, target names, stimuli × targets values (float32)."""

    ids: list[str]
    targets: list[str]
    values: np.ndarray


def read_responses(uri: str, storage: StorageOptions | dict | None = None, id_column: str = STIMULUS_ID
                   ) -> Responses:
    """Responses keyed by stimulus id: a Parquet/CSV table with an id column and one column per target, or an
    NPZ with ``responses`` (stimuli × targets), ``stimulus_id`` and optional ``targets``."""
    suffix = posixpath.splitext(uri)[1].lower()
    if suffix == ".npz":
        data, shown = _read_bytes(uri, storage)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if "responses" not in z.files or id_column not in z.files:
                raise BrainInputError(f"{shown}: an NPZ of responses needs arrays 'responses' (stimuli x targets) "
                                      f"and {id_column!r}; it has {z.files}")
            values = np.asarray(z["responses"], dtype=np.float32)
            values = values[:, None] if values.ndim == 1 else values.reshape(len(values), -1)
            targets = [str(t) for t in z["targets"]] if "targets" in z.files else [str(i) for i in
                                                                                   range(values.shape[1])]
            return Responses([str(v) for v in z[id_column]], targets, values)
    t = read_table(uri, storage)
    if id_column not in t.column_names:
        raise BrainInputError(f"{uri}: no {id_column!r} column (columns: {t.column_names[:10]})")
    targets = [c for c in t.column_names if c != id_column]
    if not targets:
        raise BrainInputError(f"{uri}: no response columns beside {id_column!r}: give one numeric column per target "
                              "(voxel, unit, feature)")
    other = [f"{c} ({t.schema.field(c).type})" for c in targets
             if not (pa.types.is_integer(t.schema.field(c).type) or pa.types.is_floating(t.schema.field(c).type))]
    if other:
        raise BrainInputError(f"{uri}: response columns must be numbers; {other[:5]} are not. Drop them from the "
                              "table (metadata belongs in the dataset, or in --ids)")
    values = np.stack([t.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in targets], axis=1)
    return Responses([str(v) for v in t.column(id_column).to_pylist()], targets, values)
