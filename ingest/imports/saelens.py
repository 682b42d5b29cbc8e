"""SAELens' cached activations (what ``CacheActivationsRunner`` writes, a Hugging Face ``datasets`` folder): one
row per context window, an ``Array2D((context_size, d_in))`` column per hook and ``token_ids``. Imported as a
token-level dataset: ``example_id`` is the window's index, ``position`` the token's place in it, ``token_id``
from ``token_ids`` (null when the cache has none). An export of ours (``actlake_export.json`` beside the data)
is named in the provenance."""

from __future__ import annotations

import json

import numpy as np

from ingest.imports.source import FeatureImportError, FeatureSource, Layer, TokenRows
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.storage import Storage


def _open(src: str, storage_options: dict):
    import datasets

    try:
        return datasets.load_from_disk(src, storage_options=storage_options or None)
    except FileNotFoundError:
        raise FeatureImportError(f"SAELens cache: {src!r} is not a Hugging Face `save_to_disk` folder (no "
                                 "state.json / dataset_info.json); give the folder SAELens' "
                                 "CacheActivationsRunner wrote (its new_cached_activations_path)") from None


def _window_rows(hf, column: str, context: int):
    """(start, stop) token rows of ``column`` as ``(stop - start, d)`` numpy, reading only the windows they span."""
    view = hf.select_columns([column]).with_format("numpy")

    def rows(a: int, b: int) -> np.ndarray:
        s0, s1 = a // context, (b - 1) // context + 1
        x = np.asarray(view[s0:s1][column])
        return x.reshape(-1, x.shape[-1])[a - s0 * context:b - s0 * context]

    return rows


def load(src: str, storage_options: dict | None = None, **_) -> FeatureSource:
    import datasets

    hf = _open(src, storage_options or {})
    arrays = {n: f for n, f in hf.features.items() if isinstance(f, datasets.Array2D)}
    if not arrays:
        raise FeatureImportError(f"SAELens cache {src!r}: no Array2D activation column; columns: "
                                 f"{list(hf.features)}")
    contexts = {f.shape[0] for f in arrays.values()}
    if len(contexts) != 1:
        raise FeatureImportError(f"SAELens cache {src!r}: columns of different context sizes {sorted(contexts)}")
    context = contexts.pop()
    layers = {n: Layer(n, (int(f.shape[1]),), str(f.dtype), _window_rows(hf, n, context)) for n, f in arrays.items()}
    has_tokens = "token_ids" in hf.column_names
    tokens_view = hf.select_columns(["token_ids"]).with_format("numpy") if has_tokens else None

    def columns(a: int, b: int) -> dict[str, np.ndarray]:
        idx = np.arange(a, b, dtype=np.int64)
        out = {EXAMPLE_ID: idx // context, POSITION: (idx % context).astype(np.int32)}
        if tokens_view is not None:
            s0, s1 = a // context, (b - 1) // context + 1
            t = np.asarray(tokens_view[s0:s1]["token_ids"]).reshape(-1)
            out[TOKEN_ID] = t[a - s0 * context:b - s0 * context].astype(np.int32)
        return out

    provenance = {"layout": "saelens", "context_size": context, "windows": len(hf), "with_tokens": has_tokens}
    st = Storage(src, storage_options or {})
    if st.exists("actlake_export.json"):
        provenance["exported_from"] = json.loads(st.read_text("actlake_export.json")).get("source")
    return FeatureSource([], layers, {}, provenance, TokenRows(len(hf) * context, columns))
