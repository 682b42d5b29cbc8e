"""thingsvision's layout: per layer one array of shape (n_stimuli, ...) — ``<layer>.npy``/``.pt`` files, or
``<layer>/features.npy`` folders as thingsvision's ``save_features`` writes them — and a list of stimuli
(``file_names.txt``, one image path per line, in row order; or ``--ids FILE``)."""

from __future__ import annotations

import io
import posixpath

import numpy as np

from ingest.imports.source import FeatureImportError, FeatureSource, Layer
from shards.storage import Storage

_ARRAYS = (".npy", ".pt", ".pth")


def _load_array(st: Storage, path: str) -> tuple[np.ndarray, str]:
    """The array and its dtype name ("bfloat16" arrays hold the raw 16-bit patterns as uint16)."""
    with st.fs.open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".npy"):
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
        return arr, arr.dtype.name
    import torch

    t = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # tensors only, no arbitrary pickle
    if not isinstance(t, torch.Tensor):
        raise FeatureImportError(f"{path}: expected one tensor, found {type(t).__name__}")
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
    arr = t.numpy()
    return arr, arr.dtype.name


def load(src: str, ids: str | None = None, storage_options: dict | None = None, **_) -> FeatureSource:
    st = Storage(src, storage_options or {})
    if not st.fs.isdir(st.root):
        raise FeatureImportError(f"thingsvision features: {src!r} is not a folder (looked at {st.display()})")
    root = st.root.rstrip("/")
    arrays: dict[str, str] = {}
    for p in sorted(st.fs.ls(root, detail=False)):
        base = posixpath.basename(p)
        if base.endswith(_ARRAYS):
            arrays[posixpath.splitext(base)[0]] = p
        elif st.fs.isdir(p):
            inner = [q for q in sorted(st.fs.ls(p, detail=False)) if q.endswith(_ARRAYS)]
            if len(inner) == 1:
                arrays[base] = inner[0]
    if not arrays:
        raise FeatureImportError(f"thingsvision features: no .npy/.pt arrays in {st.display()} (expected <layer>.npy "
                           "files or <layer>/features.npy folders)")
    id_file = ids or posixpath.join(root, "file_names.txt")
    id_st = Storage(id_file, storage_options or {}) if ids else st
    id_path = id_st.root if ids else id_file
    if not id_st.fs.exists(id_path):
        raise FeatureImportError(f"thingsvision features: no list of stimuli (looked for {id_path}); give --ids FILE "
                           "with one stimulus (image path or id) per line, in row order")
    with id_st.fs.open(id_path, "r") as f:
        lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    stim_ids = [posixpath.splitext(posixpath.basename(ln))[0] for ln in lines]
    layers = {}
    for name, path in arrays.items():
        arr, dtype = _load_array(st, path)
        if arr.shape[0] != len(stim_ids):
            raise FeatureImportError(f"layer {name!r} ({path}) has {arr.shape[0]} rows but the id list {id_path} has "
                               f"{len(stim_ids)} entries: they must match one to one")
        layers[name] = Layer(name, tuple(int(s) for s in arr.shape[1:]), dtype,
                             lambda a, b, arr=arr: arr[a:b])
    prov = {"layout": "thingsvision", "ids_file": id_path, "layers": {k: posixpath.basename(v) for k, v in
                                                                        arrays.items()}}
    return FeatureSource(stim_ids, layers, {"source_path": lines}, prov)
