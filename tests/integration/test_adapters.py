"""Ray Data (real local Ray) and Hugging Face datasets views of a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import HOOKS, unit_columns, write_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ds_and_expected(tmp_path_factory):
    ds = write_dataset(str(tmp_path_factory.mktemp("adapt") / "ds"), units=3, rows=40)
    exp = [unit_columns(u, 40) for u in range(3)]
    return ds, {k: (torch.cat([e[k] for e in exp]).float().numpy() if isinstance(exp[0][k], torch.Tensor)
                    else np.concatenate([e[k] for e in exp])) for k in exp[0]}


def test_to_ray(ray_local, ds_and_expected):
    ds, exp = ds_and_expected
    rd = ds.to_ray()
    assert rd.count() == 120
    batch = rd.sort("example_id").take_batch(120, batch_format="numpy")
    np.testing.assert_array_equal(batch["example_id"], exp["example_id"])
    for name, spec in HOOKS.items():
        assert batch[name].shape == (120, *spec["shape"])  # a real (n, d) array, not an object array
        assert batch[name].dtype == (np.float16 if spec["dtype"] == "float16" else np.float32)
        np.testing.assert_array_equal(batch[name].astype(np.float32), exp[name])
    assert list(batch["label"]) == list(exp["label"])
    # and through Ray's own torch batches
    n = sum(len(b["resid.0"]) for b in ds.to_ray(hooks=["resid.0"], columns=["example_id"])
            .iter_torch_batches(batch_size=32))
    assert n == 120


def test_to_hf(ds_and_expected):
    ds, exp = ds_and_expected
    hf = ds.to_hf()
    assert len(hf) == 120
    assert hf.features["resid.0"].feature.dtype == "float16"
    np.testing.assert_array_equal(np.asarray(hf["example_id"]), exp["example_id"])
    t = hf.with_format("torch")
    for name in HOOKS:
        got = t[:][name].float().numpy().reshape(120, -1)
        np.testing.assert_array_equal(got, exp[name].reshape(120, -1))
    assert hf[5]["label"] == exp["label"][5]
