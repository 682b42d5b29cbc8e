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


def _load_array(st: Storage, rel: str) -> tuple[np.ndarray, str]:
    """The array and its dtype name ("bfloat16" arrays hold the raw 16-bit patterns as uint16)."""
    raw = st.get_bytes(rel)
    if rel.endswith(".npy"):
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
        return arr, arr.dtype.name
    import torch

    t = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # tensors only, no arbitrary pickle
    if not isinstance(t, torch.Tensor):
        raise FeatureImportError(f"{st.display(rel)}: expected one tensor, found {type(t).__name__}")
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
    arr = t.numpy()
    return arr, arr.dtype.name


def _layer_arrays(st: Storage) -> dict[str, str]:
    """Layer name -> its array (relative to the folder): ``<layer>.npy`` files and ``<layer>/features.npy``
    folders (a folder counts when it holds exactly one array)."""
    arrays: dict[str, str] = {}
    for path in st.ls():
        base, rel = posixpath.basename(path.rstrip("/")), st.rel(path)
        if base.endswith(_ARRAYS):
            arrays[posixpath.splitext(base)[0]] = rel
        elif st.is_dir(rel):
            inner = [q for q in st.ls(rel) if q.endswith(_ARRAYS)]
            if len(inner) == 1:
                arrays[base] = st.rel(inner[0])
    if not arrays:
        raise FeatureImportError(f"thingsvision features: no .npy/.pt arrays in {st.display()} (expected <layer>.npy "
                                 "files or <layer>/features.npy folders)")
    return arrays


def _stimulus_list(st: Storage, ids: str | None, storage_options: dict | None) -> tuple[list[str], str]:
    """The stimuli in row order (one path or id per line) and where the list was read."""
    id_st, rel = (Storage(ids, storage_options or {}), "") if ids else (st, "file_names.txt")
    try:
        text = id_st.read_text(rel)
    except FileNotFoundError:
        raise FeatureImportError(f"thingsvision features: no list of stimuli (looked for {id_st.display(rel)}); give "
                                 "--ids FILE with one stimulus (image path or id) per line, in row order") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()], id_st.display(rel)


def load(src: str, ids: str | None = None, storage_options: dict | None = None, **_) -> FeatureSource:
    st = Storage(src, storage_options or {})
    if not st.is_dir():
        raise FeatureImportError(f"thingsvision features: {src!r} is not a folder (looked at {st.display()})")
    arrays = _layer_arrays(st)
    lines, id_where = _stimulus_list(st, ids, storage_options)
    stim_ids = [posixpath.splitext(posixpath.basename(ln))[0] for ln in lines]
    layers = {}
    for name, rel in arrays.items():
        arr, dtype = _load_array(st, rel)
        if arr.shape[0] != len(stim_ids):
            raise FeatureImportError(f"layer {name!r} ({st.display(rel)}) has {arr.shape[0]} rows but the id list "
                                     f"{id_where} has {len(stim_ids)} entries: they must match one to one")
        layers[name] = Layer(name, tuple(int(s) for s in arr.shape[1:]), dtype, lambda a, b, arr=arr: arr[a:b])
    prov = {"layout": "thingsvision", "ids_file": id_where,
            "layers": {k: posixpath.basename(v) for k, v in arrays.items()}}
    return FeatureSource(stim_ids, layers, {"source_path": lines}, prov)
