"""Analyses read exactly the version they record, with Ray tasks per hook (``--workers 2``): each task gets the
dataset pinned by the driver (it pickles with its version), so a dataset appended to, re-extracted or shrunk
after planning gives the results of one local process on a frozen copy."""

from __future__ import annotations

import pytest

import shards
from tests.unit.analysis.pinning import CHANGES, assert_same, change_after_planning, frozen_copy, recorded_version
from tests.unit.analysis.test_pinned_version import _cases

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("name", ["stats", "probe", "rsa", "encode"])
def test_ray_tasks_read_the_planned_version(ray_local, tmp_path, monkeypatch, name, change):
    module, attr, make, config = _cases(tmp_path)[name]
    data = str(tmp_path / "ds")
    make(data)
    planned = shards.open_dataset(data).version
    expected = module.run(config(frozen_copy(data, tmp_path / "frozen"), str(tmp_path / "expected")))
    change_after_planning(monkeypatch, module, attr, CHANGES[change])
    got = module.run(config(data, str(tmp_path / "out"), workers=2))
    assert shards.open_dataset(data).version > planned
    assert_same(expected.to_json(), got.to_json())
    assert recorded_version(str(tmp_path / "out")) == planned
