"""What the version-pinning tests share: a stimulus dataset with brain RDMs and responses, the changes a schedule
makes to a dataset while an analysis runs (append, drop-and-append as a re-extracting tick does, shrink), a
planner that makes them after planning (as the attack run did), and an exact comparison of two runs' results."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards

STIMULI, PER_UNIT, D = 30, 10, 8


def stimulus_dataset(path: str, seed: int = 0) -> None:
    """30 stimuli (one pooled row each) in 3 units, hooks ``a`` and ``b`` (``b`` a noisy rotation of ``a``)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((STIMULI, D))
    b = a @ np.linalg.qr(rng.standard_normal((D, D)))[0] + 0.3 * rng.standard_normal((STIMULI, D))
    spec = {"a": {"shape": [D], "dtype": "float32"}, "b": {"shape": [D], "dtype": "float32"}}
    with shards.create_dataset(path, spec, columns={"stimulus_id": "string"}) as w:
        for u in range(STIMULI // PER_UNIT):
            sl = slice(u * PER_UNIT, (u + 1) * PER_UNIT)
            w.write_unit(u, {"a": a[sl].astype(np.float32), "b": b[sl].astype(np.float32),
                             "example_id": np.arange(STIMULI)[sl].astype(np.int64),
                             "position": np.full(PER_UNIT, -1, np.int32),
                             "stimulus_id": np.array([f"s{i:02d}" for i in range(STIMULI)], object)[sl]})


def brain_and_responses(root: Path, seed: int = 1) -> tuple[str, str]:
    """Two subjects' RDMs over the 30 stimuli (.npy) and 5 response columns keyed by stimulus_id (.parquet)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, STIMULI, 4))
    rdms = np.sqrt(((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1))
    np.save(root / "brain.npy", rdms)
    ids = [f"s{i:02d}" for i in range(STIMULI)]
    resp = {"stimulus_id": ids, **{f"v{j}": rng.standard_normal(STIMULI) for j in range(5)}}
    pq.write_table(pa.table(resp), root / "responses.parquet")
    return str(root / "brain.npy"), str(root / "responses.parquet")


def _writer(path: str):
    ds = shards.open_dataset(path)
    spec = {h: {"shape": list(s.shape), "dtype": s.dtype} for h, s in ds.schema.hooks.items()}
    return ds, shards.create_dataset(path, spec, columns=dict(ds.schema.columns), mode="append")


def append(path: str) -> None:
    """One more unit: the first unit's ids moved past the last row, its activations replaced by large noise."""
    ds, w = _writer(path)
    n = ds.units[0].rows
    rows = ds.take(np.arange(n), hooks=[], columns=ds.columns)
    cols = {c: (v.numpy() if hasattr(v, "numpy") else np.asarray(v, dtype=object)) for c, v in rows.items()}
    cols["example_id"] = cols["example_id"] + int(ds.metadata_table(["example_id"]).column(0).to_numpy().max()) + 1
    rng = np.random.default_rng(99)
    for h, s in ds.schema.hooks.items():
        cols[h] = (rng.standard_normal((n, *s.shape)) * 50).astype(np.float32 if s.dtype == "float32" else s.dtype)
    with w:
        w.write_unit(max(u.id for u in ds.units) + 1, cols)


def drop_and_append(path: str) -> None:
    """What a ``--on-changed reextract`` tick does: a unit dropped, another appended."""
    ds, w = _writer(path)
    with w:
        w.drop_units([ds.units[0].id])
    append(path)


def shrink(path: str) -> None:
    """The last unit dropped: the dataset has fewer rows than when the run was planned."""
    ds, w = _writer(path)
    with w:
        w.drop_units([ds.units[-1].id])


CHANGES = {"append": append, "drop_and_append": drop_and_append, "shrink": shrink}


def frozen_copy(path: str, dest: Path) -> str:
    shutil.copytree(path, dest)
    return str(dest)


def change_after_planning(monkeypatch, module, name: str, change) -> list[int]:
    """Replace ``module.<name>`` (a ``HookAnalysis``) by one whose plan changes the dataset once planned; the list
    returned receives the version the plan saw."""
    analysis = getattr(module, name)
    seen: list[int] = []

    def plan(cfg, ds, hooks):
        out = analysis.plan(cfg, ds, hooks)
        seen.append(ds.version)
        change(cfg.data)
        return out

    monkeypatch.setattr(module, name, dataclasses.replace(analysis, plan=plan))
    return seen


IGNORED = {"out", "dataset", "dataset2", "seconds", "uri", "peak_state_bytes", "cost"}  # cost: timings differ per run


def assert_same(a, b, where: str = "") -> None:
    """Two results equal to 1e-12 (floats) and exactly otherwise, ignoring where they were written."""
    if isinstance(a, dict):
        assert set(a) - IGNORED == set(b) - IGNORED, where
        for k in a:
            if k not in IGNORED:
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not (isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-12), where
    else:
        assert a == b or (a != a and b != b), where


def recorded_version(out: str) -> int:
    return json.loads((Path(out) / "run.json").read_text())["dataset"]["version"]
