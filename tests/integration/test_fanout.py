"""Per-hook fan-out as Ray tasks on a real local Ray gives what the same function gives in this process."""

from __future__ import annotations

import numpy as np
import pytest

import shards
from analysis.common.fanout import map_hooks
from tests.helpers import write_dataset

pytestmark = pytest.mark.integration


def test_map_hooks_on_ray_equals_local(ray_local, tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), units=3, rows=40)
    uri = ds.uri

    def mean_norm(hook: str) -> float:  # runs in a Ray worker: opens the dataset there
        x = shards.open_dataset(uri).to_numpy(hook).astype(np.float64)
        return float(np.linalg.norm(x.reshape(len(x), -1), axis=1).mean())

    remote = map_hooks(mean_norm, ds.hooks, workers=2)
    assert list(remote) == ds.hooks and remote == map_hooks(mean_norm, ds.hooks)
    for hook, value in remote.items():
        assert value == pytest.approx(ds.stats(hook).mean_norm, rel=1e-6)  # the writer's statistics agree
