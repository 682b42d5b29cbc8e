"""Statistics stored in proportion to what changed (issue 38, item 2): statistics files are written every
``STATS_EVERY`` units added (and with every checkpoint, and after a removal or a rewrite); a version between names
the units added since, whose own statistics (in their files' footers) readers merge in. Checked here: the
statistics of every kept version equal a recomputation from that version's rows, across writer sessions, drops of
everything, rewrites, checkpoints and vacuum; and what the statistics keep grows with the files written, not the
versions."""

from __future__ import annotations

import numpy as np
import pytest

import shards
import shards.versionlog
import shards.writer
from shards.versions import vacuum, versions
from tests.helpers import HOOKS, unit_columns


def _recomputed(uri: str, version: int, hook: str) -> tuple[int, np.ndarray, np.ndarray]:
    ds = shards.open_dataset(uri, version=version)
    if not ds.num_rows:
        return 0, np.zeros(0), np.zeros(0)
    x = ds.take(np.arange(ds.num_rows))[hook].float().numpy().reshape(ds.num_rows, -1).astype(np.float64)
    return len(x), x.mean(axis=0), x.var(axis=0)


def _check_every_version(uri: str) -> int:
    checked = 0
    for info in versions(uri):
        ds = shards.open_dataset(uri, version=info.version)
        for hook in ("resid.0", "mlp.0"):
            n, mean, var = _recomputed(uri, info.version, hook)
            if not n:  # no unit: no statistics files, or (all dropped) ones of no row, never an earlier version's
                assert not ds.manifest.stats_files or ds.stats(hook).count == 0, info.version
                continue
            s = ds.stats(hook)
            assert s.count == n, (info.version, hook)
            np.testing.assert_allclose(s.mean, mean, rtol=1e-6, atol=1e-7, err_msg=f"v{info.version} {hook}")
            np.testing.assert_allclose(s.var, var, rtol=1e-5, atol=1e-7, err_msg=f"v{info.version} {hook}")
            assert ds.manifest.stats[hook].count == n  # the summary the version records agrees
        checked += 1
    return checked


def test_statistics_of_every_kept_version_equal_a_recomputation(tmp_path, monkeypatch):
    monkeypatch.setattr(shards.writer, "STATS_EVERY", 3)  # files every 3 units: every path is taken often
    monkeypatch.setattr(shards.versionlog, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(shards.versionlog, "CHECKPOINT_MAX", 6)
    monkeypatch.setattr(shards.versionlog, "LEAF_MIN", 4)
    uri = str(tmp_path / "ds")
    rng = np.random.default_rng(1)
    next_id = 0
    for session in range(6):  # writer sessions: each opens from what the last one left (pending units included)
        with shards.create_dataset(uri, HOOKS, mode="append", commit_interval=0) as w:
            for _step in range(int(rng.integers(2, 7))):
                op = rng.choice(["add", "add", "add", "rewrite", "drop"])
                ids = sorted(w.committed_units)
                if op == "add" or not ids:
                    w.write_unit(next_id, unit_columns(next_id, int(rng.integers(1, 6)), seed=session))
                    next_id += 1
                elif op == "rewrite":
                    uid = int(rng.choice(ids))
                    w.write_unit(uid, unit_columns(uid, 3, seed=100 + session))
                else:
                    w.drop_units([int(rng.choice(ids))])
            if session == 3:
                w.drop_units(sorted(w.committed_units))  # everything: the next units start afresh
    assert _check_every_version(uri) >= 20
    assert shards.verify_dataset(uri).ok
    kept = versions(uri)[-5:]
    vacuum(uri, keep=5)  # a kept version whose statistics files a vacuumed one wrote still reads them
    assert [v.version for v in versions(uri)] == [v.version for v in kept]
    assert _check_every_version(uri) == 5 and shards.verify_dataset(uri).ok


@pytest.mark.parametrize("per_version", [1, 7])
def test_statistics_files_come_every_few_hundred_units_not_every_version(tmp_path, per_version):
    uri, root = str(tmp_path / "ds"), tmp_path / "ds"
    with shards.create_dataset(uri, HOOKS, commit_interval=1e9) as w:
        for v in range(300 // per_version):
            for u in range(v * per_version, (v + 1) * per_version):
                w.write_unit(u, unit_columns(u, 1))
            w.flush()
    written = len(list((root / "stats").glob("mlp.0.*.npz")))
    ds = shards.open_dataset(uri)
    assert ds.version >= 300 // per_version
    # a file per STATS_EVERY (256) units or per checkpoint (every 16-64 versions), not one per version
    assert written <= 2 + ds.version // 16, (written, ds.version)
    assert len(ds.manifest.stats_pending) < shards.writer.STATS_EVERY
    n, mean, _ = _recomputed(uri, ds.version, "mlp.0")
    assert ds.stats("mlp.0").count == n and np.allclose(ds.stats("mlp.0").mean, mean, rtol=1e-6, atol=1e-7)
