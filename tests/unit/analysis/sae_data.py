"""Synthetic activations with a known dictionary: x = z D, z sparse and non-negative."""

from __future__ import annotations

import numpy as np

import shards


def synthetic_dictionary(path: str, d: int = 32, n_atoms: int = 64, k: int = 4, rows: int = 60000, seed: int = 0):
    """Write the dataset (hook ``x``, float32, 6 units) and return the true atoms (n_atoms, d)."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    z = np.zeros((rows, n_atoms))
    idx = np.argsort(rng.random((rows, n_atoms)), axis=1)[:, :k]
    np.put_along_axis(z, idx, rng.uniform(0.5, 1.5, (rows, k)), axis=1)
    x = (z @ atoms).astype(np.float32)
    per = rows // 6
    with shards.create_dataset(path, {"x": {"shape": [d], "dtype": "float32"}}) as w:
        for u in range(6):
            w.write_unit(u, {"example_id": np.arange(u * per, (u + 1) * per), "x": x[u * per:(u + 1) * per]})
    return atoms


def mean_best_cosine(true_atoms: np.ndarray, learned: np.ndarray) -> float:
    learned = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    return float((true_atoms @ learned.T).max(1).mean())
