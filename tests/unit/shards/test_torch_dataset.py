"""The torch IterableDataset wrapper under a real DataLoader with worker processes."""

from __future__ import annotations

import numpy as np

from tests.helpers import write_dataset


def test_torch_dataloader_workers(tmp_path):
    """The IterableDataset wrapper with DataLoader(num_workers=2): every row exactly once."""
    from torch.utils.data import DataLoader

    ds = write_dataset(str(tmp_path / "ds"), units=4, rows=60)
    tds = ds.torch_dataset(["resid.0"], batch_size=32, shuffle=True, seed=1)
    ids = []
    for batch in DataLoader(tds, batch_size=None, num_workers=2):
        assert batch["resid.0"].shape[1:] == (16,)
        ids += batch["example_id"].tolist()
    assert sorted(ids) == list(range(240))
    tds.set_epoch(1)
    ids1 = [i for b in DataLoader(tds, batch_size=None, num_workers=2) for i in b["example_id"].tolist()]
    assert sorted(ids1) == list(range(240)) and ids1 != ids
    np.testing.assert_array_equal(np.sort(ids1), np.arange(240))
