"""Merged streaming statistics equal a direct computation over all rows."""

from __future__ import annotations

import numpy as np
import torch

import shards
from shards.stats import HookStats
from tests.helpers import stats_file


def test_merge_equals_direct_any_split():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 6)) * 5 + 100  # offset: a naive sum-of-squares would lose digits
    direct = HookStats.from_rows(torch.from_numpy(x))
    for cuts in ([500], [1, 2, 999], [10, 400, 401, 800]):
        parts = np.split(x, cuts)
        merged = HookStats.empty(6)
        for p in reversed(parts):
            merged = merged.merge(HookStats.from_rows(torch.from_numpy(p)))
        assert merged.count == 1000
        np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(merged.var, x.var(0), rtol=1e-9)
        np.testing.assert_allclose(merged.mean_norm, np.linalg.norm(x, axis=1).mean(), rtol=1e-12)
        assert merged.max_abs == np.abs(x).max() == direct.max_abs


def test_dataset_stats_match_numpy(tmp_path):
    hooks = {"a": {"shape": [3, 5], "dtype": "float16"}, "b": {"shape": [7], "dtype": "bfloat16"}}
    rng = np.random.default_rng(1)
    uri = str(tmp_path / "ds")
    with shards.create_dataset(uri, hooks) as w:
        for u in range(5):
            n = int(rng.integers(10, 60))
            w.write_unit(u, {"example_id": np.arange(n) + 100 * u,
                             "a": (rng.standard_normal((n, 3, 5)) * 2 + 1).astype(np.float16),
                             "b": torch.from_numpy(rng.standard_normal((n, 7)).astype(np.float32)).bfloat16()})
    ds = shards.open_dataset(uri)
    for h in hooks:
        x = ds.to_numpy(h).astype(np.float64).reshape(ds.num_rows, -1)
        s = ds.stats(h)
        assert s.count == ds.num_rows
        # per-chunk reductions run in float32 (see HookStats.from_rows): ~1e-7 relative
        np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-6, atol=1e-6 * np.abs(x).max())
        np.testing.assert_allclose(s.var, x.var(0), rtol=1e-5)
        np.testing.assert_allclose(s.mean_norm, np.linalg.norm(x, axis=1).mean(), rtol=1e-6)
        assert s.max_abs == np.abs(x).max()
        assert ds.manifest.stats[h].count == ds.num_rows
        assert abs(ds.manifest.stats[h].mean_norm - s.mean_norm) < 1e-9  # same merged value


def test_stats_rebuilt_after_resume(tmp_path):
    """Stats survive a resume: the merged file is rebuilt from commit records if stale."""
    hooks = {"a": {"shape": [4], "dtype": "float32"}}
    uri = str(tmp_path / "ds")
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((20, 4)).astype(np.float32) for _ in range(3)]
    with shards.create_dataset(uri, hooks) as w:
        w.write_unit(0, {"example_id": np.arange(20), "a": xs[0]})
        w.write_unit(1, {"example_id": np.arange(20, 40), "a": xs[1]})
    stats_file(tmp_path / "ds", "a").unlink()  # as if the writer died before writing it
    with shards.create_dataset(uri, hooks, mode="append") as w:
        w.write_unit(2, {"example_id": np.arange(40, 60), "a": xs[2]})
    s = shards.open_dataset(uri).stats("a")
    np.testing.assert_allclose(s.mean, np.concatenate(xs).astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    assert s.count == 60
