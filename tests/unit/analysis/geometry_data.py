"""A token-level dataset with planted geometry for the stats tests: what each statistic must find is known.

- ``embed`` = x0, ``resid.0`` = 2·x0, ``resid.1`` = 4·x0, ``resid.2`` = 8·x0 + a class shift + a massive entry,
  ``resid.3`` = ``resid.2`` (a layer that changes nothing: a void for every token), where x0 lies on a
  3-dimensional affine subspace (uniform in a cube): rank 3, intrinsic dimension 3.
- ``attn.1`` + ``mlp.1`` = ``resid.1`` − ``resid.0`` (so ‖a + m‖/‖h‖ = 1 and cos(h, a + m) = 1 for block 1).
- ``resid.2``: dimension ``MASSIVE_DIM`` is ``MASSIVE_VALUE`` at position 0, whose token is ``MASSIVE_TOKEN``.
- ``mlp_hidden.1``: a ReLU of Gaussian values (half the entries non-positive).
- ``label``: 3 classes per example, separated only from ``resid.2`` on.
"""

from __future__ import annotations

import numpy as np

import shards

MASSIVE_DIM, MASSIVE_VALUE, MASSIVE_TOKEN = 7, 500.0, 3
CLASSES = ["x", "y", "z"]


def planted_geometry_arrays(examples: int = 200, tokens: int = 6, d: int = 16, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = examples * tokens
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0].T  # 3 orthonormal rows
    offset = rng.standard_normal(d)
    offset *= 3 / np.linalg.norm(offset)
    x0 = rng.uniform(-1, 1, (n, 3)) @ basis + offset
    ex = np.repeat(np.arange(examples), tokens)
    pos = np.tile(np.arange(tokens), examples).astype(np.int32)
    labels = rng.integers(0, 3, examples)[ex]
    shift = rng.standard_normal((3, d)) * 20
    r = rng.standard_normal((n, d))
    resid2 = 8 * x0 + shift[labels]
    resid2[pos == 0, MASSIVE_DIM] = MASSIVE_VALUE
    token_id = rng.integers(10, 60, n).astype(np.int32)
    token_id[pos == 0] = MASSIVE_TOKEN
    return {
        "embed": x0, "resid.0": 2 * x0, "resid.1": 4 * x0, "resid.2": resid2, "resid.3": resid2.copy(),
        "attn.1": x0 + r, "mlp.1": x0 - r, "mlp_hidden.1": np.maximum(rng.standard_normal((n, 2 * d)), 0),
        "example_id": ex.astype(np.int64), "position": pos, "token_id": token_id,
        "label": np.array([CLASSES[i] for i in labels], dtype=object)}


def planted_geometry_dataset(path: str, dtype: str = "float32", units: int = 3, storage_options=None, **kw):
    """Write the planted dataset in ``units`` units; returns it opened."""
    arrays = planted_geometry_arrays(**kw)
    hooks = [k for k in arrays if k not in ("example_id", "position", "token_id", "label")]
    spec = {h: {"shape": [arrays[h].shape[1]], "dtype": dtype} for h in hooks}
    examples = int(arrays["example_id"].max()) + 1
    bounds = np.searchsorted(arrays["example_id"], np.linspace(0, examples, units + 1).astype(int))
    with shards.create_dataset(path, spec, columns={"label": "string"}, storage_options=storage_options) as w:
        for u in range(units):
            sel = slice(bounds[u], bounds[u + 1])
            w.write_unit(u, {k: (v[sel].astype(dtype) if k in hooks else v[sel]) for k, v in arrays.items()})
    return shards.open_dataset(path, storage_options)
