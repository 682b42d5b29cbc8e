"""Token-level datasets with planted structure for the probe tests: which hooks carry a label is known."""

from __future__ import annotations

import numpy as np

import shards

CLASSES = ["a", "b", "c"]


def planted_probe_dataset(path: str, examples: int = 300, tokens: int = 6, d: int = 16, decodable=("resid.2",
                          "resid.3"), layers: int = 4, seed: int = 0, leak: bool = False, dtype: str = "float16",
                          storage_options=None, units: int = 4):
    """Hooks ``embed``, ``resid.0`` .. ``resid.{layers-1}``: in ``decodable`` hooks every token of an example
    carries its example's class direction (signal 3 x noise); elsewhere pure noise. Columns: ``label`` (class,
    per example), ``score`` (a float decodable linearly from the ``decodable`` hooks), ``tok_parity`` (token-level:
    position % 2, planted in the ``decodable`` hooks), ``row_id`` (unique per row).

    ``leak``: labels are random per example and every hook holds a random per-example vector shared by its
    tokens, so only a probe that sees an example's tokens in training can "decode" its label.
    Returns the dataset and the per-example labels.
    """
    rng = np.random.default_rng(seed)
    hooks = ["embed", *[f"resid.{i}" for i in range(layers)]]
    labels = rng.integers(0, len(CLASSES), examples)
    dirs = rng.standard_normal((len(CLASSES), d)) * 3
    parity_dir = rng.standard_normal(d) * 3
    score_w = rng.standard_normal(d)
    example_vec = rng.standard_normal((examples, d)) * 3
    n = examples * tokens
    ex = np.repeat(np.arange(examples), tokens)
    pos = np.tile(np.arange(tokens), examples).astype(np.int32)
    token_id = rng.integers(0, 50, n).astype(np.int32)
    acts = {}
    for h in hooks:
        x = rng.standard_normal((n, d))
        if leak:
            x += example_vec[ex]
        elif h in decodable:
            x += dirs[labels[ex]] + parity_dir * (pos % 2)[:, None]
        acts[h] = (x + 1.5).astype(dtype)  # an offset, so standardisation matters
    score = (acts[decodable[0]].astype(np.float64) - 1.5) @ score_w + rng.standard_normal(n) * 0.5
    per_example_score = np.bincount(ex, weights=score) / tokens
    cols = {"label": np.array([CLASSES[i] for i in labels[ex]], dtype=object), "score": per_example_score[ex],
            "tok_parity": (pos % 2).astype(np.int64), "row_id": np.arange(n, dtype=np.int64)}
    spec = {h: {"shape": [d], "dtype": dtype} for h in hooks}
    bounds = np.linspace(0, examples, units + 1).astype(int)
    with shards.create_dataset(path, spec, columns={"label": "string", "score": "float64", "tok_parity": "int64",
                                                    "row_id": "int64"}, storage_options=storage_options) as w:
        for u in range(units):
            sel = slice(bounds[u] * tokens, bounds[u + 1] * tokens)
            w.write_unit(u, {"example_id": ex[sel].astype(np.int64), "position": pos[sel], "token_id": token_id[sel],
                             **{c: v[sel] for c, v in cols.items()}, **{h: x[sel] for h, x in acts.items()}})
    return shards.open_dataset(path, storage_options), labels
