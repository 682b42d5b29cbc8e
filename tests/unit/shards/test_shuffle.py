"""Deterministic global shuffle, exact rank partition, resumable cursor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import shards

HOOKS = {"h": {"shape": [256], "dtype": "float32"}}  # 1 KiB rows: 63 rows per 64 KiB row group


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """7 units of uneven sizes with several row groups each (tiny row groups on purpose)."""
    uri = str(tmp_path_factory.mktemp("shuf") / "ds")
    sizes = [300, 123, 457, 50, 301, 222, 199]
    with shards.create_dataset(uri, HOOKS, row_group_bytes=1 << 16) as w:
        start = 0
        for u, n in enumerate(sizes):
            ids = np.arange(start, start + n)
            # the row's value encodes its id, so data and ids can be cross-checked
            w.write_unit(u, {"example_id": ids, "h": np.repeat(ids[:, None], 256, 1).astype(np.float32)})
            start += n
    d = shards.open_dataset(uri)
    assert d.num_rows == sum(sizes) and len(d.group_rows) > len(sizes)
    return d


def ids_of(it) -> list[int]:
    out = []
    for b in it:
        assert torch.equal(b["h"][:, 0].long(), b["example_id"])
        out += b["example_id"].tolist()
    return out


def test_unshuffled_is_dataset_order(ds):
    assert ids_of(ds.iter_batches(batch_size=100)) == list(range(ds.num_rows))


def test_same_seed_same_order_and_epochs_differ(ds):
    a = ids_of(ds.iter_batches(batch_size=64, shuffle=True, seed=3, epoch=0, shuffle_window=200))
    b = ids_of(ds.iter_batches(batch_size=64, shuffle=True, seed=3, epoch=0, shuffle_window=200))
    c = ids_of(ds.iter_batches(batch_size=64, shuffle=True, seed=3, epoch=1, shuffle_window=200))
    d = ids_of(ds.iter_batches(batch_size=64, shuffle=True, seed=4, epoch=0, shuffle_window=200))
    assert a == b
    assert a != c and a != d
    assert sorted(a) == sorted(c) == list(range(ds.num_rows))
    # it is a real shuffle: neighbours in the output are rarely neighbours in the data
    assert np.mean(np.abs(np.diff(a)) == 1) < 0.05


def test_same_order_in_a_fresh_process(ds):
    import subprocess
    import sys

    code = ("import shards,sys; ds=shards.open_dataset(sys.argv[1]); "
            "print(','.join(str(i) for b in ds.iter_batches(batch_size=50, shuffle=True, seed=9, epoch=2) "
            "for i in b['example_id'].tolist()))")
    out = subprocess.run([sys.executable, "-c", code, ds.uri], capture_output=True, text=True, check=True).stdout
    assert [int(x) for x in out.strip().split(",")] == ids_of(
        ds.iter_batches(batch_size=50, shuffle=True, seed=9, epoch=2))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_disjoint_and_cover(ds, world_size, shuffle):
    parts = [ids_of(ds.iter_batches(batch_size=37, shuffle=shuffle, seed=1, epoch=5, rank=r,
                                    world_size=world_size, shuffle_window=150))
             for r in range(world_size)]
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == ds.num_rows
    assert sorted(flat) == list(range(ds.num_rows))


def test_drop_last_gives_equal_full_batches(ds):
    counts = [len(list(ds.iter_batches(batch_size=100, shuffle=True, rank=r, world_size=3, drop_last=True)))
              for r in range(3)]
    assert counts == [ds.num_rows // 3 // 100] * 3
    for b in ds.iter_batches(batch_size=100, shuffle=True, rank=1, world_size=3, drop_last=True):
        assert len(b["example_id"]) == 100


@pytest.mark.parametrize("stop_after", [0, 1, 5, 11])
def test_cursor_resume_continues_identically(ds, stop_after):
    kw = dict(batch_size=64, shuffle=True, seed=7, epoch=3, rank=1, world_size=2, shuffle_window=300)
    full = [b["example_id"].tolist() for b in ds.iter_batches(**kw)]
    it = ds.iter_batches(**kw)
    seen = []
    if stop_after:
        for b in it:  # the cursor counts every batch handed out
            seen.append(b["example_id"].tolist())
            if len(seen) == stop_after:
                break
    cursor = it.cursor
    assert cursor.offset == 64 * stop_after and cursor.epoch == 3
    rest = [b["example_id"].tolist() for b in ds.iter_batches(**{**kw, "epoch": 0}, start=cursor)]
    assert seen + rest == full


def test_cursor_with_other_arguments_is_refused(ds):
    it = ds.iter_batches(batch_size=10, shuffle=True, seed=1)
    next(iter(it))
    with pytest.raises(ValueError, match="seed"):
        ds.iter_batches(batch_size=10, shuffle=True, seed=2, start=it.cursor)


def test_take_random_rows(ds):
    rows = np.array([5, 0, ds.num_rows - 1, 700, 5])
    got = ds.take(rows)
    assert got["example_id"].tolist() == rows.tolist()
    assert got["h"][:, 2].tolist() == rows.astype(float).tolist()
    with pytest.raises(IndexError):
        ds.take([ds.num_rows])


def test_page_cache_path_equals_arrow_path(tmp_path):
    """Local uncompressed tensors are read as views of the file's data pages (shards.pages);
    with several pages per row group and hooks paged differently, batches equal pyarrow's decoding."""
    uri = str(tmp_path / "paged")
    hooks = {"wide": {"shape": [4096], "dtype": "float16"}, "narrow": {"shape": [3], "dtype": "bfloat16"}}
    rng = np.random.default_rng(0)
    with shards.create_dataset(uri, hooks) as w:
        for u in range(2):
            w.write_unit(u, {"example_id": np.arange(u * 3000, (u + 1) * 3000),
                             "wide": rng.standard_normal((3000, 4096)).astype(np.float16),
                             "narrow": torch.randn(3000, 3).bfloat16()})
    ds = shards.open_dataset(uri)
    pages = ds._page_rows(0, "wide")
    assert pages is not None and len(pages) >= 3 and sum(len(p) for p in pages) == ds.group_rows[0]
    kw = dict(batch_size=500, shuffle=True, seed=3, shuffle_window=2500, dtype=None)
    fast = list(ds.iter_batches(**kw))
    slow_ds = shards.open_dataset(uri)
    slow_ds.zero_copy = False
    slow = list(slow_ds.iter_batches(**kw))
    assert len(fast) == len(slow) == 12
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a["example_id"], b["example_id"])
        assert torch.equal(a["wide"], b["wide"])
        assert torch.equal(a["narrow"].view(torch.int16), b["narrow"].view(torch.int16))
